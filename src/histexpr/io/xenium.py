"""10x Genomics Xenium: cells pooled into square pseudo-spots in the frame of a post-run H&E image.

A Xenium output bundle holds::

    experiment.xenium           JSON; pixel_size (um per morphology-image pixel, 0.2125)
    cell_feature_matrix.h5      cells x genes (10x HDF5; only Gene Expression features are kept)
    cells.parquet               cell_id, x_centroid, y_centroid (um), ...

and the H&E stained after the run is registered to it by a 3 x 3 affine matrix (Xenium Explorer's
``*_imagealignment.csv``, the file spatialdata-io's ``xenium_aligned_image`` reads) that maps H&E pixels
``(x, y, 1)`` to morphology-image pixels. The sheet's ``counts`` names the bundle, ``image`` the H&E and
``spots`` the alignment file.

Each cell's centroid goes to H&E pixels by ``A^-1 [x_um / pixel_size, y_um / pixel_size, 1]``. Pseudo-spots are
squares of ``tiling.spot_um`` on the H&E's pixel grid (origin at its corner; side ``spot_um / um_per_px``, the
H&E's pixel size being ``pixel_size * sqrt(|det A|)``); a pseudo-spot sums the counts of the cells whose centroid
falls in it, and sits at its square's centre. Squares holding fewer than ``MIN_CELLS`` cells are dropped and
counted. Read here, not through spatialdata-io's ``xenium``, which loads the morphology images and boundaries
too; the tests cross-check the two on the same files.
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
from .visium import read_feature_matrix, read_json_object
from .visium_hd import read_parquet_file

log = logging.getLogger(__name__)

MIN_CELLS = 1  # a pseudo-spot needs at least this many cells


def read_alignment(path: str | os.PathLike) -> np.ndarray:
    """The 3 x 3 affine H&E pixels -> morphology pixels (comma-separated, no header)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "Xenium image alignment file not found (Xenium Explorer's *_imagealignment.csv)")
    try:
        A = pd.read_csv(path, header=None).to_numpy(np.float64)
    except Exception as err:
        raise InputError(path, f"cannot parse the alignment matrix ({type(err).__name__}: {err})") from None
    if A.shape != (3, 3) or not np.isfinite(A).all():
        raise InputError(path, f"an alignment matrix is 3 x 3 numbers; found {A.shape[0]} x {A.shape[1]}")
    if not np.allclose(A[2], [0, 0, 1]) or abs(np.linalg.det(A[:2, :2])) < 1e-9:
        raise InputError(path, f"not an invertible affine matrix (last row {A[2].tolist()}, determinant "
                               f"{np.linalg.det(A[:2, :2]):.3g})")
    return A


def read_xenium_cells(bundle: str | os.PathLike) -> tuple[ad.AnnData, np.ndarray, float]:
    """``(cells x genes counts, centroids (n, 2) in um, um per morphology pixel)`` of a Xenium bundle."""
    bundle = os.fspath(bundle)
    if not os.path.isdir(bundle):
        raise InputError(bundle, "Xenium output folder not found")
    specs = read_json_object(os.path.join(bundle, "experiment.xenium"), "Xenium experiment.xenium")
    ps = specs.get("pixel_size")
    if isinstance(ps, bool) or not isinstance(ps, (int, float)) or not 0 < ps < float("inf"):
        raise InputError(os.path.join(bundle, "experiment.xenium"), f"pixel_size is {ps!r}: a positive number of um")
    cells_path = os.path.join(bundle, "cells.parquet")
    cells = read_parquet_file(cells_path, "Xenium cells.parquet")
    missing = [c for c in ("cell_id", "x_centroid", "y_centroid") if c not in cells.columns]
    if missing:
        raise InputError(cells_path, f"missing column(s) {', '.join(missing)}")
    adata = read_feature_matrix(os.path.join(bundle, "cell_feature_matrix.h5"))
    ids = cells["cell_id"].map(lambda v: v.decode() if isinstance(v, bytes) else str(v))
    pos = pd.DataFrame(cells[["x_centroid", "y_centroid"]].to_numpy(np.float64), index=ids.to_numpy())
    unplaced = adata.obs_names.difference(pos.index)
    if len(unplaced):
        raise InputError(os.path.join(bundle, "cell_feature_matrix.h5"),
                         f"{len(unplaced)} cell(s) have no centroid in {cells_path} (e.g. {', '.join(unplaced[:3])})")
    return adata, pos.loc[adata.obs_names].to_numpy(), float(ps)


def read_xenium_sample(bundle: str | os.PathLike, alignment: str | os.PathLike, spot_um: float,
                       image_scale: float = 1.0) -> ad.AnnData:
    """Pool a Xenium bundle's cells into pseudo-spots in the H&E's pixels (see the module docstring)."""
    A = read_alignment(alignment)
    cells, um_xy, ps = read_xenium_cells(bundle)
    X = cells.X.tocsr() if sp.issparse(cells.X) else sp.csr_matrix(cells.X)
    check_counts(X, cells.obs_names, cells.var_names, os.path.join(os.fspath(bundle), "cell_feature_matrix.h5"),
                 row_kind="cell")
    morph = np.column_stack([um_xy / ps, np.ones(len(um_xy))])
    he = (np.linalg.inv(A) @ morph.T).T[:, :2]  # H&E pixels (x, y)
    um_per_px = ps * float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    side = spot_um / um_per_px
    ij = np.floor(he / side).astype(np.int64)  # (col, row) of each cell's square
    keys, code = np.unique(ij, axis=0, return_inverse=True)
    code = code.ravel()
    pool = sp.csr_matrix((np.ones(len(code), np.float32), (code, np.arange(len(code)))), shape=(len(keys), len(code)))
    n_cells = np.bincount(code, minlength=len(keys))
    keep = n_cells >= MIN_CELLS
    centre = (keys + 0.5) * side * image_scale
    names = np.array([f"xe_{i}_{j}" for i, j in keys])
    obs = pd.DataFrame({"spot": names[keep], "array_x": keys[keep, 0], "array_y": keys[keep, 1],
                        "n_cells": n_cells[keep]}, index=names[keep])
    out = ad.AnnData(X=(pool @ X).tocsr()[keep].astype(np.float32), obs=obs, var=cells.var.copy())
    out.obsm["spatial"] = centre[keep]
    out.uns.update(platform="xenium", um_per_px=um_per_px / image_scale, spot_um=float(spot_um),
                   um_per_px_source="Xenium pixel_size and the H&E alignment")
    out.uns["bins"] = {"cells": int(len(code)), "pseudo_spots": int(keep.sum()),
                       "median_cells_per_spot": float(np.median(n_cells[keep])) if keep.any() else 0.0}
    out.uns["dropped_spots"] = pd.DataFrame({"spot": names[~keep], "reason": "low_counts",
                                             "x": centre[~keep, 0], "y": centre[~keep, 1]})
    log.info("%s: %d cells pooled into %d pseudo-spots of %g um (%.1f H&E px; median %g cells each); H&E %.4f um/px "
             "from pixel_size %g and the alignment %s", bundle, len(code), int(keep.sum()), spot_um, side,
             out.uns["bins"]["median_cells_per_spot"], um_per_px, ps, alignment)
    return out
