"""Attention sampling on a gigapixel whole-slide image: peak memory and seconds per image.

    python benchmarks/ats_wsi.py                         # 50 000 x 50 000 px, N = 5 and 20
    python benchmarks/ats_wsi.py --size 8000 --n 5       # a quick run

Writes a tiled, zlib-compressed pyramidal TIFF (OpenSlide's generic TIFF; levels
every 4x) of an H&E-like tissue disc on white background — generated tile by
tile, never held whole — then, in a fresh process for each N, classifies it
with the attention-sampling model through :class:`~histexpr.data.megapixel.SlideImage`:
the view from a low-resolution level, N patches from level 0. Prints a table
of peak resident memory (the whole process, Python and torch included, next to
the process's size once its libraries are loaded),
seconds per image (after one warm-up) and pixels read. The model's weights
are random unless ``--model`` names a trained ``model.pt``: memory and time do
not depend on them. No thresholds; the target is under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TILE, PERIOD = 512, 1024


def texture(seed: int = 0) -> np.ndarray:
    """A ``PERIOD``-px periodic H&E-like texture: pink stroma with purple nuclei (blurred random points)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    points = (rng.random((PERIOD, PERIOD)) < 0.003).astype(np.float32)
    nuclei = ndimage.gaussian_filter(points, 3.0, mode="wrap") > 0.004
    img = np.empty((PERIOD, PERIOD, 3), np.uint8)
    img[:] = (225, 160, 195)
    img[nuclei] = (80, 50, 130)
    return img


def level_tiles(tex: np.ndarray, size: int, down: int, radius: float = 0.4):
    """The tiles of the pyramid level ``down``x smaller, row by row (tissue disc of radius ``radius``·size)."""
    t = tex.reshape(PERIOD // down, down, PERIOD // down, down, 3).mean((1, 3)).astype(np.uint8) if down > 1 else tex
    period = t.shape[0]
    side = -(-size // down)
    for ty in range(0, side, TILE):
        for tx in range(0, side, TILE):
            yy, xx = np.mgrid[ty:ty + TILE, tx:tx + TILE]
            tile = t[yy % period, xx % period]
            inside = ((yy * down - size / 2) ** 2 + (xx * down - size / 2) ** 2) < (radius * size) ** 2
            yield np.where(inside[..., None], tile, np.uint8(255))


def write_slide(path: str, size: int, radius: float = 0.4) -> None:
    import tifffile

    tex = texture()
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        down = 1
        while True:
            side = -(-size // down)
            opts = dict(tile=(TILE, TILE), photometric="rgb", compression="zlib", compressionargs={"level": 1}, dtype=np.uint8,
                        shape=(side, side, 3))
            tw.write(level_tiles(tex, size, down, radius), subfiletype=1 if down > 1 else 0, **opts)
            if side <= 512 or PERIOD // (down * 4) < 1:
                break
            down *= 4


def infer(path: str, n: int, patch: int, view_px: int, model_path: str | None) -> dict:
    import torch

    from histexpr.data.megapixel import SlideImage
    from histexpr.models.ats import AttentionSampling
    from histexpr.train.classify import classify_image, load_classifier

    torch.set_num_threads(1)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Python + torch + openslide loaded
    if model_path:
        model, classes, _ = load_classifier(model_path)
        model.n = n
    else:
        torch.manual_seed(0)
        model, classes = AttentionSampling(3, n, patch).eval(), ["A", "B", "C"]
    slide = SlideImage(path)
    scale = view_px / max(slide.width, slide.height)
    classify_image(model, slide, classes, scale, torch.Generator().manual_seed(0))  # warm-up
    runs, t0 = 5, time.perf_counter()
    for i in range(runs):
        out = classify_image(model, slide, classes, scale, torch.Generator().manual_seed(i + 1))
    seconds = (time.perf_counter() - t0) / runs
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"N": n, "patch_px": model.patch_px, "image": f"{slide.width}x{slide.height}",
            "view": "x".join(map(str, out["attention"].shape)), "seconds_per_image": round(seconds, 4),
            "pixels_read_per_image": int(out["pixels_read"]), "rss_after_imports_MB": round(base_mb, 1),
            "peak_rss_MB": round(peak_mb, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=50_000, help="side of the square slide, px")
    ap.add_argument("--n", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--view-px", type=int, default=256, help="longer side of the attention view")
    ap.add_argument("--model", help="a trained model.pt (default: random weights)")
    ap.add_argument("--slide", help="use this slide instead of generating one")
    ap.add_argument("--infer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.infer:
        print(json.dumps(infer(args.slide, args.n[0], args.patch, args.view_px, args.model)))
        return
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        slide = args.slide
        if not slide:
            slide = os.path.join(tmp, "slide.tif")
            t0 = time.perf_counter()
            write_slide(slide, args.size)
            print(f"wrote a {args.size} x {args.size} pyramidal TIFF ({os.path.getsize(slide) / 1e9:.2f} GB) "
                  f"in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = []
        for n in args.n:  # a fresh process each, so peak memory is this N's alone
            cmd = [sys.executable, __file__, "--infer", "--slide", slide, "--n", str(n), "--patch", str(args.patch),
                   "--view-px", str(args.view_px)] + (["--model", args.model] if args.model else [])
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
