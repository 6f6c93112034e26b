"""Shared fixtures: paths to the real data (skipped when absent) and small generated samples."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HER2ST = SHARED_DATA / "her2st"
LYMPHOMA = SHARED_DATA / "lymphoma"
VISIUM_SMALL = SHARED_DATA / "visium_small" / "1.0.0"

# Spots per HER2ST section that have both a position and a count row.
HER2ST_SPOTS = {"A1": 346, "C2": 187, "C3": 180, "C4": 184, "C5": 181}


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (the shared data folder beside the repository; "
                    f"a fresh clone does not have it)")
    return path


@pytest.fixture(scope="session")
def her2st_root() -> Path:
    return _need(HER2ST, "HER2ST subset")


@pytest.fixture(scope="session")
def lymphoma_root() -> Path:
    return _need(LYMPHOMA, "lymphoma images (IICBU 2008 subset)")


@pytest.fixture(scope="session")
def visium_dir() -> Path:
    return _need(VISIUM_SMALL, "10x Visium fixture")


def he_like_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Pink tissue with purple dots, uint8 RGB."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (225, 150, 190)
    n = h * w // 150
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    img[ys, xs] = (70, 40, 120)
    return img


def write_st_sample(folder: Path, name: str = "S1", grid: int = 4, pitch: int = 100, margin: int = 100,
                    genes: tuple[str, ...] = ("G1", "G2", "G3", "G4", "G5"), seed: int = 0,
                    image_format: str = "png") -> dict:
    """A small legacy-ST sample in the HER2ST layout; returns the file paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    size = 2 * margin + (grid - 1) * pitch
    img = he_like_image(rng, size, size)
    image = folder / f"{name}.{image_format}"
    Image.fromarray(img).save(image)
    xs, ys = np.meshgrid(np.arange(grid), np.arange(grid))
    xs, ys = xs.ravel() + 1, ys.ravel() + 1
    spots = pd.DataFrame({"x": xs, "y": ys, "new_x": xs.astype(float), "new_y": ys.astype(float),
                          "pixel_x": margin + (xs - 1) * pitch + 0.4, "pixel_y": margin + (ys - 1) * pitch - 0.3,
                          "selected": 1})
    spots_path = folder / f"{name}_selection.tsv"
    spots.to_csv(spots_path, sep="\t", index=False)
    counts = pd.DataFrame(rng.poisson(5.0, (len(xs), len(genes))), columns=list(genes),
                          index=[f"{x}x{y}" for x, y in zip(xs, ys)])
    counts_path = folder / f"{name}.tsv.gz"
    with gzip.open(counts_path, "wt") as fh:
        counts.to_csv(fh, sep="\t")
    return {"image": image, "spots": spots_path, "counts": counts_path, "size": size, "pitch": pitch}


@pytest.fixture
def st_sample(tmp_path) -> dict:
    return write_st_sample(tmp_path / "sample")


ONE_THREAD_RULES = ("train", "train_extractor", "embed", "train_classifier")


def run_snakemake(workdir: Path, configfile: Path | None, *args: str, timeout: int = 1200,
                  one_thread: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir`` (outputs land there), returning the finished process.

    ``one_thread``: the training rules get one thread each (tests train tiny models, whose jobs are mostly
    interpreter start-up, so two cores run two jobs at once rather than one two-threaded job at a time);
    False leaves threads to the rules and any ``--profile`` in ``args``."""
    threads = ["--set-threads", *(f"{rule}=1" for rule in ONE_THREAD_RULES)] if one_thread else []
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
           *threads, "--show-failed-logs", *args]
    if configfile is not None:  # last: --configfile takes several values and would swallow targets
        cmd += ["--configfile", str(configfile)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def tiny_demo_run(tmp_path_factory):
    """The catalog's .test study run as make demo runs it (--logger histexpr), in a working directory whose
    config/config.yaml is .test's and whose other config/*.yaml are the repository's: ``(workdir, process)``.
    The folder beside it links to ../shared, so the docs' relative paths to shared data resolve there too."""
    base = tmp_path_factory.mktemp("tiny_demo")
    work = base / "main"
    (work / "config").mkdir(parents=True)
    for cfg in (REPO / "config").glob("*.yaml"):
        if cfg.name != "config.yaml":
            (work / "config" / cfg.name).symlink_to(cfg)
    shutil.copy(REPO / ".test" / "config" / "config.yaml", work / "config" / "config.yaml")
    (work / "profiles").symlink_to(REPO / "profiles")  # the docs run from the repository root
    if SHARED_DATA.exists():
        (base / "shared").symlink_to(SHARED_DATA.parent)
    res = run_snakemake(work, None, "--logger", "histexpr")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return work, res
