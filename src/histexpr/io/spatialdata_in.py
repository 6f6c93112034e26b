"""SpatialData stores (``.zarr``): what spatialdata-io writes for Visium, Visium HD and Xenium, and what
nf-core/spatialvi and sopa produce.

The sheet names elements by their path inside the store (each element is a folder there)::

    counts   <store>.zarr                   the store's only table, or
             <store>.zarr/tables/<name>     one table (raw counts in layers["counts"] if present, else X)
    spots    <store>.zarr/shapes/<name>     optional: the shapes whose centroids are the spots; default the
                                            region the table annotates
    image    <store>.zarr/images/<name>     optional: the image to tile; default the largest image that is not
                                            blank among those sharing a coordinate system with the shapes

Spot centroids go to the image's pixels through the store's own transformations
(``get_transformation_between_coordinate_systems``). The sheet's ``platform`` says the array design
(``visium``, ``st_1k``, ``st_2k``), read from the table's ``obs`` ``array_col`` / ``array_row``.
"""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .image import split_store_path
from .st import check_counts

log = logging.getLogger(__name__)

SPOT_UM = {"visium": 55.0, "st_1k": 100.0, "st_2k": 100.0}


def read_store(store: str, selection=None):
    """``spatialdata.read_zarr`` with one clear error naming the store."""
    import spatialdata

    if not os.path.isdir(store):
        raise InputError(store, "SpatialData store not found")
    try:
        return spatialdata.read_zarr(store, selection=selection)
    except Exception as err:
        raise InputError(store, f"not a readable SpatialData store ({type(err).__name__}: {err})") from None


def _element(path: str | None, kind: str, sdata, store: str, default=None) -> str:
    """The name of the ``kind`` element a sheet cell names (or ``default``); one error listing what is there."""
    present = list(getattr(sdata, kind).keys())
    if path:
        parts = split_store_path(path)
        if parts is None or parts[1] != kind or os.path.normpath(parts[0]) != os.path.normpath(store):
            raise InputError(path, f"expected {store}/{kind}/<name>")
        name = parts[2]
    elif default is not None:
        name = default
    elif len(present) == 1:
        name = present[0]
    else:
        raise InputError(store, f"the store has {len(present)} {kind} ({', '.join(present) or 'none'}); name one "
                                f"as {store}/{kind}/<name> in the sample sheet")
    if name not in present:
        raise InputError(path or store, f"no {kind[:-1]} element {name!r} in the store (it has: "
                                        f"{', '.join(present) or 'none'})")
    return name


def choose_image(sdata, shapes: str, store: str) -> str:
    """The largest non-blank image sharing a coordinate system with ``shapes``."""
    from spatialdata.transformations import get_transformation

    from .image import ElementSlide

    systems = set(get_transformation(sdata.shapes[shapes], get_all=True))
    best, tried = None, []
    for name, element in sdata.images.items():
        if not systems & set(get_transformation(element, get_all=True)):
            continue
        slide = ElementSlide(element)
        thumb = np.asarray(slide.get_thumbnail((256, 256)).convert("RGB"), np.float32)
        if thumb.reshape(-1, 3).std(0).max() < 1.0:
            tried.append(f"{name} (blank)")
            continue
        if best is None or slide.dimensions[0] * slide.dimensions[1] > best[1]:
            best = (name, slide.dimensions[0] * slide.dimensions[1])
    if best is None:
        raise InputError(store, f"no usable image shares a coordinate system with the shapes {shapes!r} "
                                f"({', '.join(tried) or 'none'}); name one in the sample sheet's image column")
    if tried:
        log.warning("%s: skipped blank image(s) %s; tiling from %s", store, ", ".join(tried), best[0])
    return best[0]


