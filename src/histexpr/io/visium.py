"""10x Genomics Visium (Space Ranger 1.x, 2.x and 3.x) outputs.

Reads the feature-barcode matrix (``filtered_feature_bc_matrix.h5``, the
``raw_`` one, or a ``filtered_feature_bc_matrix/`` folder of Matrix Market
files), the spot positions (``spatial/tissue_positions_list.csv`` of Space
Ranger 1.x, no header, or ``spatial/tissue_positions.csv`` of 2.x and later,
with header) and ``spatial/scalefactors_json.json``. Positions are
full-resolution pixels. Without a full-resolution image the reader uses the
best image Space Ranger wrote that is really there: ``tissue_hires_image.png``,
else ``tissue_lowres_image.png`` (a blank placeholder, as in scanpy's test data,
is skipped and said so), with its scale factor.

Pixel size: Space Ranger's ``spot_diameter_fullres`` spans a 65 µm circle (the
55 µm spot plus a margin, per 10x's documentation of the scale factors), and
neighbouring spots are 100 µm apart; the tile rule cross-checks the two.
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
from .st import check_counts

log = logging.getLogger(__name__)

VISIUM_SPOT_DIAMETER_UM = 55.0  # the capture spot
SCALEFACTOR_DIAMETER_UM = 65.0  # what spot_diameter_fullres measures (10x: "a theoretical 65 µm spot")
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
IMAGES = (("hires", "tissue_hires_image.png", "tissue_hires_scalef"),
          ("lowres", "tissue_lowres_image.png", "tissue_lowres_scalef"))


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
    values = pos[POSITION_COLUMNS[1:]].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        i = int(np.flatnonzero(values.isna().any(axis=1).to_numpy())[0])
        raise InputError(path, f"missing or non-numeric spot position values (first at line {i + 1 + (header == 0)})")
    pos[POSITION_COLUMNS[1:]] = values
    return pos.set_index("barcode")


def read_json_object(path: str | os.PathLike, what: str, missing: str = "") -> dict:
    """A JSON file holding one object (scale factors, metadata); one :class:`InputError` naming the file when
    it is missing (``missing`` says where it is expected), unparsable or not an object."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, f"{what} not found{missing}")
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except Exception as err:
        raise InputError(path, f"cannot parse {what} ({err})") from None
    if not isinstance(obj, dict):
        raise InputError(path, f"{what} must be a JSON object, found a {type(obj).__name__}")
    return obj


