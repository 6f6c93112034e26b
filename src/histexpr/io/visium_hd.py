"""10x Genomics Visium HD (Space Ranger 3 and 4): square bins pooled into square pseudo-spots.

Space Ranger writes one folder per bin size under ``outs/binned_outputs/`` (``square_002um``,
``square_008um``, ``square_016um``), each with::

    filtered_feature_bc_matrix.h5          in-tissue bins x genes
    spatial/tissue_positions.parquet       barcode, in_tissue, array_row, array_col, pxl_row_in_fullres,
                                           pxl_col_in_fullres (every bin of the capture area)
    spatial/scalefactors_json.json         microns_per_pixel, bin_size_um, spot_diameter_fullres, tissue_*_scalef
    spatial/tissue_{hires,lowres}_image.png

The sheet's ``counts`` may name ``outs/``, ``binned_outputs/`` or one ``square_XXXum/`` folder; ``tiling.bin_um``
chooses the bin size. Bins are pooled into pseudo-spots of ``tiling.spot_um`` (a whole number of bins a side) by
summing their counts: pseudo-spot ``(i, j)`` holds the bins with ``array_row // k == i`` and ``array_col // k == j``,
``k = spot_um / bin_um``. A pseudo-spot's centre is the centre of its ``k x k`` block on the affine map from array
to pixel coordinates, fitted on every bin (the bin grid may be turned against the image). Pseudo-spots with
fewer than half their bins under tissue are dropped (``outside_tissue``) and counted.

Read here rather than through spatialdata-io's ``visium_hd``: that reader also needs ``feature_slice.h5`` and
loads every bin size and image into a SpatialData object; we need one bin size's matrix and positions, pooled.
The tests cross-check the two on the same files.
"""

from __future__ import annotations

import logging
import os
import re

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .st import check_counts
from .visium import POSITION_COLUMNS, read_feature_matrix, read_json_object

log = logging.getLogger(__name__)

MIN_TISSUE_BINS = 0.5  # a pseudo-spot is kept when at least this share of its bins is under tissue


def bin_folder(path: str | os.PathLike, bin_um: int) -> str:
    """The ``square_XXXum`` folder of ``bin_um`` under a Space Ranger ``outs/``, ``binned_outputs/`` or bin folder."""
    path = os.fspath(path)
    name = f"square_{int(bin_um):03d}um"
    for candidate in (os.path.join(path, "binned_outputs", name), os.path.join(path, name), path):
        if os.path.basename(os.path.normpath(candidate)) == name and os.path.isdir(candidate):
            return candidate
    if not os.path.isdir(path):
        raise InputError(path, "Visium HD output folder not found")
    root = os.path.join(path, "binned_outputs") if os.path.isdir(os.path.join(path, "binned_outputs")) else path
    found = sorted(d for d in os.listdir(root) if re.fullmatch(r"square_\d{3}um", d))
    if found:
        raise InputError(path, f"no {name}/ for tiling.bin_um {bin_um}; this output has {', '.join(found)}")
    raise InputError(path, "not a Visium HD output: no binned_outputs/square_XXXum/ folder (give outs/, "
                           "binned_outputs/ or one square_XXXum/ folder)")


def hd_files(path: str | os.PathLike, bin_um: int) -> dict:
    folder = bin_folder(path, bin_um)
    spatial = os.path.join(folder, "spatial")
    return {"folder": folder, "matrix": os.path.join(folder, "filtered_feature_bc_matrix.h5"),
            "positions": os.path.join(spatial, "tissue_positions.parquet"),
            "scalefactors": os.path.join(spatial, "scalefactors_json.json")}


def read_parquet_file(path: str, what: str) -> pd.DataFrame:
    """A parquet table, with one :class:`InputError` naming the file when it is missing or unreadable."""
    if not os.path.exists(path):
        raise InputError(path, f"{what} not found")
    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise InputError(path, f"cannot read parquet ({type(err).__name__}: {err})") from None


