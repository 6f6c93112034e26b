"""Legacy Spatial Transcriptomics (ST) samples: the ST pipeline's, STUtility's and HER2ST's layouts.

A sample is three files:

* counts: ``spots x genes`` raw counts (``.tsv``/``.tsv.gz``; comma-separated
  files are read too); the first column holds the spot id ``f"{x}x{y}"`` built
  from array coordinates. The matrix may list only the spots under tissue
  (HER2ST) or every spot of the array (the ST pipeline, STUtility's examples);
* spots: a ``*_selection.tsv`` table from the ST spot detector with array
  ``x``, ``y``, full-resolution ``pixel_x``, ``pixel_y`` and optionally
  ``selected`` (1 = under tissue);
* the H&E image (read elsewhere, see :mod:`histexpr.io.image`).

Count rows of unselected spots, or with no position at all, are dropped and
counted; drawn spots keep their reason in ``uns["dropped_spots"]`` for the
spot-QC figure. ``pixel_scale`` multiplies the spot file's pixel coordinates to
reach the image's pixels (HER2ST's A1 image in ``app/www/imgs`` is a
2000-px-wide copy of a 6954-px original, scale 2000/6954).
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


def _separator(path: str, what: str) -> str:
    """Tab, or comma for a comma-separated file (logged): read from the header line."""
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read {what} ({err})") from None
    if not first.strip():
        raise InputError(path, f"{what} is empty (no header line)")
    if "\t" not in first and "," in first:
        log.info("%s: comma-separated %s", path, what)
        return ","
    return "\t"


def read_spot_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a spot selection file; every spot, indexed by ``XxY`` id, with a boolean ``selected`` column."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "spot file not found")
    try:
        spots = pd.read_csv(path, sep=_separator(path, "spot table"))
    except InputError:
        raise
    except Exception as err:
        raise InputError(path, f"cannot parse spot table ({err})") from None
    missing = [c for c in SPOT_COLUMNS if c not in spots.columns]
    if not missing and spots.empty:
        raise InputError(path, "spot table has a header but no rows")
    if missing:
        raise InputError(path, f"spot table lacks column(s) {', '.join(missing)}; "
                               f"expected {', '.join(SPOT_COLUMNS)} (found {', '.join(map(str, spots.columns))})")
    bad = spots[list(SPOT_COLUMNS)].apply(pd.to_numeric, errors="coerce").isna().any(axis=1)
    if bad.any():
        raise InputError(path, f"{int(bad.sum())} spot row(s) have missing or non-numeric coordinates "
                               f"(first at line {int(np.flatnonzero(bad.to_numpy())[0]) + 2})")
    spots[list(SPOT_COLUMNS)] = spots[list(SPOT_COLUMNS)].apply(pd.to_numeric)
    if "selected" in spots.columns:
        sel = pd.to_numeric(spots["selected"], errors="coerce")
        if sel.isna().any():
            i = int(np.flatnonzero(sel.isna().to_numpy())[0])
            raise InputError(path, f"column 'selected' must be 0 or 1; line {i + 2} has {spots['selected'].iloc[i]!r}")
        spots["selected"] = sel.to_numpy() > 0
    else:
        spots["selected"] = True
    ids = spots["x"].round().astype(int).astype(str) + "x" + spots["y"].round().astype(int).astype(str)
    if ids.duplicated().any():
        raise InputError(path, f"duplicate spot id(s) {', '.join(ids[ids.duplicated()].unique()[:5])}")
    return spots.assign(spot=ids.to_numpy()).set_index("spot")


def read_count_header(path: str | os.PathLike) -> list[str]:
    """The gene names of a count table, from its header line alone (duplicates are an error)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "counts file not found")
    sep = _separator(path, "count table")
    head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0, 1:]
    genes = pd.Index(head.astype(str).str.strip())
    if len(genes) == 0:
        raise InputError(path, "count table has no gene column (one column only: wrong separator?)")
    if genes.duplicated().any():
        dup = genes[genes.duplicated()].unique()
        first = int(np.flatnonzero(genes == dup[0])[0]) + 2
        raise InputError(path, f"{len(dup)} duplicate gene name(s) in the header, e.g. {', '.join(dup[:5])} "
                               f"(column {first} and later); merge or rename them so each gene is one column")
    return genes.tolist()


