"""Bad input gives one clear error naming the file, before any expensive work."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake, write_st_sample

from histexpr.config import validate
from histexpr.data.expression import common_genes, read_gene_list, select_genes
from histexpr.data.tiling import check_spots_on_image
from histexpr.errors import ConfigError, InputError
from histexpr.io import load_sample_sheet, open_image, read_st_sample

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SHEET_SCHEMA = REPO / "workflow" / "schemas" / "samples.schema.yaml"


def sheet_for(sample: dict, folder: Path, **extra) -> Path:
    path = folder / "samples.tsv"
    row = {"sample": "S1", "patient": "P1", "image": str(sample["image"]), "counts": str(sample["counts"]),
           "spots": str(sample["spots"]), **extra}
    pd.DataFrame([row]).to_csv(path, sep="\t", index=False)
    return path


def test_missing_files_are_named(st_sample, tmp_path):
    st_sample["counts"].unlink()
    sheet = sheet_for(st_sample, tmp_path)
    with pytest.raises(InputError, match="counts file .*S1.tsv.gz not found") as err:
        load_sample_sheet(sheet, schema=SHEET_SCHEMA)
    assert err.value.path == str(sheet)
    with pytest.raises(InputError, match="counts file not found") as err:
        read_st_sample(st_sample["counts"], st_sample["spots"])
    assert err.value.path == str(st_sample["counts"])
    with pytest.raises(InputError, match="image file not found"):
        open_image(tmp_path / "nope.tif")
    with pytest.raises(InputError, match="sample sheet not found"):
        load_sample_sheet(tmp_path / "absent.tsv")


def test_spot_ids_that_do_not_join(st_sample):
    counts = pd.read_csv(st_sample["counts"], sep="\t", index_col=0)
    counts.index = [f"r{i}" for i in range(len(counts))]
    with gzip.open(st_sample["counts"], "wt") as fh:
        counts.to_csv(fh, sep="\t")
    with pytest.raises(InputError, match="no count row id matches a spot in .*S1_selection.tsv") as err:
        read_st_sample(st_sample["counts"], st_sample["spots"])
    assert err.value.path == str(st_sample["counts"])


def test_spots_off_the_image(st_sample):
    adata = read_st_sample(st_sample["counts"], st_sample["spots"], pixel_scale=3.0)  # wrong scale
    with open_image(st_sample["image"]) as slide:
        with pytest.raises(InputError, match=r"spot centre\(s\) lie outside the .* image") as err:
            check_spots_on_image(adata.obsm["spatial"], slide.width, slide.height, str(st_sample["spots"]),
                                 str(st_sample["image"]))
    assert err.value.path == str(st_sample["spots"]) and str(st_sample["image"]) in str(err.value)


def test_nan_counts(st_sample):
    text = gzip.open(st_sample["counts"], "rt").read().splitlines()
    cells = text[2].split("\t")
    cells[3] = ""
    text[2] = "\t".join(cells)
    with gzip.open(st_sample["counts"], "wt") as fh:
        fh.write("\n".join(text) + "\n")
    with pytest.raises(InputError, match=r"1 missing \(NaN\) or non-numeric count") as err:
        read_st_sample(st_sample["counts"], st_sample["spots"])
    assert err.value.path == str(st_sample["counts"])


def test_empty_gene_overlap(tmp_path):
    a = write_st_sample(tmp_path / "a", "A", genes=("G1", "G2"))
    b = write_st_sample(tmp_path / "b", "B", genes=("H1", "H2"))
    adatas = {"A": read_st_sample(a["counts"], a["spots"]), "B": read_st_sample(b["counts"], b["spots"])}
    with pytest.raises(InputError, match="no gene is measured in every sample") as err:
        common_genes(adatas, {"A": str(a["counts"]), "B": str(b["counts"])})
    assert err.value.path == str(a["counts"]) and str(b["counts"]) in str(err.value)
    genes_file = tmp_path / "genes.txt"
    genes_file.write_text("ERBB2\nGRB7\n")
    with pytest.raises(InputError, match="none of the 2 listed genes") as err:
        select_genes(np.ones((3, 2)), ["G1", "G2"], None, read_gene_list(genes_file), str(genes_file))
    assert err.value.path == str(genes_file)


def test_corrupt_images(st_sample, tmp_path):
    jpg = tmp_path / "cut.jpg"
    from PIL import Image

    Image.open(st_sample["image"]).convert("RGB").save(jpg, quality=90)
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="cannot decode image data") as err:
        open_image(jpg, check_decode=True)
    assert err.value.path == str(jpg)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not a readable image") as err:
        open_image(junk)
    assert err.value.path == str(junk)


def test_unknown_config_key_names_file_and_key():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["tilling"] = {"window_um": 100}
    with pytest.raises(ConfigError, match=r"my.yaml: unknown key 'tilling' in \(top level\)"):
        validate(cfg, SCHEMA, "my.yaml")
    cfg.pop("tilling")
    cfg["tiling"]["window_microns"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'window_microns' in tiling; allowed keys: .*\bwindow_um\b"):
        validate(cfg, SCHEMA, "my.yaml")
    cfg["tiling"].pop("window_microns")
    cfg["folds"]["level"] = "slide"
    with pytest.raises(ConfigError, match="folds.level: 'slide' is not one of"):
        validate(cfg, SCHEMA, "my.yaml")


def test_sample_sheet_schema_errors(st_sample, tmp_path):
    with pytest.raises(InputError, match="unknown column"):
        load_sample_sheet(sheet_for(st_sample, tmp_path, slide="x"), schema=SHEET_SCHEMA)
    with pytest.raises(ConfigError, match="row 1 .*um_per_px"):
        load_sample_sheet(sheet_for(st_sample, tmp_path, um_per_px=-2), schema=SHEET_SCHEMA)
    with pytest.raises(ConfigError, match="row 1 .*format"):
        load_sample_sheet(sheet_for(st_sample, tmp_path, format="merfish"), schema=SHEET_SCHEMA)


@pytest.mark.workflow
def test_workflow_reports_bad_config_and_bad_spots(tmp_path):
    # an unknown config key stops the workflow at parse time, naming the file and the key
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\nsamples: s.tsv\nmodel: [vit]\n")
    res = run_snakemake(tmp_path, bad, "-n")
    assert res.returncode != 0
    assert f"{bad}: unknown key 'model' in (top level)" in res.stdout + res.stderr
    # spots that fall off their image fail the tile job with the spot file named, before any tiling
    samples = [write_st_sample(tmp_path / f"s{i}", f"S{i}", seed=i) for i in range(2)]
    spots = pd.read_csv(samples[1]["spots"], sep="\t")
    spots["pixel_x"] += 5000
    spots.to_csv(samples[1]["spots"], sep="\t", index=False)
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame([{"sample": f"S{i}", "patient": f"P{i}", "image": str(s["image"]), "counts": str(s["counts"]),
                   "spots": str(s["spots"])} for i, s in enumerate(samples)]).to_csv(sheet, sep="\t", index=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"study": "bad", "samples": str(sheet), "tiling": {"window_px": 32}}))
    res = run_snakemake(tmp_path, cfg, "results/bad/tiles/S1.npy")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert f"{samples[1]['spots']}: 16 of 16 spot centre(s) lie outside the" in out
    assert not (tmp_path / "results/bad/tiles/S1.npy").exists()


def test_command_line_values_arrive_as_strings_and_are_typed_by_the_schema():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["train"]["epochs"], cfg["train"]["lr"], cfg["train"]["augment"] = "2", "0.01", "false"  # as --config passes them
    out = validate(cfg, SCHEMA, "config/config.yaml", overrides={"train": {}})
    assert (out["train"]["epochs"], out["train"]["lr"], out["train"]["augment"]) == (2, 0.01, False)
    cfg["train"]["epochs"] = "two"
    with pytest.raises(ConfigError, match=r"^--config train=...: train.epochs: 'two' is not of type 'integer'"):
        validate(cfg, SCHEMA, "config/config.yaml", overrides={"train": {}})
    with pytest.raises(ConfigError, match=r"^config/config.yaml: train.epochs"):  # from a file: the file is named
        validate(cfg, SCHEMA, "config/config.yaml")


@pytest.mark.workflow
def test_config_overrides_and_a_partial_configfile_on_the_defaults(tmp_path):
    res = run_snakemake(tmp_path, None, "-n", "--config", "train={epochs: 2}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "make_demo" in res.stdout  # the default (demo) config, found from another working directory
    samples = [write_st_sample(tmp_path / f"s{i}", f"S{i}", seed=i) for i in range(2)]
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame([{"sample": f"S{i}", "patient": f"P{i}", "image": str(s["image"]), "counts": str(s["counts"]),
                   "spots": str(s["spots"])} for i, s in enumerate(samples)]).to_csv(sheet, sep="\t", index=False)
    partial = tmp_path / "mine.yaml"
    partial.write_text(yaml.safe_dump({"study": "mine", "samples": str(sheet), "models": ["knn"]}))
    res = run_snakemake(tmp_path, partial, "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sample_sheet" in res.stdout and "make_demo" not in res.stdout
    # a study whose sheet sits where the demo's does, without a demo: section, reads it and never redraws it
    demo_sheet = tmp_path / "resources" / "demo" / "samples.tsv"
    demo_sheet.parent.mkdir(parents=True)
    shutil.copy(sheet, demo_sheet)
    partial.write_text(yaml.safe_dump({"study": "mine", "samples": "resources/demo/samples.tsv", "models": ["knn"]}))
    res = run_snakemake(tmp_path, partial, "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "make_demo" not in res.stdout and "results/mine/tiles/S1.npy" in res.stdout, res.stdout[-3000:]


@pytest.mark.workflow
def test_a_classification_study_without_its_images_stops_in_one_line_saying_where_they_come_from(tmp_path):
    res = run_snakemake(tmp_path, REPO / "config" / "lymphoma.yaml", "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    lines = [ln for ln in out.splitlines() if "histexpr error" in ln]
    assert len(lines) == 1 and "images: resources/lymphoma not found" in lines[0], out[-2000:]
    assert "IICBU 2008" in lines[0] and "--config 'images={root: /path/to/images}'" in lines[0]
    assert "MissingInputException" not in out
