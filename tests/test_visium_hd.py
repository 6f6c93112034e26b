"""Visium HD: Space Ranger's binned outputs pooled into square pseudo-spots, cross-checked against spatialdata-io."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import HER2ST
from hd_fixtures import BIN_UM, K, write_hd_from_st

from histexpr.errors import InputError
from histexpr.io.visium_hd import bin_folder, hd_genes, read_visium_hd_sample


@pytest.fixture(scope="module")
def c2_hd(tmp_path_factory, her2st_root):
    """HER2ST C2 as a Visium HD output (tests/hd_fixtures.py), with the real spots it was made from."""
    from histexpr.data.tiling import estimate_um_per_px_from_array
    from histexpr.io.sheet import build_her2st_sheet
    from histexpr.io.st import read_st_sample

    row = build_her2st_sheet(her2st_root).set_index("sample").loc["C2"]
    st = read_st_sample(row["counts"], row["spots"], float(row["pixel_scale"]))
    um = estimate_um_per_px_from_array(st.obs["array_x"], st.obs["array_y"], np.asarray(st.obsm["spatial"]), "st",
                                       200.0)
    out = tmp_path_factory.mktemp("hd") / "outs"
    truth = write_hd_from_st(st, um, out)
    return {"outs": out, "truth": truth, "st": st, "um_per_px": um, "image": row["image"]}


def test_pooling_200um_pseudo_spots_gives_back_the_real_st_spot_counts(c2_hd):
    a = read_visium_hd_sample(c2_hd["outs"], BIN_UM, BIN_UM * K)
    truth = c2_hd["truth"]
    assert a.n_obs == len(truth["blocks"]) == 187
    key = {(r, c): s for s, r, c in zip(truth["blocks"].index, truth["blocks"]["array_row_block"],
                                         truth["blocks"]["array_col_block"])}
    order = [key[(r, c)] for r, c in zip(a.obs["array_y"], a.obs["array_x"])]
    expected = truth["counts"].loc[order, list(a.var_names)].to_numpy()
    assert np.array_equal(a.X.toarray(), expected)  # every count of every spot
    # the pseudo-spot centre is the ST spot it was built on (the bin grid is the array's affine fit)
    real = truth["blocks"].loc[order, ["x", "y"]].to_numpy()
    assert np.abs(a.obsm["spatial"] - real).max() < 0.25 * 200 / c2_hd["um_per_px"]
    assert a.uns["um_per_px"] == pytest.approx(c2_hd["um_per_px"])
    b = a.uns["bins"]
    assert (b["positions"], b["in_tissue"], b["bins_per_side"]) == (truth["n_bins"], truth["n_tissue"], K)
    assert (a.obs["n_bins"] == K * K).all() and b["pooled"] == truth["n_tissue"]


def test_every_pseudo_spot_size_agrees_with_spatialdata_io_reading_the_same_files(c2_hd):
    """spatialdata-io's visium_hd reads the bins (counts, pixel centres); pooled here by array row and column,
    they give the same counts per pseudo-spot and the same centres (0.5 px) as our reader, at 3 sizes."""
    sdio = pytest.importorskip("spatialdata_io")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = sdio.visium_hd(c2_hd["outs"], bin_size=BIN_UM, load_segmentations_only=False, bins_as_squares=False,
                               load_all_images=False)
    table = sdata.tables[f"square_{BIN_UM:03d}um"]
    xy = np.asarray(table.obsm["spatial"], np.float64)  # (x, y) full-resolution px of each bin
    X = table.X.tocsr()
    for spot_um in (16, 56, 200):
        k = spot_um // BIN_UM
        ours = read_visium_hd_sample(c2_hd["outs"], BIN_UM, spot_um)
        block = pd.MultiIndex.from_arrays([table.obs["array_row"].to_numpy() // k,
                                           table.obs["array_col"].to_numpy() // k])
        codes, uniq = pd.factorize(block)
        pool = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(uniq), len(codes)))
        n = np.asarray(pool.sum(1)).ravel()
        theirs = pd.DataFrame((pool @ X).toarray().astype(np.int64), index=[f"hd_{i}_{j}" for i, j in uniq],
                              columns=table.var_names)
        full = n == k * k  # blocks wholly under tissue: their centre is the mean of their bins
        centre = pd.DataFrame((pool @ xy) / n[:, None], index=theirs.index, columns=["x", "y"])
        assert set(ours.obs_names) <= set(theirs.index)
        sub = theirs.loc[ours.obs_names, ours.var_names].to_numpy()
        assert np.array_equal(ours.X.toarray().astype(np.int64), sub), spot_um
        whole = ours.obs_names[full[theirs.index.get_indexer(ours.obs_names)]]
        assert len(whole) > 0.5 * ours.n_obs
        diff = np.abs(ours[whole].obsm["spatial"] - centre.loc[whole].to_numpy()).max()
        assert diff < 0.5, (spot_um, diff)
        assert ours.uns["spot_um"] == spot_um


def test_genes_are_read_without_the_counts_and_the_bin_folder_is_found_from_any_level(c2_hd):
    outs = c2_hd["outs"]
    assert hd_genes(outs, BIN_UM) == c2_hd["truth"]["genes"]
    folder = bin_folder(outs, BIN_UM)
    assert bin_folder(outs / "binned_outputs", BIN_UM) == folder == bin_folder(folder, BIN_UM)


def _copy(c2_hd, tmp_path):
    dst = tmp_path / "outs"
    shutil.copytree(c2_hd["outs"], dst)
    return dst, dst / "binned_outputs" / "square_008um"


@pytest.mark.parametrize("break_it, match", [
    (lambda d: (d / "spatial" / "tissue_positions.parquet").unlink(), "tissue_positions.parquet not found"),
    (lambda d: (d / "spatial" / "tissue_positions.parquet").write_text("barcode,in_tissue\n"), "cannot read parquet"),
    (lambda d: (d / "spatial" / "scalefactors_json.json").write_text('{"bin_size_um": 8}'), "microns_per_pixel"),
    (lambda d: (d / "spatial" / "scalefactors_json.json").write_text(
        '{"bin_size_um": 16, "microns_per_pixel": 0.5}'), "bin_size_um is 16"),
])
def test_a_malformed_output_stops_with_one_line_naming_the_file(c2_hd, tmp_path, break_it, match):
    outs, folder = _copy(c2_hd, tmp_path)
    break_it(folder)
    with pytest.raises(InputError, match=match) as err:
        read_visium_hd_sample(outs, BIN_UM, 56)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_wrong_sizes_and_shifted_bins_are_refused(c2_hd, tmp_path):
    with pytest.raises(InputError, match="no square_016um/ for tiling.bin_um 16; this output has square_008um"):
        read_visium_hd_sample(c2_hd["outs"], 16, 64)
    with pytest.raises(InputError, match="whole multiple of tiling.bin_um"):
        read_visium_hd_sample(c2_hd["outs"], BIN_UM, 55)
    outs, folder = _copy(c2_hd, tmp_path)
    pos = pd.read_parquet(folder / "spatial" / "tissue_positions.parquet")
    pos.loc[pos.index[:50], "pxl_col_in_fullres"] += 40 * c2_hd["truth"]["bin_px"]  # a torn positions file
    pos.to_parquet(folder / "spatial" / "tissue_positions.parquet")
    with pytest.raises(InputError, match="not a regular grid"):
        read_visium_hd_sample(outs, BIN_UM, 56)


def test_pseudo_spots_mostly_off_tissue_are_dropped_and_counted(c2_hd, tmp_path):
    outs, folder = _copy(c2_hd, tmp_path)
    pos = pd.read_parquet(folder / "spatial" / "tissue_positions.parquet")
    a = read_visium_hd_sample(outs, BIN_UM, 200)
    # take the bins of one spot's block off the tissue (and out of the filtered matrix's in_tissue flag)
    r0, c0 = int(a.obs["array_y"].iloc[0]), int(a.obs["array_x"].iloc[0])
    off = (pos["array_row"] // K == r0) & (pos["array_col"] // K == c0) & (pos["array_row"] % K < 15)
    pos.loc[off, "in_tissue"] = 0
    pos.to_parquet(folder / "spatial" / "tissue_positions.parquet")
    b = read_visium_hd_sample(outs, BIN_UM, 200)
    assert b.n_obs == a.n_obs - 1 and a.obs_names[0] not in b.obs_names
    dropped = b.uns["dropped_spots"]  # every block of the capture area that is not (mostly) tissue, drawn in QC
    assert set(dropped["spot"]) - set(a.uns["dropped_spots"]["spot"]) == {a.obs_names[0]}
    assert (dropped["reason"] == "outside_tissue").all()
    assert b.uns["bins"]["in_dropped_spots"] == K * K


pytestmark = pytest.mark.skipif(not HER2ST.exists(), reason="needs ../shared/data/her2st (HER2ST C2)")


def test_a_sheet_row_of_format_visium_hd_is_tiled_with_every_check_of_the_other_formats(c2_hd, tmp_path, caplog):
    """The sheet names outs/ in counts and leaves spots empty; the tile step pools 56 um pseudo-spots, takes the
    pixel size from microns_per_pixel, cross-checks it against the pseudo-spot grid, runs the placement check
    on the real C2 image, and logs how the bins were pooled."""
    import logging

    from conftest import REPO

    from histexpr.config import validate
    from histexpr.data.section import tile_section
    from histexpr.io.sheet import load_sample_sheet

    caplog.set_level(logging.INFO)
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\tpatient\timage\tcounts\tformat\n"
                     f"C2hd\tC\t{c2_hd['image']}\t{c2_hd['outs']}\tvisium_hd\n")
    row = load_sample_sheet(sheet, schema=REPO / "workflow" / "schemas" / "samples.schema.yaml").iloc[0].to_dict()
    assert row["spots"] == str(c2_hd["outs"])
    tiling = validate({"study": "t", "samples": "s.tsv"}, REPO / "workflow" / "schemas" / "config.schema.yaml",
                      "test")["tiling"] | {"window_px": 32}
    assert (tiling["bin_um"], tiling["spot_um"]) == (8, 56.0)
    sec = tile_section(row, tiling)
    t = sec.adata.uns["tiling"]
    assert t["platform"] == "visium_hd" and t["um_per_px_source"] == "Visium HD microns_per_pixel"
    assert t["um_per_px"] == pytest.approx(c2_hd["um_per_px"]) and t["spot_um"] == 56.0
    assert abs(t["grid_um_per_px"] / t["um_per_px"] - 1) < 0.01  # the pseudo-spot grid agrees with the scale factors
    assert t["bins_bins_per_side"] == 7 and t["kept"] > 0.9 * t["input"] > 2000
    assert t["spots_on_tissue"] > 0.75
    assert sec.windows.shape[1:] == (32, 32, 3)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "pooled into" in messages and "pseudo-spots of 56 um (7 x 7 bins" in messages
