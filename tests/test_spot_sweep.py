"""The spot-size sweep (tiling.spot_sweep): a two-patient Visium HD study run end to end at two pseudo-spot sizes,
each size its own study, then one table and one figure of per-section PCC@M against spot size."""

import pandas as pd
import pytest
import yaml
from conftest import HER2ST, HER2ST_SPOTS, run_snakemake
from hd_fixtures import write_hd_study

from histexpr.metrics import spot_sweep_table

SWEEP_CONFIG = {
    "study": "hd",
    "tiling": {"window_um": 112, "window_px": 32, "spot_sweep": [104, 200]},
    "expression": {"top_n": 60, "protocols": ["raw"]},
    "folds": {"level": "patient", "k": "loo"},
    "extractor": {"kind": "stylegan", "input_px": 16, "dim": 16, "width": 8, "cap": 32, "epochs": 1,
                  "batch_size": 32},
    "models": ["knn"],
    "train": {"epochs": 1, "batch_size": 32},
}


def _section_table(sections, models=("colour_ridge", "knn")):
    return pd.DataFrame([{"model": m, "protocol": "raw", "fold": i + 1, "section": s, "n_windows": 10,
                          "PCC@M": 0.1 * (i + 1)} for i, s in enumerate(sections) for m in models])


def test_the_sweep_table_stacks_each_spot_size_and_refuses_points_with_different_sections():
    table = spot_sweep_table({200.0: _section_table(["A1", "C2"]), 56.0: _section_table(["A1", "C2"])})
    assert list(table.columns[:4]) == ["spot_um", "protocol", "section", "model"]
    assert len(table) == 8 and sorted(table["spot_um"].unique()) == [56.0, 200.0]
    assert list(table["spot_um"][:2]) == [56.0, 200.0]  # each (section, model) reads left to right by spot size
    with pytest.raises(ValueError, match="different test sections"):
        spot_sweep_table({200.0: _section_table(["A1", "C2"]), 56.0: _section_table(["A1"])})


@pytest.mark.skipif(not HER2ST.exists(), reason="needs ../shared/data/her2st (HER2ST A1 and C2)")
def test_a_spot_sweep_over_a_sheet_without_pooled_formats_stops_at_parse_time(tmp_path):
    from histexpr.io.sheet import build_her2st_sheet

    sheet = tmp_path / "samples.tsv"
    build_her2st_sheet(HER2ST).head(2).to_csv(sheet, sep="\t", index=False)  # legacy ST: nothing to pool
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({**SWEEP_CONFIG, "samples": str(sheet)}))
    res = run_snakemake(tmp_path, cfg, "-n")
    assert res.returncode != 0
    assert "histexpr error: tiling.spot_sweep needs samples of format visium_hd or xenium" in res.stdout + res.stderr


@pytest.mark.skipif(not HER2ST.exists(), reason="needs ../shared/data/her2st (HER2ST C2)")
def test_a_sweep_size_that_is_not_a_whole_number_of_bins_is_named_at_parse_time(tmp_path):
    sheet = write_hd_study(HER2ST, tmp_path / "data", sections=("C2",))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({**SWEEP_CONFIG, "samples": str(sheet),
                                   "tiling": {**SWEEP_CONFIG["tiling"], "spot_sweep": [56, 60, 100]}}))
    res = run_snakemake(tmp_path, cfg, "-n")
    assert res.returncode != 0
    assert "histexpr error: tiling.spot_sweep: 60, 100 um is not a whole multiple of tiling.bin_um (8)" in res.stdout + res.stderr


@pytest.mark.skipif(not HER2ST.exists(), reason="needs ../shared/data/her2st (HER2ST A1 and C2)")
def test_a_two_patient_visium_hd_study_runs_at_two_spot_sizes_into_one_table_and_figure(tmp_path):
    """A1 (patient A) and C2 (patient C) as Visium HD outputs whose 8 um bins sum to the real ST counts at 200 um;
    leave-one-patient-out at 104 um (13 x 13 bins) and 200 um (25 x 25 bins, the ST spots themselves)."""
    sheet = write_hd_study(HER2ST, tmp_path / "data", sections=("A1", "C2"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({**SWEEP_CONFIG, "samples": str(sheet)}))
    res = run_snakemake(tmp_path, cfg)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    out = tmp_path / "results" / "hd"
    table = pd.read_csv(out / "spot_sweep.tsv", sep="\t")
    assert sorted(table["spot_um"].unique()) == [104.0, 200.0]
    # every section at every size, with the floor and the depth oracle beside the trained model
    assert set(table["model"]) == {"colour_ridge", "depth_oracle", "knn"}
    assert all(sorted(g) == ["A1", "C2"] for _, g in table.groupby(["spot_um", "model"])["section"])
    assert table["PCC@M"].notna().all()
    # each point is the whole study at that size; the table holds its per-section rows as written
    for spot in (104, 200):
        point = pd.read_csv(out / f"spot_{spot}um" / "metrics_by_section.tsv", sep="\t")
        rows = table[table["spot_um"] == spot].merge(point, on=["model", "protocol", "section"])
        assert len(rows) == len(point) and (rows["PCC@M_x"] == rows["PCC@M_y"]).all()
    windows = table[table["model"] == "knn"].set_index(["spot_um", "section"])["n_windows"]
    for section in ("A1", "C2"):
        assert windows[(200.0, section)] == HER2ST_SPOTS[section]  # 200 um pseudo-spots are the real ST spots
        assert windows[(104.0, section)] > windows[(200.0, section)]
    tile_log = (out / "spot_104um" / "logs" / "tile" / "A1.log").read_text()
    assert "pseudo-spots of 104 um (13 x 13 bins" in tile_log
    assert (out / "figures" / "spot_sweep.png").stat().st_size > 10_000
    assert "spot_sweep.tsv" in res.stdout + res.stderr  # the closing lines point at the table
