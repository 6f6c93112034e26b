"""Legacy Spatial Transcriptomics (ST) samples in the HER2ST repository's layout.

A sample is three files:

* counts: ``spots x genes`` raw counts (``.tsv`` or ``.tsv.gz``); the first
  column holds the spot id ``f"{x}x{y}"`` built from array coordinates;
* spots: a ``*_selection.tsv`` table with array ``x``, ``y``, full-resolution
  ``pixel_x``, ``pixel_y`` and optionally ``selected`` (0/1);
* the H&E image (read elsewhere, see :mod:`histexpr.io.image`).

``pixel_scale`` multiplies the spot file's pixel coordinates to reach the
image's pixels (HER2ST's A1 image in ``app/www/imgs`` is a 2000-px-wide copy of
a 6954-px original, scale 2000/6954).
"""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError

log = logging.getLogger(__name__)

SPOT_COLUMNS = ("x", "y", "pixel_x", "pixel_y")


def read_spot_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a spot selection file; return the selected spots indexed by ``XxY`` id."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "spot file not found")
    try:
        spots = pd.read_csv(path, sep="\t")
    except Exception as err:
        raise InputError(path, f"cannot parse spot table ({err})") from None
    missing = [c for c in SPOT_COLUMNS if c not in spots.columns]
    if missing:
        raise InputError(path, f"spot table lacks column(s) {', '.join(missing)}; "
                               f"expected {', '.join(SPOT_COLUMNS)} (found {', '.join(map(str, spots.columns))})")
    bad = spots[list(SPOT_COLUMNS)].apply(pd.to_numeric, errors="coerce").isna().any(axis=1)
    if bad.any():
        raise InputError(path, f"{int(bad.sum())} spot row(s) have missing or non-numeric coordinates "
                               f"(first at line {int(np.flatnonzero(bad.to_numpy())[0]) + 2})")
    if "selected" in spots.columns:
        n_before = len(spots)
        spots = spots[spots["selected"].astype(float) > 0]
        if len(spots) < n_before:
            log.info("%s: %d unselected spot(s) ignored", path, n_before - len(spots))
    ids = spots["x"].round().astype(int).astype(str) + "x" + spots["y"].round().astype(int).astype(str)
    if ids.duplicated().any():
        raise InputError(path, f"duplicate spot id(s) {', '.join(ids[ids.duplicated()].unique()[:5])}")
    spots = spots.assign(spot=ids.to_numpy()).set_index("spot")
    return spots


def read_count_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``spots x genes`` count table; check it is finite and non-negative."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "counts file not found")
    try:
        counts = pd.read_csv(path, sep="\t", index_col=0)
    except Exception as err:
        raise InputError(path, f"cannot parse count table ({err})") from None
    if counts.shape[0] == 0 or counts.shape[1] == 0:
        raise InputError(path, f"count table is empty ({counts.shape[0]} spots x {counts.shape[1]} genes)")
    counts.index = counts.index.astype(str)
    if counts.index.duplicated().any():
        raise InputError(path, f"duplicate spot id(s) {', '.join(counts.index[counts.index.duplicated()][:5])}")
    values = counts.apply(pd.to_numeric, errors="coerce")
    n_nan = int(values.isna().to_numpy().sum())
    if n_nan:
        rows = values.index[values.isna().any(axis=1)][:3]
        raise InputError(path, f"{n_nan} missing (NaN) or non-numeric count(s), e.g. in spot(s) {', '.join(rows)}")
    if (values.to_numpy() < 0).any():
        raise InputError(path, "negative counts")
    return values


def join_counts_and_spots(counts: pd.DataFrame, spots: pd.DataFrame, counts_path: str, spots_path: str) -> pd.DataFrame:
    """Join count rows to spot positions by id; spots without counts are dropped.

    Count rows with no selected spot position cannot be placed on the image, so
    any such row is an error that names both files.
    """
    unplaced = counts.index.difference(spots.index)
    if len(unplaced) == len(counts.index):
        raise InputError(counts_path, f"no count row id matches a spot in {spots_path} "
                                      f"(count ids look like {', '.join(counts.index[:3])}; "
                                      f"spot ids are built as '{{x}}x{{y}}', e.g. {', '.join(spots.index[:3])})")
    if len(unplaced):
        raise InputError(counts_path, f"{len(unplaced)} of {len(counts.index)} count row(s) have no selected spot in "
                                      f"{spots_path}: {', '.join(unplaced[:5])}")
    no_counts = spots.index.difference(counts.index)
    if len(no_counts):
        log.info("%s: %d spot(s) have no count row and are dropped: %s", spots_path, len(no_counts),
                 ", ".join(no_counts[:10]))
    return spots.loc[counts.index]


def read_st_sample(counts_path: str | os.PathLike, spots_path: str | os.PathLike, pixel_scale: float = 1.0) -> ad.AnnData:
    """Read one legacy-ST sample into AnnData (raw counts).

    Returns AnnData with ``obs``: ``spot``, ``array_x``, ``array_y``;
    ``obsm["spatial"]``: ``(n, 2)`` image pixel coordinates (x, y) after
    ``pixel_scale``; ``X``: CSR float32 counts.
    """
    counts_path, spots_path = os.fspath(counts_path), os.fspath(spots_path)
    spots = read_spot_table(spots_path)
    counts = read_count_table(counts_path)
    placed = join_counts_and_spots(counts, spots, counts_path, spots_path)
    obs = pd.DataFrame({
        "spot": placed.index.to_numpy(),
        "array_x": placed["x"].round().astype(int).to_numpy(),
        "array_y": placed["y"].round().astype(int).to_numpy(),
    })
    obs.index = obs["spot"].to_numpy()
    xy = placed[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64) * float(pixel_scale)
    adata = ad.AnnData(X=sp.csr_matrix(counts.to_numpy(dtype=np.float32)), obs=obs,
                       var=pd.DataFrame(index=counts.columns.astype(str)))
    adata.var_names_make_unique()
    adata.obsm["spatial"] = xy
    adata.uns["platform"] = "st"
    return adata
