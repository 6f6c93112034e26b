"""Xenium: cells of a Xenium bundle pooled into pseudo-spots in the frame of a registered H&E, cross-checked
against spatialdata-io reading the same files."""

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import HER2ST, REPO
from hd_fixtures import write_10x_h5

from histexpr.errors import InputError
from histexpr.io.xenium import read_xenium_sample

pytestmark = pytest.mark.skipif(not HER2ST.exists(), reason="needs ../shared/data/her2st (HER2ST C2)")
PIXEL_SIZE = 0.2125  # um per morphology-image pixel, as Xenium writes it


@pytest.fixture(scope="module")
def c2_xenium(tmp_path_factory, her2st_root):
    """HER2ST C2 as a Xenium bundle: each ST spot's counts split over 8 cells at random places in its 100 um
    circle, their centroids in um of a morphology frame that the C2 image maps to by a turned, scaled, shifted
    affine (written as Xenium Explorer's alignment CSV)."""
    from histexpr.data.tiling import estimate_um_per_px_from_array
    from histexpr.io.sheet import build_her2st_sheet
    from histexpr.io.st import read_st_sample

    row = build_her2st_sheet(her2st_root).set_index("sample").loc["C2"]
    st = read_st_sample(row["counts"], row["spots"], float(row["pixel_scale"]))
    xy = np.asarray(st.obsm["spatial"], np.float64)
    um = estimate_um_per_px_from_array(st.obs["array_x"], st.obs["array_y"], xy, "st", 200.0)
    rng = np.random.default_rng(0)
    X = st.X.toarray().astype(np.int64)
    top = np.argsort(-X.sum(0))[:80]
    X, genes = X[:, top], st.var_names[top]
    cells_xy, rows = [], []
    for s in range(st.n_obs):
        r = 50 / um * np.sqrt(rng.uniform(0, 1, 8))
        t = rng.uniform(0, 2 * np.pi, 8)
        cells_xy.append(xy[s] + np.column_stack([r * np.cos(t), r * np.sin(t)]))
        share = rng.integers(0, 8, X[s].sum())  # each molecule to one of the spot's 8 cells
        gene = np.repeat(np.arange(len(genes)), X[s])
        rows.append(np.stack([np.bincount(share[gene == g], minlength=8) for g in range(len(genes))], 1))
    he = np.concatenate(cells_xy)
    M = sp.csr_matrix(np.concatenate(rows))
    theta, scale = np.deg2rad(3.0), um / PIXEL_SIZE
    A = np.array([[scale * np.cos(theta), -scale * np.sin(theta), 812.5],
                  [scale * np.sin(theta), scale * np.cos(theta), -430.0], [0, 0, 1]])
    morph = (A @ np.column_stack([he, np.ones(len(he))]).T).T[:, :2]
    bundle = tmp_path_factory.mktemp("xenium") / "output-XETG00000"
    bundle.mkdir()
    ids = [f"c{i:06d}-1" for i in range(len(he))]
    write_10x_h5(bundle / "cell_feature_matrix.h5", M, ids, genes)
    pd.DataFrame({"cell_id": ids, "x_centroid": morph[:, 0] * PIXEL_SIZE, "y_centroid": morph[:, 1] * PIXEL_SIZE,
                  "transcript_counts": np.asarray(M.sum(1)).ravel(), "cell_area": np.full(len(ids), 60.0),
                  "nucleus_area": np.full(len(ids), 25.0)}).to_parquet(bundle / "cells.parquet")
    (bundle / "experiment.xenium").write_text(json.dumps({"pixel_size": PIXEL_SIZE, "analysis_sw_version": "xenium-1.9.0"}))
    alignment = bundle.parent / "C2_he_imagealignment.csv"
    pd.DataFrame(A).to_csv(alignment, header=False, index=False)
    return {"bundle": bundle, "alignment": alignment, "image": row["image"], "um": um, "he": he, "counts": M,
            "genes": list(genes), "total": X.sum()}


