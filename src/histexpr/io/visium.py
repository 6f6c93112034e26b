"""10x Genomics Visium (Space Ranger) outputs.

Reads the filtered feature-barcode matrix (``filtered_feature_bc_matrix.h5``),
the spot positions (``spatial/tissue_positions_list.csv`` of Space Ranger 1.x,
no header, or ``spatial/tissue_positions.csv`` of 2.x and later, with header)
and ``spatial/scalefactors_json.json``. Positions are full-resolution pixels;
when no full-resolution image is given, the reader falls back to
``tissue_hires_image.png`` and scales the positions by ``tissue_hires_scalef``.
"""

from __future__ import annotations

import json
import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError

log = logging.getLogger(__name__)

VISIUM_SPOT_DIAMETER_UM = 55.0
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


def read_positions(path: str | os.PathLike) -> pd.DataFrame:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "Visium tissue positions file not found")
    try:
        with open(path) as fh:
            first = fh.readline()
        header = 0 if first.startswith("barcode") else None
        pos = pd.read_csv(path, header=header)
    except Exception as err:
        raise InputError(path, f"cannot parse tissue positions ({err})") from None
    if header is None:
        if pos.shape[1] != 6:
            raise InputError(path, f"expected 6 columns ({', '.join(POSITION_COLUMNS)}), found {pos.shape[1]}")
        pos.columns = POSITION_COLUMNS
    missing = [c for c in POSITION_COLUMNS if c not in pos.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    if pos[POSITION_COLUMNS[1:]].isna().any().any():
        raise InputError(path, "missing values in spot positions")
    return pos.set_index("barcode")


def read_scalefactors(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "Visium scalefactors_json.json not found")
    try:
        with open(path) as fh:
            sf = json.load(fh)
    except Exception as err:
        raise InputError(path, f"cannot parse scale factors ({err})") from None
    for key in ("spot_diameter_fullres", "tissue_hires_scalef"):
        if not isinstance(sf.get(key), (int, float)) or sf[key] <= 0:
            raise InputError(path, f"missing or invalid {key!r}")
    return sf


def visium_paths(spots_path: str | os.PathLike) -> dict:
    """The files that sit beside a ``tissue_positions`` file in ``spatial/``."""
    d = os.path.dirname(os.fspath(spots_path))
    return {
        "scalefactors": os.path.join(d, "scalefactors_json.json"),
        "hires_image": os.path.join(d, "tissue_hires_image.png"),
    }


def read_visium_sample(counts_path: str | os.PathLike, spots_path: str | os.PathLike,
                       full_resolution_image: bool = True) -> ad.AnnData:
    """Read one Visium sample into AnnData (raw counts, in-tissue spots).

    ``obsm["spatial"]`` is in the pixels of the image the sample is tiled
    from: the full-resolution image, or the hires PNG when
    ``full_resolution_image`` is false. ``uns["um_per_px"]`` gives the
    micrometres per pixel of that image from the 55 µm spot diameter.
    """
    import scanpy as sc

    counts_path, spots_path = os.fspath(counts_path), os.fspath(spots_path)
    if not os.path.exists(counts_path):
        raise InputError(counts_path, "Visium feature-barcode matrix not found")
    pos = read_positions(spots_path)
    sf = read_scalefactors(visium_paths(spots_path)["scalefactors"])
    try:
        adata = sc.read_10x_h5(counts_path)
    except Exception as err:
        raise InputError(counts_path, f"cannot read 10x HDF5 matrix ({err})") from None
    adata.var_names_make_unique()
    unplaced = adata.obs_names.difference(pos.index)
    if len(unplaced) == adata.n_obs:
        raise InputError(counts_path, f"no barcode matches {spots_path} (e.g. {', '.join(adata.obs_names[:3])})")
    if len(unplaced):
        raise InputError(counts_path, f"{len(unplaced)} barcode(s) have no position in {spots_path}: "
                                      f"{', '.join(unplaced[:5])}")
    X = adata.X.tocsr() if sp.issparse(adata.X) else sp.csr_matrix(adata.X)
    if X.nnz and (not np.isfinite(X.data).all() or (X.data < 0).any()):
        raise InputError(counts_path, "counts contain NaN, infinite or negative values")
    p = pos.loc[adata.obs_names]
    in_tissue = p["in_tissue"].to_numpy() > 0
    if not in_tissue.all():
        log.info("%s: %d spot(s) outside tissue dropped", spots_path, int((~in_tissue).sum()))
    scale = 1.0 if full_resolution_image else float(sf["tissue_hires_scalef"])
    obs = pd.DataFrame({
        "spot": adata.obs_names.to_numpy()[in_tissue],
        "array_x": p["array_col"].to_numpy()[in_tissue].astype(int),
        "array_y": p["array_row"].to_numpy()[in_tissue].astype(int),
    })
    obs.index = obs["spot"].to_numpy()
    out = ad.AnnData(X=X[in_tissue].astype(np.float32), obs=obs, var=pd.DataFrame(index=adata.var_names))
    out.obsm["spatial"] = np.column_stack([p["pxl_col_in_fullres"].to_numpy()[in_tissue],
                                           p["pxl_row_in_fullres"].to_numpy()[in_tissue]]).astype(np.float64) * scale
    out.uns["platform"] = "visium"
    out.uns["um_per_px"] = VISIUM_SPOT_DIAMETER_UM / (float(sf["spot_diameter_fullres"]) * scale)
    return out
