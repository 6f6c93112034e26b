"""Inputs that used to be accepted silently or stop unclearly: each is refused with one line naming the file
(and row, key or cell), or read correctly."""

import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake, write_st_sample
from PIL import Image

from histexpr.config import check_yaml_file, validate
from histexpr.data.section import tile_section
from histexpr.data.tiling import SPOT_PITCH_UM
from histexpr.errors import ConfigError, InputError
from histexpr.io import load_sample_sheet, read_st_sample
from histexpr.io.audit import audit_image_sheet, audit_sample_sheet
from histexpr.io.visium import read_scalefactors, visium_image

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SHEET_SCHEMA = REPO / "workflow" / "schemas" / "samples.schema.yaml"
TILING = {"window_um": 60.0, "window_px": 16, "min_tissue": 0.0, "spot_pitch_um": dict(SPOT_PITCH_UM),
          "thumbnail_px": 400, "min_spots_on_tissue": 0.75}


def _row(s: dict, **extra) -> dict:
    return {"sample": "S1", "patient": "P1", "image": str(s["image"]), "counts": str(s["counts"]),
            "spots": str(s["spots"]), "format": "st", "platform": None, "um_per_px": 1.0, "pixel_scale": 1.0,
            **extra}


def _write_sheet(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


# --- accepted silently before ---------------------------------------------------------------------------------

def test_a_slide_key_that_leaves_results_is_refused_naming_the_key():
    cfg = {"study": "x", "samples": "a.tsv", "predict": {"slides": {"../../../x": {"image": "a.tif"}}}}
    with pytest.raises(ConfigError, match=r"my.yaml: predict.slides: '../../../x' is not a slide name") as err:
        validate(cfg, SCHEMA, "my.yaml")
    assert err.value.path == "my.yaml"
    cfg["predict"]["slides"] = {"C3_new": {"image": "a.tif"}}
    assert validate(cfg, SCHEMA, "my.yaml")["predict"]["slides"]["C3_new"]["image"] == "a.tif"


def test_an_image_listed_twice_in_an_image_sheet_is_refused_naming_both_rows(lymphoma_root, tmp_path):
    images = sorted((lymphoma_root / "CLL").glob("*"))[:2] + sorted((lymphoma_root / "FL").glob("*"))[:2]
    copy = tmp_path / "copy_of_first.png"
    shutil.copy(images[0], copy)  # another path, the same content
    sheet = pd.DataFrame({"image": [str(p) for p in images] + [str(copy)],
                          "label": ["CLL", "CLL", "FL", "FL", "FL"]})
    with pytest.raises(InputError, match=r"row 1 \(.*, label CLL\), row 5 \(.*copy_of_first.png, label FL\) are "
                                         r"the same image") as err:
        audit_image_sheet(sheet, "images.tsv")
    assert err.value.path == "images.tsv"
    audit_image_sheet(sheet.iloc[:4], "images.tsv")


def test_a_count_too_large_for_any_sequencer_is_refused_before_any_cast(st_sample):
    counts = pd.read_csv(st_sample["counts"], sep="\t", index_col=0).astype(float)
    counts.loc["2x3", "G4"] = 1e40  # finite in float64, inf in the float32 store
    with gzip.open(st_sample["counts"], "wt") as fh:
        counts.to_csv(fh, sep="\t")
    with pytest.raises(InputError, match=r"1 count\(s\) above 2,147,483,647, e.g. spot 2x3, gene G4: 1e\+40") as err:
        read_st_sample(st_sample["counts"], st_sample["spots"])
    assert err.value.path == str(st_sample["counts"])


def test_one_section_under_two_sample_ids_is_refused_naming_the_rows(tmp_path):
    s = write_st_sample(tmp_path / "a", "A")
    twin = tmp_path / "b"
    twin.mkdir()
    for key in ("image", "counts", "spots"):
        shutil.copy(s[key], twin / Path(s[key]).name)
    rows = [_row(s, sample="A", patient="P1"),
            {**_row(s, sample="B", patient="P2"), **{k: str(twin / Path(s[k]).name) for k in ("image", "counts", "spots")}}]
    sheet = load_sample_sheet(_write_sheet(tmp_path / "samples.tsv", rows), schema=SHEET_SCHEMA)
    with pytest.raises(InputError, match=r"row 1 \(A\), row 2 \(B\) have identical count files") as err:
        audit_sample_sheet(sheet, "samples.tsv")
    assert err.value.path == "samples.tsv"
    # the same image under two patients (distinct counts) is refused too; under one patient it is a note
    other = write_st_sample(tmp_path / "c", "C", seed=5)
    rows[1]["counts"], rows[1]["spots"] = str(other["counts"]), str(other["spots"])
    sheet = load_sample_sheet(_write_sheet(tmp_path / "samples.tsv", rows), schema=SHEET_SCHEMA)
    with pytest.raises(InputError, match=r"share one image .* under different patients"):
        audit_sample_sheet(sheet, "samples.tsv")
    sheet["patient"] = "P1"
    assert "share one image (several sections of one slide)" in audit_sample_sheet(sheet, "samples.tsv")[0]


def test_a_section_whose_counts_are_all_zero_is_refused(st_sample):
    counts = pd.read_csv(st_sample["counts"], sep="\t", index_col=0) * 0
    with gzip.open(st_sample["counts"], "wt") as fh:
        counts.to_csv(fh, sep="\t")
    with pytest.raises(InputError, match=r"every count of the 16 placed spot\(s\) is 0") as err:
        tile_section(_row(st_sample), TILING)
    assert err.value.path == str(st_sample["counts"])


# --- stopped, but unclearly, before ---------------------------------------------------------------------------

def test_sheet_values_that_stop_with_one_line_naming_the_sheet_and_row(st_sample, tmp_path):
    sheet = tmp_path / "samples.tsv"
    cases = [({"sample": "s" * 300}, r"row 1 \(sample 's{20,}\.\.\. \(300 characters\)\): sample: .* \(at most 100"),
             ({"um_per_px": "inf"}, r"row 1 \(sample 'S1'\): column 'um_per_px' must be a finite number, got 'inf'")]
    for change, says in cases:
        _write_sheet(sheet, [{**_row(st_sample), **change}])
        with pytest.raises(InputError, match=says) as err:
            load_sample_sheet(sheet, schema=SHEET_SCHEMA)
        assert err.value.path == str(sheet)


def test_na_ids_and_trailing_tabs_are_read_as_written(st_sample, tmp_path):
    sheet = tmp_path / "samples.tsv"
    row = _row(st_sample, sample="NA", patient="NA")
    cols = ["sample", "patient", "image", "counts", "spots"]
    sheet.write_text("\t".join(cols) + "\n" + "\t".join(str(row[c]) for c in cols) + "\t\t\n")  # trailing tabs
    table = load_sample_sheet(sheet, schema=SHEET_SCHEMA)
    assert table["sample"].tolist() == ["NA"] and table["patient"].tolist() == ["NA"]
    assert table["image"].tolist() == [row["image"]]
    # a spreadsheet's byte-order mark and CRLF line ends, and a comment after the last cell
    sheet.write_text("\ufeff" + "\t".join(cols) + "\r\n" + "\t".join(str(row[c]) for c in cols) + "\t# ok\r\n",
                     encoding="utf-8")
    assert load_sample_sheet(sheet, schema=SHEET_SCHEMA)["sample"].tolist() == ["NA"]
    sheet.write_text("\t".join(cols) + "\n" + "\t".join(str(row[c]) for c in cols) + "\textra\n")
    with pytest.raises(InputError, match=r"line 2 has 6 cells but the header names 5 columns") as err:
        load_sample_sheet(sheet, schema=SHEET_SCHEMA)
    assert err.value.path == str(sheet)


def test_count_and_spot_files_that_stop_with_one_line_naming_the_file(st_sample):
    text = gzip.open(st_sample["counts"], "rt").read().splitlines()
    header = text[0].split("\t")
    short = ["\t".join(header[:-1])] + text[1:]  # a header one gene short
    with gzip.open(st_sample["counts"], "wt") as fh:
        fh.write("\n".join(short) + "\n")
    with pytest.raises(InputError, match=r"the header names 4 gene\(s\) but the rows hold 5 count column\(s\)") as e:
        read_st_sample(st_sample["counts"], st_sample["spots"])
    assert e.value.path == str(st_sample["counts"])
    spots = Path(st_sample["spots"])
    spots.write_text(spots.read_text().splitlines()[0] + "\n")
    with pytest.raises(InputError, match=r"spot table has a header but no rows") as e:
        read_st_sample(st_sample["counts"], st_sample["spots"])
    assert e.value.path == str(spots)


def test_an_exif_rotated_jpeg_that_fails_placement_says_so(tmp_path):
    s = write_st_sample(tmp_path / "s", "S1", grid=6, image_format="jpg")
    img = Image.open(s["image"])
    w, h = img.size
    # tissue only on the left third: spots on the right two thirds are off tissue
    arr = np.asarray(img).copy()
    arr[:, w // 3:] = 245
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees clockwise
    Image.fromarray(arr).save(s["image"], exif=exif.tobytes(), quality=95)
    with pytest.raises(InputError, match=r"carries EXIF orientation 6 \(turned 90 degrees clockwise for display\): "
                                         r"histexpr reads the pixels as stored") as err:
        tile_section(_row(s), TILING)
    assert err.value.path == str(s["spots"])


def test_visium_scale_factors_that_are_not_positive_numbers(visium_dir, tmp_path):
    d = tmp_path / "v"
    shutil.copytree(visium_dir, d)
    sf_path = d / "spatial" / "scalefactors_json.json"
    sf = json.loads(sf_path.read_text())
    spots = next((d / "spatial").glob("tissue_positions*"))
    for bad in ("0.045", 0):
        sf["tissue_lowres_scalef"] = bad
        sf_path.write_text(json.dumps(sf))
        with pytest.raises(InputError, match=rf"tissue_lowres_scalef is {bad!r}: it must be a positive number") as e:
            visium_image(spots)
        assert e.value.path == str(sf_path)
    sf["spot_diameter_fullres"] = "89.4"
    sf_path.write_text(json.dumps(sf))
    with pytest.raises(InputError, match=r"spot_diameter_fullres is '89.4': it must be a positive number"):
        read_scalefactors(sf_path)
    sf_path.write_text(json.dumps([sf]))  # a list of objects (a hand-edited or merged file)
    with pytest.raises(InputError, match=r"scalefactors_json.json must be a JSON object, found a list"):
        read_scalefactors(sf_path)


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("study: x\nsamples: a.tsv\ntiling:\n  window_px: 32\n  window_um: 100\n  window_px: 64\n")
    with pytest.raises(ConfigError, match=r"my.yaml: key 'window_px' appears twice in one section \(lines 4 and 6\)"):
        check_yaml_file(cfg)
    res = run_snakemake(tmp_path, cfg, "-n")
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("histexpr error:")]
    assert res.returncode != 0 and len(lines) == 1 and "appears twice" in lines[0]


def test_an_empty_label_cell_names_the_sheet_and_line(lymphoma_root, tmp_path):
    from histexpr.data.megapixel import read_image_sheet

    images = sorted((lymphoma_root / "CLL").glob("*"))[:2] + sorted((lymphoma_root / "FL").glob("*"))[:2]
    sheet = tmp_path / "images.tsv"
    pd.DataFrame({"image": [str(p) for p in images], "label": ["CLL", "", "FL", "FL"]}).to_csv(
        sheet, sep="\t", index=False)
    with pytest.raises(InputError, match=r"1 row\(s\) have no label, first at line 3") as err:
        read_image_sheet(sheet)
    assert err.value.path == str(sheet)


# --- config on the command line, and key order ----------------------------------------------------------------

def test_union_typed_keys_from_the_command_line_and_key_order_that_replans_nothing(tmp_path):
    res = run_snakemake(tmp_path, None, "-n", "--config", "folds={k: 3}", "models=[knn, vit]")
    assert res.returncode == 0, res.stdout[-2000:]
    assert len(res.stdout.split("rule folds:")) == 2 and "fold_3" in res.stdout and "fold_4" not in res.stdout
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["tiling"] = dict(reversed(list(cfg["tiling"].items())))
    assert list(cfg["tiling"])[0] != "window_um"
    assert validate(cfg, SCHEMA, "c") == validate(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                                                   SCHEMA, "c")
    from histexpr.config import workflow_config

    a = workflow_config(cfg, SCHEMA, [])
    b = workflow_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), SCHEMA, [])
    assert repr(a) == repr(b)  # the same params, in the same order, whatever order the file lists them


