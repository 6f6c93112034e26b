"""Predictions as a SpatialData store (``.zarr``), beside the ``.h5ad``, for napari-spatialdata and sopa users.

One store per ``predictions.h5ad`` (a fold's test sections, or a predicted slide):

* ``images/<sample>_image``: the section's thumbnail (``uns["spatial"][sample]["images"]["hires"]``), in the coordinate
  system ``<sample>`` (level-0 pixels of the section's image) by its scale factor;
* ``shapes/<sample>_spots``: one circle per predicted spot or window, at ``obsm["spatial"]``, of the spot diameter;
* ``tables/table``: the predictions (``X``) and, where present, the measured values (``layers["truth"]``),
  annotating those shapes (``region`` = the sample, ``instance_id`` = the row within it).

Written through spatialdata's own models and ``write`` (the format its readers expect), into a temporary folder
that is renamed into place.
"""

from __future__ import annotations

import os

import anndata as ad
import numpy as np


def to_spatialdata(pred: ad.AnnData):
    """A :class:`spatialdata.SpatialData` of one predictions AnnData (see the module docstring)."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Point
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    samples = pred.obs["sample"].astype(str).to_numpy()
    xy = np.asarray(pred.obsm["spatial"], np.float64)
    spatial = pred.uns.get("spatial", {})
    images, shapes = {}, {}
    instance = np.zeros(len(samples), np.int64)
    for sample in dict.fromkeys(samples):
        rows = np.flatnonzero(samples == sample)
        instance[rows] = np.arange(len(rows))
        meta = spatial.get(sample, {})
        sf = meta.get("scalefactors", {})
        diameter = float(sf.get("spot_diameter_fullres", 1.0))
        to_sample = {sample: Identity()}
        shapes[f"{sample}_spots"] = ShapesModel.parse(
            gpd.GeoDataFrame({"radius": np.full(len(rows), diameter / 2)},
                             geometry=[Point(x, y) for x, y in xy[rows]], index=np.arange(len(rows))),
            transformations=to_sample)
        thumb = meta.get("images", {}).get("hires")
        if thumb is not None:
            scale = float(sf.get("tissue_hires_scalef", 1.0))
            images[f"{sample}_image"] = Image2DModel.parse(
                np.asarray(thumb).transpose(2, 0, 1), dims=("c", "y", "x"), chunks=(3, 512, 512),
                transformations={sample: Scale([1 / scale, 1 / scale], axes=("y", "x"))})
    table = ad.AnnData(X=np.asarray(pred.X, np.float32), var=pred.var.copy(),
                       obs=pd.DataFrame({"region": pd.Categorical([f"{s}_spots" for s in samples],
                                                                  categories=list(shapes)),
                                         "instance_id": instance,
                                         **{c: pred.obs[c].to_numpy() for c in pred.obs.columns if c != "region"}},
                                        index=pred.obs_names.astype(str)))
    for name, layer in pred.layers.items():
        table.layers[name] = np.asarray(layer, np.float32)
    table.uns.update({k: v for k, v in pred.uns.items() if k in ("model", "fold", "protocol", "slide")})
    table = TableModel.parse(table, region=list(shapes), region_key="region", instance_key="instance_id")
    return SpatialData(images=images, shapes=shapes, tables={"table": table})


def write_spatialdata(pred: ad.AnnData, path: str | os.PathLike) -> None:
    """Write :func:`to_spatialdata` of ``pred`` to ``path`` (a ``.zarr`` folder), atomically."""
    from ..utils import atomic_dir

    sdata = to_spatialdata(pred)
    with atomic_dir(os.fspath(path)) as tmp:
        tmp.rmdir()  # spatialdata writes the store's folder itself
        sdata.write(tmp)