def read_count_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``spots x genes`` count table; check it holds finite, non-negative, whole counts."""
    path = os.fspath(path)
    genes = read_count_header(path)
    try:
        counts = pd.read_csv(path, sep=_separator(path, "count table"), index_col=0)
    except Exception as err:
        raise InputError(path, f"cannot parse count table ({err})") from None
    if counts.shape[0] == 0 or counts.shape[1] == 0:
        raise InputError(path, f"count table is empty ({counts.shape[0]} spots x {counts.shape[1]} genes)")
    if counts.shape[1] != len(genes):
        raise InputError(path, f"the header names {len(genes)} gene(s) but the rows hold {counts.shape[1]} count "
                               f"column(s) after the spot id: a header cell missing or extra (the header's first "
                               f"cell is the spot-id column's name, possibly empty)")
    counts.columns = genes
    counts.index = counts.index.astype(str)
    if counts.index.duplicated().any():
        raise InputError(path, f"duplicate spot id(s) {', '.join(counts.index[counts.index.duplicated()][:5])}")
    values = counts.apply(pd.to_numeric, errors="coerce")
    arr = values.to_numpy(dtype=np.float64)
    check_counts(arr, values.index, values.columns, path, "spot")
    return values


MAX_COUNT = 2**31 - 1  # per spot and gene; above it a count is not a count (and float32 loses whole numbers)


def check_counts(arr, rows, cols, path: str, row_kind: str = "spot") -> None:
    """Raw counts are finite, non-negative whole numbers: one error naming the file and the first bad cell.

    ``arr`` is a dense ``(rows, cols)`` array or a scipy sparse matrix (only stored values are checked)."""
    if sp.issparse(arr):
        coo = arr.tocoo()
        data, where = coo.data, lambda k: (coo.row[k], coo.col[k])
    else:
        data = np.asarray(arr, dtype=np.float64)
        shape = data.shape
        where = lambda k: np.unravel_index(k, shape)  # noqa: E731
    data = data.ravel()

    def first(bad: np.ndarray) -> str:
        k = int(np.flatnonzero(bad)[0])
        r, c = where(k)
        return f"{row_kind} {rows[int(r)]}, gene {cols[int(c)]}: {float(data[k])!r}"

    finite = np.isfinite(data)
    huge = finite & (np.abs(data) > MAX_COUNT)
    if huge.any():
        raise InputError(path, f"{int(huge.sum())} count(s) above {MAX_COUNT:,}, e.g. {first(huge)}: no sequencing "
                               f"count is that large (a corrupted file, or values that are not counts?); they would "
                               f"overflow the float32 store")
    if not finite.all():
        nan = np.isnan(data)
        if nan.any():
            raise InputError(path, f"{int(nan.sum())} missing (NaN) or non-numeric count(s), e.g. {first(nan)}")
        raise InputError(path, f"{int((~finite).sum())} infinite count(s), e.g. {first(~finite)}")
    if data.min(initial=0) < 0:
        neg = data < 0
        raise InputError(path, f"{int(neg.sum())} negative count(s), e.g. {first(neg)}; histexpr needs raw counts")
    frac = data != np.round(data)
    if frac.any():
        raise InputError(path, f"{int(frac.sum())} count(s) are not whole numbers, e.g. {first(frac)}: this looks "
                               f"like normalised or log-transformed data; give the raw (integer) counts, histexpr "
                               f"normalises them itself")


def join_counts_and_spots(counts: pd.DataFrame, spots: pd.DataFrame, counts_path: str,
                          spots_path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join count rows to selected spot positions by id.

    Returns ``(placed, dropped)``: the spot rows of the kept count rows (in
    count order), and the count rows that were dropped with ``reason``
    (``unselected``: the spot is not under tissue; ``no_position``: the id is
    not in the spot file) and their pixel position where known. Selected spots
    with no count row are listed as ``no_counts``.
    """
    selected = spots.index[spots["selected"].to_numpy()]
    if len(selected) == 0:
        raise InputError(spots_path, f"no spot is selected (column 'selected' is 0 on all {len(spots)} rows); "
                                     f"mark the spots under tissue with 1")
    ids = counts.index
    in_file = ids.isin(spots.index)
    if not ids.isin(selected).any():
        if in_file.any():
            raise InputError(counts_path, f"none of the {len(ids)} count rows is a selected spot of {spots_path} "
                                          f"({int(in_file.sum())} match unselected spots): wrong spot file?")
        raise InputError(counts_path, f"no count row id matches a spot in {spots_path} "
                                      f"(count ids look like {', '.join(ids[:3])}; "
                                      f"spot ids are built as '{{x}}x{{y}}', e.g. {', '.join(selected[:3])})")
    keep = ids.isin(selected)
    unselected, no_position = ids[in_file & ~keep], ids[~in_file]
    if len(unselected):
        log.info("%s: %d of %d count row(s) are unselected spots (not under tissue) and are dropped",
                 counts_path, len(unselected), len(ids))
    if len(no_position):
        log.warning("%s: %d of %d count row(s) have no position in %s and are dropped: %s", counts_path,
                    len(no_position), len(ids), spots_path, ", ".join(no_position[:10]))
    no_counts = selected.difference(ids)
    if len(no_counts):
        log.info("%s: %d selected spot(s) have no count row and are dropped: %s", spots_path, len(no_counts),
                 ", ".join(no_counts[:10]))
    dropped = pd.concat([
        pd.DataFrame({"spot": unselected, "reason": "unselected"}),
        pd.DataFrame({"spot": no_counts, "reason": "no_counts"}),
        pd.DataFrame({"spot": no_position, "reason": "no_position"}),
    ], ignore_index=True)
    known = dropped["spot"].isin(spots.index)
    dropped["pixel_x"] = np.where(known, spots["pixel_x"].reindex(dropped["spot"]).to_numpy(), np.nan)
    dropped["pixel_y"] = np.where(known, spots["pixel_y"].reindex(dropped["spot"]).to_numpy(), np.nan)
    return spots.loc[ids[keep]], dropped