# --- places the run cannot write ------------------------------------------------------------------------------

WRITER = """
import resource, signal, sys
import anndata as ad, numpy as np
from histexpr.utils import setup_logging, write_h5ad
setup_logging(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit fails with an error, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
write_h5ad(ad.AnnData(np.random.default_rng(0).random((2000, 500), dtype=np.float32)), sys.argv[1])
"""


def test_a_write_that_runs_out_of_room_is_one_line_naming_the_output_and_leaves_no_temporary(tmp_path):
    import subprocess
    import sys

    out, log = tmp_path / "tiles" / "S1.h5ad", tmp_path / "tile.log"
    res = subprocess.run([sys.executable, "-c", WRITER, str(out), str(log)], capture_output=True, text=True,
                         cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": ""}, timeout=300)
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and re.fullmatch(
        rf"histexpr error: {re.escape(str(out))}: cannot write: file too large for this file system or process "
        r"limit \([\d,]+ MiB free there\); free space, or run where there is room \(snakemake --directory DIR\)",
        errors[0]), res.stderr
    assert "errno = 27" in log.read_text()  # the writer's own traceback is kept in the log
    assert list(out.parent.iterdir()) == []  # no .tmp.h5ad left behind


def _read_only(folder: Path) -> bool:
    """Make ``folder`` read-only for this process: a read-only mount where root may mount, else chmod (which
    root ignores). False when neither holds."""
    import os
    import subprocess

    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                        capture_output=True).returncode == 0
    return ok


def test_a_read_only_results_folder_stops_before_the_first_job_in_one_line(tmp_path):
    import subprocess

    results = tmp_path / "results"
    if not _read_only(results):
        pytest.skip("needs a non-root user, or root allowed to mount (to make a folder read-only)")
    try:
        res = run_snakemake(tmp_path, None, "--config", "models=[knn]")
    finally:
        subprocess.run(["umount", str(results)], capture_output=True)
        results.chmod(0o755)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if "histexpr error" in line]
    assert lines == ["histexpr error: results/demo/: cannot write: read-only file system; make the folder "
                     "writable, or run in one that is (snakemake --directory DIR)"] or (
        lines == ["histexpr error: results/demo/: cannot write: permission denied; make the folder writable, "
                  "or run in one that is (snakemake --directory DIR)"]), res.stderr[-2000:]
    assert "Finished jobid" not in res.stderr  # not even make_demo ran first
    assert not (tmp_path / "resources").exists()
