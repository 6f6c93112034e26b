"""HEST-1k samples (mahmoodlab/HEST): legacy ST, Visium, Visium HD and Xenium in one layout.

::

    <root>/st/<id>.h5ad          counts; obsm["spatial"] = (x, y) in the WSI's level-0 pixels; obs array_row,
                                 array_col (spot grid), in_tissue where the source had it
    <root>/wsis/<id>.tif         the H&E whole-slide image (pyramidal TIFF)
    <root>/metadata/<id>.json    pixel_size_um_estimated (and _embedded), spot_diameter and inter_spot_dist
                                 (um), st_technology, ...

The sheet's ``counts`` names ``<root>`` (the sample id is the row's ``sample``) or one ``st/<id>.h5ad``; an empty
``image`` is ``wsis/<id>.tif``. The pixel size is the metadata's ``pixel_size_um_estimated`` (HEST's own
estimate from the spot grid; else ``pixel_size_um_embedded``), the spot size its ``spot_diameter``, and the
grid that the tile step cross-checks the pixel size against follows ``st_technology``: Visium's hexagonal
grid, legacy ST's square one (1k or 2k, read off the coordinates), and for Visium HD and Xenium, which HEST
pools into square pseudo-spots, a square grid of ``inter_spot_dist``.

Read with anndata and json (the files are plain h5ad and JSON; the ``hest`` package itself is not needed).
"""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .st import check_counts
from .visium import read_json_object

log = logging.getLogger(__name__)

# HEST's st_technology -> our array design (None: read legacy ST's 1k/2k off the coordinates)
TECHNOLOGIES = {"visium": "visium", "spatial transcriptomics": None, "visium hd": "visium_hd", "xenium": "visium_hd"}


def hest_files(counts: str | os.PathLike, sample: str) -> dict:
    """``st``, ``wsi`` and ``metadata`` paths of one HEST sample from the sheet's ``counts`` and ``sample``."""
    counts = os.fspath(counts)
    if os.path.isdir(counts):
        root, sid = counts, sample
    else:
        root, sid = os.path.dirname(os.path.dirname(counts)), os.path.splitext(os.path.basename(counts))[0]
    return {"st": os.path.join(root, "st", f"{sid}.h5ad"), "wsi": os.path.join(root, "wsis", f"{sid}.tif"),
            "metadata": os.path.join(root, "metadata", f"{sid}.json"), "id": sid}


def read_hest_metadata(path: str) -> dict:
    meta = read_json_object(path, "HEST metadata file", " (metadata/<id>.json beside st/ and wsis/)")
    px = meta.get("pixel_size_um_estimated") or meta.get("pixel_size_um_embedded")
    if isinstance(px, bool) or not isinstance(px, (int, float)) or not 0 < px < float("inf"):
        raise InputError(path, f"no usable pixel size: pixel_size_um_estimated is "
                               f"{meta.get('pixel_size_um_estimated')!r}, pixel_size_um_embedded "
                               f"{meta.get('pixel_size_um_embedded')!r}")
    tech = str(meta.get("st_technology", "")).strip().lower()
    if tech not in TECHNOLOGIES:
        raise InputError(path, f"st_technology {meta.get('st_technology')!r} is not one histexpr reads "
                               f"(Visium, Spatial Transcriptomics, Visium HD, Xenium)")
    for key in ("spot_diameter", "inter_spot_dist"):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
            raise InputError(path, f"{key} is {v!r}: HEST gives it in micrometres, a positive number")
    return meta