def test_cells_pooled_into_pseudo_spots_agree_with_spatialdata_io_reading_the_same_files(c2_xenium):
    """spatialdata-io reads the cells (counts, circles in the morphology frame) and the H&E with the alignment
    as its transformation; taken into the H&E's pixels through spatialdata's transformations and pooled on the
    same grid, they give our pseudo-spots' counts and centres."""
    sdio = pytest.importorskip("spatialdata_io")
    from spatialdata.transformations import get_transformation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = sdio.xenium(c2_xenium["bundle"], cells_as_circles=True, cells_boundaries=False,
                            nucleus_boundaries=False, cells_labels=False, nucleus_labels=False, transcripts=False,
                            morphology_mip=False, morphology_focus=False, aligned_images=False)
    table, circles = sdata.tables["table"], sdata.shapes["cell_circles"]
    to_global = get_transformation(circles, "global").to_affine_matrix(("x", "y"), ("x", "y"))
    image_to_global = np.loadtxt(c2_xenium["alignment"], delimiter=",")
    pts = np.column_stack([circles.geometry.x, circles.geometry.y, np.ones(len(circles))])
    he = (np.linalg.inv(image_to_global) @ to_global @ pts.T).T[:, :2]
    assert np.abs(he - c2_xenium["he"]).max() < 0.01  # the fixture's own H&E positions, through their reading
    X = table.X.tocsr()
    for spot_um in (56, 112):
        ours = read_xenium_sample(c2_xenium["bundle"], c2_xenium["alignment"], spot_um)
        assert ours.uns["um_per_px"] == pytest.approx(c2_xenium["um"], rel=1e-9)
        side = spot_um / c2_xenium["um"]
        ij = np.floor(he / side).astype(int)
        theirs = pd.DataFrame(X.toarray(), columns=table.var_names).groupby([ij[:, 0], ij[:, 1]]).sum()
        theirs.index = [f"xe_{i}_{j}" for i, j in theirs.index]
        assert set(theirs.index) == set(ours.obs_names)
        assert np.array_equal(ours.X.toarray(), theirs.loc[ours.obs_names, ours.var_names].to_numpy())
        centre = (ours.obs[["array_x", "array_y"]].to_numpy() + 0.5) * side
        assert np.abs(ours.obsm["spatial"] - centre).max() < 0.5
        assert ours.X.sum() == c2_xenium["total"]  # every molecule of C2's top genes, once


def test_a_xenium_row_is_tiled_on_the_registered_he_with_every_check(c2_xenium, tmp_path):
    from histexpr.config import validate
    from histexpr.data.section import tile_section
    from histexpr.io.sheet import load_sample_sheet, sample_genes

    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\tpatient\timage\tcounts\tspots\tformat\n"
                     f"C2xe\tC\t{c2_xenium['image']}\t{c2_xenium['bundle']}\t{c2_xenium['alignment']}\txenium\n")
    row = load_sample_sheet(sheet, schema=REPO / "workflow" / "schemas" / "samples.schema.yaml").iloc[0].to_dict()
    tiling = validate({"study": "t", "samples": "s.tsv"}, REPO / "workflow" / "schemas" / "config.schema.yaml",
                      "test")["tiling"] | {"window_px": 32, "spot_um": 112.0}
    sec = tile_section(row, tiling)
    t = sec.adata.uns["tiling"]
    assert t["platform"] == "xenium" and t["spot_um"] == 112.0
    assert t["um_per_px"] == pytest.approx(c2_xenium["um"]) and abs(t["grid_um_per_px"] / t["um_per_px"] - 1) < 0.01
    assert t["spots_on_tissue"] > 0.75 and t["kept"] > 0
    assert sample_genes(row) == c2_xenium["genes"]


@pytest.mark.parametrize("break_it, where, match", [
    (lambda b, a: a.write_text("1,0,0\n0,1,0\n"), "alignment", "3 x 3 numbers; found 2 x 3"),
    (lambda b, a: a.write_text("1,0,0\n0,0,0\n0,0,1\n"), "alignment", "not an invertible affine"),
    (lambda b, a: (b / "cells.parquet").unlink(), "cells.parquet", "cells.parquet not found"),
    (lambda b, a: (b / "experiment.xenium").write_text('{"pixel_size": 0}'), "experiment.xenium", "pixel_size is 0"),
])
def test_a_malformed_bundle_or_alignment_stops_with_one_line_naming_the_file(c2_xenium, tmp_path, break_it, where,
                                                                           match):
    bundle = tmp_path / "bundle"
    shutil.copytree(c2_xenium["bundle"], bundle)
    alignment = tmp_path / "he_imagealignment.csv"
    shutil.copy(c2_xenium["alignment"], alignment)
    break_it(bundle, alignment)
    with pytest.raises(InputError, match=match) as err:
        read_xenium_sample(bundle, alignment, 56)
    assert where in str(err.value) and "\n" not in str(err.value)