def read_hd_positions(path: str) -> pd.DataFrame:
    pos = read_parquet_file(path, "Visium HD tissue_positions.parquet")
    missing = [c for c in POSITION_COLUMNS if c not in pos.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    values = pos[POSITION_COLUMNS[1:]].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        raise InputError(path, f"{int(values.isna().any(axis=1).sum())} bin(s) with missing or non-numeric positions")
    pos[POSITION_COLUMNS[1:]] = values
    return pos.set_index("barcode")


def read_hd_scalefactors(path: str, bin_um: int) -> dict:
    sf = read_json_object(path, "Visium HD scalefactors_json.json")
    for key in ("microns_per_pixel", "bin_size_um"):
        v = sf.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
            raise InputError(path, f"{key} is {v!r}: a Visium HD scalefactors_json.json has it as a positive number")
    if abs(float(sf["bin_size_um"]) - bin_um) > 1e-6:
        raise InputError(path, f"bin_size_um is {sf['bin_size_um']}, but the folder is for {bin_um} um bins")
    return sf


def hd_genes(path: str | os.PathLike, bin_um: int) -> list[str]:
    """Gene symbols of a Visium HD matrix, read from the HDF5 features (no counts are loaded)."""
    return h5_genes(hd_files(path, bin_um)["matrix"])


def h5_genes(matrix: str) -> list[str]:
    """Gene Expression feature names of a 10x HDF5 matrix, without loading its counts."""
    import h5py

    if not os.path.exists(matrix):
        raise InputError(matrix, "10x feature-barcode matrix not found")
    with h5py.File(matrix, "r") as f:
        feats = f["matrix/features"]
        names = [n.decode() for n in feats["name"][:]]
        kinds = [k.decode() for k in feats["feature_type"][:]] if "feature_type" in feats else None
    return [n for i, n in enumerate(names) if kinds is None or kinds[i] == "Gene Expression"]


def fit_array_to_pixels(rows: np.ndarray, cols: np.ndarray, x: np.ndarray, y: np.ndarray,
                        max_bins: int = 200_000) -> np.ndarray:
    """Least-squares affine map ``[row, col, 1] @ A -> [x, y]``, ``A (3, 2)``, on up to ``max_bins`` bins."""
    idx = np.arange(len(rows))
    if len(idx) > max_bins:
        idx = np.random.default_rng(0).choice(idx, max_bins, replace=False)
    design = np.column_stack([rows[idx], cols[idx], np.ones(len(idx))]).astype(np.float64)
    A, *_ = np.linalg.lstsq(design, np.column_stack([x[idx], y[idx]]).astype(np.float64), rcond=None)
    return A


def read_visium_hd_sample(path: str | os.PathLike, bin_um: int, spot_um: float, image_scale: float = 1.0) -> ad.AnnData:
    """Pool one Visium HD sample's bins into pseudo-spots (see the module docstring).

    ``obsm["spatial"]`` is in the pixels of the image the sample is tiled from (``image_scale`` times full
    resolution); ``uns["um_per_px"]`` from ``microns_per_pixel``; ``uns["spot_um"]`` the pseudo-spot side;
    ``uns["bins"]`` the bin counts of the log; ``uns["dropped_spots"]`` the pseudo-spots mostly off tissue.
    """
    files = hd_files(path, bin_um)
    k = spot_um / bin_um
    if k < 1 or abs(k - round(k)) > 1e-6:
        raise InputError(files["folder"], f"tiling.spot_um ({spot_um:g}) must be a whole multiple of tiling.bin_um "
                                          f"({bin_um}) to pool bins into square pseudo-spots")
    k = int(round(k))
    sf = read_hd_scalefactors(files["scalefactors"], bin_um)
    pos = read_hd_positions(files["positions"])
    adata = read_feature_matrix(files["matrix"])
    unplaced = adata.obs_names.difference(pos.index)
    if len(unplaced):
        raise InputError(files["matrix"], f"{len(unplaced)} of {adata.n_obs} bin barcode(s) have no position in "
                                          f"{files['positions']} (e.g. {', '.join(unplaced[:3])})")
    X = adata.X.tocsr() if sp.issparse(adata.X) else sp.csr_matrix(adata.X)
    check_counts(X, adata.obs_names, adata.var_names, files["matrix"], row_kind="bin")

    rows, cols = pos["array_row"].to_numpy(np.int64), pos["array_col"].to_numpy(np.int64)
    A = fit_array_to_pixels(rows, cols, pos["pxl_col_in_fullres"].to_numpy(), pos["pxl_row_in_fullres"].to_numpy())
    resid = np.column_stack([rows, cols, np.ones(len(rows))]) @ A - pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    bin_px = float(np.hypot(*A[0]))
    if np.abs(resid).max() > bin_px:
        raise InputError(files["positions"], f"bin positions are not a regular grid: a bin lies "
                                             f"{np.abs(resid).max():.1f} px from the grid fitted on all bins (one bin is "
                                             f"{bin_px:.1f} px)")

    # every bin's pseudo-spot, and each pseudo-spot's share of bins under tissue (from all positions)
    tissue_share = pd.Series(pos["in_tissue"].to_numpy() > 0).groupby([rows // k, cols // k]).sum() / (k * k)
    keys = tissue_share.index
    keep = tissue_share.to_numpy() >= MIN_TISSUE_BINS
    code = pd.Series(np.arange(len(keys)), index=keys)
    p = pos.loc[adata.obs_names]
    bin_code = code.reindex(pd.MultiIndex.from_arrays([p["array_row"].to_numpy(np.int64) // k,
                                                       p["array_col"].to_numpy(np.int64) // k])).to_numpy()
    pool = sp.csr_matrix((np.ones(len(bin_code), np.float32), (bin_code, np.arange(len(bin_code)))),
                         shape=(len(keys), adata.n_obs))
    counts = (pool @ X).tocsr()
    bins_with_counts = np.asarray(pool.sum(1)).ravel()

    bi = np.array([i for i, _ in keys], np.float64)
    bj = np.array([j for _, j in keys], np.float64)
    centre = np.column_stack([bi * k + (k - 1) / 2, bj * k + (k - 1) / 2, np.ones(len(keys))]) @ A * image_scale
    names = np.array([f"hd_{int(i)}_{int(j)}" for i, j in keys])
    obs = pd.DataFrame({"spot": names[keep], "array_x": bj[keep].astype(int), "array_y": bi[keep].astype(int),
                        "n_bins": bins_with_counts[keep].astype(int),
                        "tissue_share": tissue_share.to_numpy()[keep]}, index=names[keep])
    out = ad.AnnData(X=counts[keep].astype(np.float32), obs=obs, var=adata.var.copy())
    out.obsm["spatial"] = centre[keep]
    out.uns["platform"] = "visium_hd"
    out.uns["um_per_px"] = float(sf["microns_per_pixel"]) / image_scale
    out.uns["um_per_px_source"] = "Visium HD microns_per_pixel"
    out.uns["spot_um"] = float(spot_um)
    in_kept = np.isin(bin_code, np.flatnonzero(keep))
    out.uns["bins"] = {"bin_um": int(bin_um), "bins_per_side": k, "positions": int(len(pos)),
                       "in_tissue": int((pos["in_tissue"] > 0).sum()), "with_counts": int(adata.n_obs),
                       "pooled": int(in_kept.sum()), "in_dropped_spots": int((~in_kept).sum()),
                       "median_per_spot": float(np.median(obs["n_bins"])) if len(obs) else 0.0}
    out.uns["dropped_spots"] = pd.DataFrame({"spot": names[~keep], "reason": "outside_tissue",
                                             "x": centre[~keep, 0], "y": centre[~keep, 1]})
    log.info("%s: %d bins of %d um (%d under tissue, %d with a count) pooled into %d pseudo-spots of %g um "
             "(%d x %d bins; median %g bins with a count each); %d pseudo-spot(s) with under %d%% of their bins "
             "under tissue dropped (%d bins with counts in them)", files["folder"], len(pos), bin_um,
             out.uns["bins"]["in_tissue"], adata.n_obs, int(keep.sum()), spot_um, k, k,
             out.uns["bins"]["median_per_spot"], int((~keep).sum()), int(100 * MIN_TISSUE_BINS),
             out.uns["bins"]["in_dropped_spots"])
    if not keep.any():
        raise InputError(files["positions"], f"no pseudo-spot of {spot_um:g} um has half its bins under tissue")
    return out