def read_hest_sample(counts: str | os.PathLike, sample: str, image_scale: float = 1.0) -> ad.AnnData:
    """One HEST sample as histexpr reads a section: raw counts of the spots under tissue, ``obsm["spatial"]``
    in the image's pixels, ``array_x``/``array_y``, and ``uns`` ``platform``, ``um_per_px``, ``spot_um``."""
    files = hest_files(counts, sample)
    meta = read_hest_metadata(files["metadata"])
    if not os.path.exists(files["st"]):
        raise InputError(files["st"], "HEST expression file not found (st/<id>.h5ad)")
    try:
        a = ad.read_h5ad(files["st"])
    except Exception as err:
        raise InputError(files["st"], f"cannot read h5ad ({type(err).__name__}: {err})") from None
    if "spatial" in a.obsm:
        xy = np.asarray(a.obsm["spatial"], np.float64)[:, :2]
    elif {"pxl_col_in_fullres", "pxl_row_in_fullres"} <= set(a.obs.columns):
        xy = a.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    else:
        raise InputError(files["st"], "no spot positions: neither obsm['spatial'] nor obs pxl_col_in_fullres / "
                                      "pxl_row_in_fullres")
    if not np.isfinite(xy).all():
        raise InputError(files["st"], f"{int((~np.isfinite(xy)).any(1).sum())} spot(s) with missing positions")
    X = a.X.tocsr() if sp.issparse(a.X) else sp.csr_matrix(np.asarray(a.X))
    check_counts(X, a.obs_names, a.var_names, files["st"], row_kind="spot")
    keep = a.obs["in_tissue"].to_numpy() > 0 if "in_tissue" in a.obs else np.ones(a.n_obs, bool)
    if not keep.any():
        raise InputError(files["st"], "no spot has in_tissue = 1")
    platform = TECHNOLOGIES[str(meta["st_technology"]).strip().lower()]
    um = float(meta.get("pixel_size_um_estimated") or meta["pixel_size_um_embedded"])
    if {"array_col", "array_row"} <= set(a.obs.columns):
        ax, ay = a.obs["array_col"].to_numpy(), a.obs["array_row"].to_numpy()
    else:  # pseudo-spots without grid indices: their index on a square grid of inter_spot_dist
        pitch_px = float(meta["inter_spot_dist"]) / um
        ax, ay = np.rint((xy[:, 0] - xy[:, 0].min()) / pitch_px), np.rint((xy[:, 1] - xy[:, 1].min()) / pitch_px)
        if platform is None:
            platform = "st_1k"
    obs = pd.DataFrame({"spot": a.obs_names.to_numpy()[keep], "array_x": np.asarray(ax)[keep].astype(int),
                        "array_y": np.asarray(ay)[keep].astype(int)}, index=a.obs_names.to_numpy()[keep])
    out = ad.AnnData(X=X[keep].astype(np.float32), obs=obs, var=pd.DataFrame(index=a.var_names.astype(str)))
    out.obsm["spatial"] = xy[keep] * image_scale
    if platform is not None:
        out.uns["platform"] = platform
    out.uns["um_per_px"] = um / image_scale
    out.uns["um_per_px_source"] = "HEST metadata " + ("pixel_size_um_estimated" if meta.get("pixel_size_um_estimated")
                                                       else "pixel_size_um_embedded")
    out.uns["spot_um"] = float(meta["spot_diameter"])
    out.uns["spot_pitch_um"] = float(meta["inter_spot_dist"])
    out.uns["hest"] = {"id": files["id"], "st_technology": str(meta["st_technology"]),
                       "pixel_size_source": "pixel_size_um_estimated" if meta.get("pixel_size_um_estimated")
                       else "pixel_size_um_embedded"}
    out.uns["dropped_spots"] = pd.DataFrame({"spot": a.obs_names.to_numpy()[~keep].astype(str),
                                             "reason": "outside_tissue",
                                             "x": xy[~keep, 0] * image_scale, "y": xy[~keep, 1] * image_scale})
    log.info("%s: HEST sample %s (%s), %d spots under tissue of %d, %.4f um/px (%s), spots %g um, %g um apart",
             files["st"], files["id"], meta["st_technology"], int(keep.sum()), a.n_obs, um,
             out.uns["hest"]["pixel_size_source"], meta["spot_diameter"], meta["inter_spot_dist"])
    return out
