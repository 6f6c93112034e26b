"""Predictions as SpatialData stores: a fold's predictions.zarr opens with spatialdata.read_zarr and holds its
.h5ad's values, spots and thumbnail."""

import anndata as ad
import numpy as np
import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.workflow


def test_a_folds_predictions_open_with_spatialdata_and_hold_the_h5ad_values(tiny_demo_run):
    spatialdata = pytest.importorskip("spatialdata")
    from spatialdata.transformations import get_transformation

    work, _ = tiny_demo_run
    h5ad = next((work / "results" / "demo").glob("*/raw/fold_1/predictions.h5ad"))
    target = h5ad.with_suffix(".zarr")
    res = run_snakemake(work, None, str(target.relative_to(work)))
    assert res.returncode == 0, res.stderr[-3000:]
    pred, store = ad.read_h5ad(h5ad), spatialdata.read_zarr(target)
    table = store.tables["table"]
    assert list(table.obs_names) == list(pred.obs_names) and list(table.var_names) == list(pred.var_names)
    assert np.array_equal(np.asarray(table.X), np.asarray(pred.X))
    assert np.array_equal(np.asarray(table.layers["truth"]), np.asarray(pred.layers["truth"]))
    for sample in pred.obs["sample"].unique():
        rows = np.flatnonzero(pred.obs["sample"].to_numpy() == sample)
        shapes = store.shapes[f"{sample}_spots"]
        xy = np.column_stack([shapes.geometry.x, shapes.geometry.y])
        assert np.allclose(xy, pred.obsm["spatial"][rows])  # spot centres in the section image's pixels
        image = store.images[f"{sample}_image"]
        thumb = pred.uns["spatial"][sample]["images"]["hires"]
        assert image.shape == (3, *thumb.shape[:2])
        scale = get_transformation(image, to_coordinate_system=sample).to_affine_matrix(("y", "x"), ("y", "x"))
        assert scale[0, 0] == pytest.approx(1 / pred.uns["spatial"][sample]["scalefactors"]["tissue_hires_scalef"])
        region = table.obs["region"].astype(str).to_numpy()[rows]
        assert (region == f"{sample}_spots").all()