def read_scalefactors(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    sf = read_json_object(path, "Visium scalefactors_json.json")
    for key in ("spot_diameter_fullres", "tissue_hires_scalef"):
        if key not in sf:
            raise InputError(path, f"no {key!r}: not a Space Ranger scalefactors_json.json?")
        if isinstance(sf[key], bool) or not isinstance(sf[key], (int, float)) or not 0 < sf[key] < float("inf"):
            raise InputError(path, f"{key} is {sf[key]!r}: it must be a positive number")
    return sf


def visium_paths(spots_path: str | os.PathLike) -> dict:
    """The files that sit beside a ``tissue_positions`` file in ``spatial/``."""
    d = os.path.dirname(os.fspath(spots_path))
    return {"scalefactors": os.path.join(d, "scalefactors_json.json"),
            **{f"{name}_image": os.path.join(d, file) for name, file, _ in IMAGES}}


def visium_image(spots_path: str | os.PathLike) -> tuple[str, str, float]:
    """The image to tile a Visium sample from when the sheet gives none: ``(path, name, scale factor)``.

    The hires PNG, else the lowres PNG; a missing or blank (single-colour) image is skipped and logged. One
    error naming both when neither shows anything.
    """
    from .image import open_image

    spots_path = os.fspath(spots_path)
    paths = visium_paths(spots_path)
    sf = read_scalefactors(paths["scalefactors"])
    tried = []
    for name, _, key in IMAGES:
        path = paths[f"{name}_image"]
        if not os.path.exists(path):
            tried.append(f"{path} (missing)")
            continue
        if key not in sf:
            tried.append(f"{path} (no {key} in {paths['scalefactors']})")
            continue
        if isinstance(sf[key], bool) or not isinstance(sf[key], (int, float)) or not 0 < sf[key] < float("inf"):
            raise InputError(paths["scalefactors"], f"{key} is {sf[key]!r}: it must be a positive number (the "
                                                    f"{name} image's pixels per full-resolution pixel)")
        with open_image(path) as im:
            if im.is_blank():
                tried.append(f"{path} (blank: every pixel the same colour)")
                log.warning("%s is blank (every pixel the same colour, a placeholder); trying the next image", path)
                continue
        if tried:
            log.warning("Visium %s: no usable hires image; tiling from the %s image %s (scale %g): windows are "
                        "upsampled from a low-resolution copy, give the full-resolution image in the sheet's "
                        "image column for real detail", spots_path, name, path, sf[key])
        return path, name, float(sf[key])
    raise InputError(spots_path, "no usable image beside the Visium spot positions: " + "; ".join(tried)
                     + "; give the full-resolution H&E image in the sample sheet's image column")


def read_feature_matrix(path: str) -> ad.AnnData:
    """A 10x feature-barcode matrix (HDF5 file or Matrix Market folder), Gene Expression features only,
    with 10x's ``var`` columns (``gene_ids``, ``feature_types``, ``genome``). Duplicate gene symbols are made
    unique as scanpy does (``-1``, ``-2``), counted and logged."""
    import scanpy as sc

    if not os.path.exists(path):
        raise InputError(path, "Visium feature-barcode matrix not found")
    try:
        adata = sc.read_10x_mtx(path, var_names="gene_symbols") if os.path.isdir(path) else sc.read_10x_h5(path)
    except Exception as err:
        raise InputError(path, f"cannot read 10x feature-barcode matrix ({type(err).__name__}: {err})") from None
    if adata.n_vars == 0 or adata.n_obs == 0:
        raise InputError(path, f"feature-barcode matrix is empty ({adata.n_obs} barcodes x {adata.n_vars} genes)")
    dup = adata.var_names[adata.var_names.duplicated()].unique()
    if len(dup):
        log.warning("%s: %d gene symbol(s) occur more than once (different gene_ids), made unique with -1, -2 "
                    "as scanpy does: %s", path, len(dup), ", ".join(dup[:10]))
        adata.var_names_make_unique()
    return adata


def read_visium_sample(counts_path: str | os.PathLike, spots_path: str | os.PathLike,
                       image_scale: float = 1.0) -> ad.AnnData:
    """Read one Visium sample into AnnData (raw counts, in-tissue spots).

    ``obsm["spatial"]`` is in the pixels of the image the sample is tiled
    from: ``image_scale`` times the full-resolution pixels (1 for the
    full-resolution image, a Space Ranger scale factor for hires/lowres).
    ``uns["um_per_px"]`` gives the micrometres per pixel of that image from
    ``spot_diameter_fullres``; ``uns["dropped_spots"]`` the barcodes outside
    tissue with their positions.
    """
    counts_path, spots_path = os.fspath(counts_path), os.fspath(spots_path)
    pos = read_positions(spots_path)
    sf = read_scalefactors(visium_paths(spots_path)["scalefactors"])
    adata = read_feature_matrix(counts_path)
    unplaced = adata.obs_names.difference(pos.index)
    if len(unplaced) == adata.n_obs:
        raise InputError(counts_path, f"no barcode matches {spots_path} (e.g. {', '.join(adata.obs_names[:3])})")
    if len(unplaced):
        raise InputError(counts_path, f"{len(unplaced)} barcode(s) have no position in {spots_path}: "
                                      f"{', '.join(unplaced[:5])}")
    X = adata.X.tocsr() if sp.issparse(adata.X) else sp.csr_matrix(adata.X)
    check_counts(X, adata.obs_names, adata.var_names, counts_path, row_kind="barcode")
    p = pos.loc[adata.obs_names]
    in_tissue = p["in_tissue"].to_numpy() > 0
    if not in_tissue.any():
        raise InputError(spots_path, f"none of the {adata.n_obs} barcodes of {counts_path} is under tissue "
                                     f"(in_tissue is 0 for all): wrong positions file, or a matrix of background "
                                     f"spots only")
    if not in_tissue.all():
        log.info("%s: %d of %d barcode(s) outside tissue dropped", spots_path, int((~in_tissue).sum()), adata.n_obs)
    scale = float(image_scale)
    xy = np.column_stack([p["pxl_col_in_fullres"].to_numpy(), p["pxl_row_in_fullres"].to_numpy()]).astype(np.float64)
    obs = pd.DataFrame({
        "spot": adata.obs_names.to_numpy()[in_tissue],
        "array_x": p["array_col"].to_numpy()[in_tissue].astype(int),
        "array_y": p["array_row"].to_numpy()[in_tissue].astype(int),
    })
    obs.index = obs["spot"].to_numpy()
    out = ad.AnnData(X=X[in_tissue].astype(np.float32), obs=obs, var=adata.var.copy())
    out.obsm["spatial"] = xy[in_tissue] * scale
    out.uns["platform"] = "visium"
    out.uns["um_per_px"] = SCALEFACTOR_DIAMETER_UM / (float(sf["spot_diameter_fullres"]) * scale)
    out.uns["dropped_spots"] = pd.DataFrame({"spot": adata.obs_names.to_numpy()[~in_tissue].astype(str),
                                             "reason": "outside_tissue",
                                             "x": xy[~in_tissue, 0] * scale, "y": xy[~in_tissue, 1] * scale})
    return out