def read_spatialdata_sample(counts: str, spots: str | None, image: str | None, platform: str) -> tuple[ad.AnnData, str]:
    """One section from a SpatialData store: ``(AnnData with obsm["spatial"] in the image's pixels, image path)``."""
    from spatialdata.transformations import get_transformation

    parts = split_store_path(counts)
    store = parts[0] if parts else os.fspath(counts)
    sdata = read_store(store)
    table_name = _element(counts if parts else None, "tables", sdata, store)
    table = sdata.tables[table_name]
    attrs = table.uns.get("spatialdata_attrs", {})
    regions = attrs.get("region")
    regions = [regions] if isinstance(regions, str) else list(regions or [])
    shapes = _element(spots, "shapes", sdata, store, default=None if spots or len(regions) != 1 else regions[0])
    rows = table.obs[attrs["region_key"]].astype(str).to_numpy() == shapes if attrs.get("region_key") else \
        np.ones(table.n_obs, bool)
    if not rows.any():
        raise InputError(store, f"table {table_name!r} annotates no element {shapes!r} (it annotates "
                                f"{', '.join(regions) or 'nothing'})")
    image_name = _element(image, "images", sdata, store, default=None if image else choose_image(sdata, shapes, store))
    geo = sdata.shapes[shapes]
    ids = table.obs[attrs["instance_key"]].to_numpy()[rows] if attrs.get("instance_key") else geo.index.to_numpy()
    missing = pd.Index(ids).difference(geo.index)
    if len(missing):
        raise InputError(store, f"{len(missing)} row(s) of table {table_name!r} have no shape in {shapes!r}")
    centroids = geo.loc[ids].geometry.centroid
    img = sdata.images[image_name]
    shared = sorted(set(get_transformation(geo, get_all=True)) & set(get_transformation(img, get_all=True)))
    if not shared:
        raise InputError(store, f"the shapes {shapes!r} and the image {image_name!r} share no coordinate system")
    xy = None
    for cs in shared:  # shapes -> cs -> the image's pixels; every shared system must agree
        to_cs = get_transformation(geo, to_coordinate_system=cs).to_affine_matrix(("x", "y"), ("x", "y"))
        img_to_cs = get_transformation(img, to_coordinate_system=cs).to_affine_matrix(("x", "y"), ("x", "y"))
        m = np.linalg.inv(img_to_cs) @ to_cs
        p = (m @ np.column_stack([centroids.x, centroids.y, np.ones(len(centroids))]).T).T[:, :2]
        if xy is None:
            xy = p
        elif np.abs(p - xy).max() > 0.5:
            raise InputError(store, f"coordinate systems {shared[0]!r} and {cs!r} place the spots of {shapes!r} "
                                    f"on {image_name!r} up to {np.abs(p - xy).max():.1f} px apart")
    sub = table[rows]
    X = sub.layers["counts"] if "counts" in sub.layers else sub.X
    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    check_counts(X, sub.obs_names, sub.var_names, f"{store}/tables/{table_name}", row_kind="spot")
    obs = sub.obs
    if not {"array_col", "array_row"} <= set(obs.columns):
        raise InputError(f"{store}/tables/{table_name}", "needs obs array_col and array_row (the spot grid) to "
                                                          "check the pixel size")
    keep = obs["in_tissue"].to_numpy() > 0 if "in_tissue" in obs else np.ones(sub.n_obs, bool)
    names = sub.obs_names.astype(str).to_numpy()
    out = ad.AnnData(X=X[keep].astype(np.float32), var=pd.DataFrame(index=sub.var_names.astype(str)),
                     obs=pd.DataFrame({"spot": names[keep], "array_x": obs["array_col"].to_numpy()[keep].astype(int),
                                       "array_y": obs["array_row"].to_numpy()[keep].astype(int)}, index=names[keep]))
    out.obsm["spatial"] = xy[keep]
    out.uns["platform"] = platform
    out.uns["spot_um"] = SPOT_UM.get(platform, 55.0)
    out.uns["dropped_spots"] = pd.DataFrame({"spot": names[~keep], "reason": "outside_tissue",
                                             "x": xy[~keep, 0], "y": xy[~keep, 1]})
    log.info("%s: table %s, %d spots of shapes %s (%d outside tissue dropped), image %s, positions through the "
             "store's transformations", store, table_name, int(keep.sum()), shapes, int((~keep).sum()), image_name)
    return out, f"{store}/images/{image_name}"