def dropped_table(dropped: pd.DataFrame, scale: float = 1.0) -> pd.DataFrame:
    """Dropped spots as stored in ``uns["dropped_spots"]``: ``spot``, ``reason``, ``x``, ``y`` (image px)."""
    return pd.DataFrame({"spot": dropped["spot"].astype(str).to_numpy(), "reason": dropped["reason"].astype(str).to_numpy(),
                         "x": dropped["pixel_x"].to_numpy(dtype=np.float64) * scale,
                         "y": dropped["pixel_y"].to_numpy(dtype=np.float64) * scale})


def read_st_sample(counts_path: str | os.PathLike, spots_path: str | os.PathLike, pixel_scale: float = 1.0) -> ad.AnnData:
    """Read one legacy-ST sample into AnnData (raw counts of the selected spots).

    Returns AnnData with ``obs``: ``spot``, ``array_x``, ``array_y``;
    ``obsm["spatial"]``: ``(n, 2)`` image pixel coordinates (x, y) after
    ``pixel_scale``; ``X``: CSR float32 counts; ``uns["dropped_spots"]``: the
    count rows and spots left out, with their reason (see
    :func:`join_counts_and_spots`).
    """
    counts_path, spots_path = os.fspath(counts_path), os.fspath(spots_path)
    spots = read_spot_table(spots_path)
    counts = read_count_table(counts_path)
    placed, dropped = join_counts_and_spots(counts, spots, counts_path, spots_path)
    counts = counts.loc[placed.index]
    obs = pd.DataFrame({
        "spot": placed.index.to_numpy(),
        "array_x": placed["x"].round().astype(int).to_numpy(),
        "array_y": placed["y"].round().astype(int).to_numpy(),
    })
    obs.index = obs["spot"].to_numpy()
    xy = placed[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64) * float(pixel_scale)
    adata = ad.AnnData(X=sp.csr_matrix(counts.to_numpy(dtype=np.float32)), obs=obs,
                       var=pd.DataFrame(index=counts.columns.astype(str)))
    adata.obsm["spatial"] = xy
    adata.uns["platform"] = "st"
    adata.uns["dropped_spots"] = dropped_table(dropped, float(pixel_scale))
    return adata
