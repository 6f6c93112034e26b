"""Sample sheets: one row per tissue section.

Columns: ``sample`` (unique id), ``patient``, ``image``, ``counts``, ``spots``,
and optionally ``format`` (``st`` default, ``visium``, or ``visium_hd``: ``counts`` names the Space Ranger
``outs/`` or ``binned_outputs/`` folder, ``spots`` may stay empty; or ``hest``: ``counts`` names a HEST-1k root
or one ``st/<id>.h5ad``, ``spots`` and ``image`` may stay empty; or ``xenium``: ``counts`` names the Xenium
output folder, ``image`` the post-run H&E, ``spots`` its alignment matrix; or ``spatialdata``: ``counts`` names a
``.zarr`` store or ``<store>.zarr/tables/<name>``, ``spots`` and ``image`` optionally its shapes and image elements,
``platform`` required), ``platform`` (``st_1k``,
``st_2k`` or ``visium``: the array design; else read off the array coordinates,
and checked against them), ``split`` (``train``/``test`` on every row: a fixed
external test set instead of cross-validation), ``um_per_px`` (micrometres per
image pixel; else read from the image or estimated from the spot grid) and
``pixel_scale`` (multiplies the spot file's pixel coordinates to reach the
image's pixels, default 1). Relative paths are relative to the
sheet's own folder.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from typing import TYPE_CHECKING

import pandas as pd

from ..config import validate_records
from ..errors import InputError

if TYPE_CHECKING:
    import anndata as ad

# The readers are imported where they are used: the workflow reads sheets when it is parsed, and a dry run
# should not pay for anndata, the image stack and the 10x readers.
log = logging.getLogger(__name__)

SHEET_COLUMNS = ["sample", "patient", "image", "counts", "spots", "format", "platform", "um_per_px", "pixel_scale",
                 "split"]
# the array designs a format holds (``platform``; empty = read off the coordinates)
FORMAT_PLATFORMS = {"st": ("st_1k", "st_2k"), "visium": ("visium",), "visium_hd": ("visium_hd",),
                    "xenium": ("xenium",), "hest": ("st_1k", "st_2k", "visium", "visium_hd"),
                    "spatialdata": ("visium", "st_1k", "st_2k")}
NO_SPOT_FILE = ("visium_hd", "hest", "spatialdata")  # formats whose positions sit beside the counts: spots may stay empty

# The HER2ST repository ships a downscaled copy of some sections in app/www/imgs;
# its spot files stay in full-resolution pixels. Widths of the originals:
HER2ST_APP_IMAGE_FULL_WIDTH = {"A1": 6954}


def _resolve(base: str, p) -> str | None:
    if p is None or (isinstance(p, float) and p != p) or p == "":
        return None
    p = os.path.expanduser(str(p))
    return os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))


def _number(path: str, i: int, sample, col: str, value: str) -> float | None:
    """A sheet cell that must be a number: empty is None, anything unparsable is an error (never a default)."""
    value = value.strip()
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        hint = " (a decimal comma? write it with a point, e.g. 2.96)" if value.replace(",", "", 1).isdigit() else ""
        raise InputError(path, f"row {i + 1} (sample {sample!r}): column {col!r} must be a number, "
                               f"got {value!r}{hint}") from None
    if not math.isfinite(number):
        raise InputError(path, f"row {i + 1} (sample {sample!r}): column {col!r} must be a finite number, "
                               f"got {value!r}")
    return number


def _read_table(path: str, sep: str) -> pd.DataFrame:
    """A sheet as strings. Cells are never read as missing (``NA`` is an id like any other); trailing empty
    cells (a tab at the end of each row) are dropped; ``#`` starts a comment; a byte-order mark is ignored; a
    row with more cells than the header is an error."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's byte-order mark
        rows = [r for r in csv.reader(fh, delimiter=sep) if r and not r[0].lstrip().startswith("#")]
    # a cell that starts with '#' comments out the rest of its row (as pandas' comment='#' did)
    rows = [r[:next((i for i, c in enumerate(r) if c.lstrip().startswith("#")), len(r))] for r in rows]
    if not rows:
        raise InputError(path, "sample sheet is empty")
    while rows[0] and rows[0][-1].strip() == "":
        rows[0].pop()
    header, body = [c.strip() for c in rows[0]], []
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise InputError(path, f"column(s) {', '.join(dup)} appear twice in the header")
    for line, r in enumerate(rows[1:], start=2):
        while len(r) > len(header) and r[-1].strip() == "":
            r.pop()
        if len(r) > len(header):
            raise InputError(path, f"line {line} has {len(r)} cells but the header names {len(header)} columns "
                                   f"({', '.join(header)}); a value without a column")
        if any(c.strip() for c in r):
            body.append([c.strip() for c in r] + [""] * (len(header) - len(r)))
    return pd.DataFrame(body, columns=header, dtype=str)


def load_sample_sheet(path: str | os.PathLike, schema=None, check_files: bool = True) -> pd.DataFrame:
    """Read, validate and complete a sample sheet (TSV or CSV).

    Raises :class:`InputError` naming the sheet for unknown columns, duplicate
    samples, bad values and missing files.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "sample sheet not found")
    sep = "," if path.endswith(".csv") else "\t"
    try:
        df = _read_table(path, sep)
    except InputError:
        raise
    except Exception as err:
        raise InputError(path, f"cannot parse sample sheet ({err})") from None
    unknown = [c for c in df.columns if c not in SHEET_COLUMNS]
    if unknown:
        raise InputError(path, f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(SHEET_COLUMNS)}")
    if df.empty:
        raise InputError(path, "sample sheet has no rows")
    for col in ("um_per_px", "pixel_scale"):
        if col in df.columns:
            df[col] = [_number(path, i, r, col, v) for i, (r, v) in enumerate(zip(df.get("sample", df.index), df[col]))]
    return complete_sheet(df.to_dict("records"), path, schema=schema, check_files=check_files)


def complete_sheet(records: list[dict], path: str, schema=None, check_files: bool = True) -> pd.DataFrame:
    """Validate sheet rows, fill the defaults and resolve paths against ``path``'s folder."""
    if schema is not None:
        records = validate_records(records, schema, path)
    out = pd.DataFrame.from_records(records)
    for col, default in (("format", "st"), ("platform", ""), ("um_per_px", None), ("pixel_scale", 1.0),
                         ("image", None), ("spots", None), ("split", "")):
        if col not in out.columns:
            out[col] = default
        out[col] = out[col].where(out[col].notna(), default) if default is not None else out[col]
    dup = out["sample"][out["sample"].duplicated()]
    if len(dup):
        raise InputError(path, f"duplicate sample id(s): {', '.join(dup.unique())}")
    split = out["split"].fillna("").astype(str)
    if (split != "").any():
        if (split == "").any():
            raise InputError(path, f"column 'split' is empty for sample(s) {', '.join(out['sample'][split == ''])}; "
                                   f"give every row train or test (or leave the column out for cross-validation)")
        if not {"train", "test"} <= set(split):
            raise InputError(path, "column 'split' needs at least one train and one test sample")
    out["split"] = split
    out["platform"] = out["platform"].fillna("").astype(str)
    for i, (sample, fmt, platform) in enumerate(zip(out["sample"], out["format"], out["platform"])):
        if fmt == "spatialdata" and not platform:
            raise InputError(path, f"row {i + 1} (sample {sample!r}): a spatialdata row needs its array design in "
                                   f"the platform column ({', '.join(FORMAT_PLATFORMS[fmt])})")
        if platform and platform not in FORMAT_PLATFORMS.get(fmt, ()):
            raise InputError(path, f"row {i + 1} (sample {sample!r}): platform {platform!r} is not a {fmt!r} array "
                                   f"design (format {fmt!r} takes {' or '.join(FORMAT_PLATFORMS.get(fmt, ()))})")
    base = os.path.dirname(path)
    for col in ("image", "counts", "spots"):
        out[col] = [_resolve(base, v) for v in out[col]] if col in out else None
    hd = out["format"].isin(NO_SPOT_FILE)
    out.loc[hd, "spots"] = out.loc[hd, "spots"].where(out.loc[hd, "spots"].notna(), out.loc[hd, "counts"])
    for _, row in out.iterrows():
        for col in ("counts", "spots"):
            if row[col] is None:
                raise InputError(path, f"sample {row['sample']!r}: column {col!r} is empty")
        if row["image"] is None and row["format"] not in ("visium", "visium_hd", "hest", "spatialdata"):
            raise InputError(path, f"sample {row['sample']!r}: column 'image' is empty")
        if check_files:
            for col in ("image", "counts", "spots"):
                if row[col] is not None and not os.path.exists(row[col]):
                    raise InputError(path, f"sample {row['sample']!r}: {col} file {row[col]} not found")
    return out[SHEET_COLUMNS]


def build_her2st_sheet(root: str | os.PathLike, measure_app_images: bool = True) -> pd.DataFrame:
    """Build a sample sheet from a clone of almaan/her2st (sections with an image).

    ``measure_app_images=False`` leaves ``pixel_scale`` at 1 for the downscaled app images (no image is
    opened): enough for the list of samples the workflow plans at parse time.
    """
    root = os.fspath(root)
    cnt_dir = os.path.join(root, "data", "ST-cnts")
    if not os.path.isdir(cnt_dir):
        raise InputError(root, "not a HER2ST data root: data/ST-cnts/ is missing")
    rows = []
    for counts in sorted(glob.glob(os.path.join(cnt_dir, "*.tsv*"))):
        section = os.path.basename(counts).split(".")[0]
        spots = os.path.join(root, "data", "ST-spotfiles", f"{section}_selection.tsv")
        if not os.path.exists(spots):
            log.warning("HER2ST %s: no spot file %s; skipped", section, spots)
            continue
        images = sorted(glob.glob(os.path.join(root, "data", "ST-imgs", section[0], section, "*.jpg")))
        scale = 1.0
        if not images and section in HER2ST_APP_IMAGE_FULL_WIDTH:
            images = sorted(glob.glob(os.path.join(root, "app", "www", "imgs", f"{section}_HE_image*.png")))
            if images and measure_app_images:
                from .image import open_image

                with open_image(images[0]) as slide:
                    scale = slide.width / HER2ST_APP_IMAGE_FULL_WIDTH[section]
        if not images:
            log.info("HER2ST %s: no H&E image present; skipped", section)
            continue
        rows.append({"sample": section, "patient": section[0], "image": images[0], "counts": counts,
                     "spots": spots, "format": "st", "platform": "st_1k", "um_per_px": None, "pixel_scale": scale, "split": ""})
    if not rows:
        raise InputError(root, "no HER2ST section has counts, a spot file and an H&E image")
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)


def sample_image(row, bin_um: int = 8) -> tuple[str, float, str]:
    """The image a sheet row is tiled from: ``(path, scale, source)``; ``scale`` maps the counts' native
    pixel coordinates (Visium: full resolution) onto it before ``pixel_scale``."""
    if row["image"]:
        return row["image"], 1.0, "sample sheet"
    if row["format"] == "hest":
        from .hest import hest_files

        return hest_files(row["counts"], row["sample"])["wsi"], 1.0, "HEST wsis/"
    if row["format"] == "spatialdata":
        from .spatialdata_in import read_spatialdata_sample

        spots = row["spots"] if row["spots"] != row["counts"] else None
        return read_spatialdata_sample(row["counts"], spots, None, row["platform"])[1], 1.0, "the store's image"
    if row["format"] not in ("visium", "visium_hd"):
        raise InputError(None, f"sample {row['sample']!r}: no image")
    from .visium import visium_image

    spots = row["spots"]
    if row["format"] == "visium_hd":
        from .visium_hd import hd_files

        spots = hd_files(row["counts"], bin_um)["positions"]
    path, name, scale = visium_image(spots)
    return path, scale, f"Space Ranger {name} image"


def sample_genes(row, bin_um: int = 8) -> list[str]:
    """A sheet row's gene names, read cheaply (the count table's header; the 10x matrix's features)."""
    from .st import read_count_header
    from .visium import read_feature_matrix

    if row["format"] == "visium_hd":
        from .visium_hd import hd_genes

        return hd_genes(row["counts"], bin_um)
    if row["format"] == "spatialdata":
        from .image import split_store_path
        from .spatialdata_in import _element, read_store

        parts = split_store_path(row["counts"])
        store = parts[0] if parts else row["counts"]
        sdata = read_store(store, ("tables",))
        return sdata.tables[_element(row["counts"] if parts else None, "tables", sdata, store)].var_names.astype(
            str).tolist()
    if row["format"] == "xenium":
        from .visium_hd import h5_genes

        return h5_genes(os.path.join(row["counts"], "cell_feature_matrix.h5"))
    if row["format"] == "hest":
        import anndata

        from .hest import hest_files

        path = hest_files(row["counts"], row["sample"])["st"]
        if not os.path.exists(path):
            raise InputError(path, "HEST expression file not found (st/<id>.h5ad)")
        return anndata.read_h5ad(path, backed="r").var_names.astype(str).tolist()
    if row["format"] == "visium":
        return read_feature_matrix(row["counts"]).var_names.tolist()
    return read_count_header(row["counts"])


def read_sample(row, tiling: dict | None = None) -> tuple[ad.AnnData, str]:
    """Read one sheet row's expression and spot positions; return (AnnData, image path).

    ``tiling`` (the config's block) gives Visium HD's ``bin_um`` and ``spot_um`` (defaults 8 and 56).

    ``obsm["spatial"]`` is in the returned image's level-0 pixels; ``uns["image_source"]`` says where the
    image came from (the sheet, or the Space Ranger hires/lowres fallback).
    """
    from .st import read_st_sample
    from .visium import read_visium_sample

    fmt = row["format"]
    pixel_scale = float(row["pixel_scale"] or 1.0)
    if fmt == "st":
        adata = read_st_sample(row["counts"], row["spots"], pixel_scale)
        image, source = row["image"], "sample sheet"
    elif fmt == "visium":
        image, scale, source = sample_image(row)
        adata = read_visium_sample(row["counts"], row["spots"], image_scale=scale * pixel_scale)
    elif fmt == "visium_hd":
        from .visium_hd import read_visium_hd_sample

        tiling = tiling or {}
        bin_um, spot_um = int(tiling.get("bin_um", 8)), float(tiling.get("spot_um", 56))
        image, scale, source = sample_image(row, bin_um)
        adata = read_visium_hd_sample(row["counts"], bin_um, spot_um, image_scale=scale * pixel_scale)
    elif fmt == "xenium":
        from .xenium import read_xenium_sample

        image, source = row["image"], "sample sheet"
        adata = read_xenium_sample(row["counts"], row["spots"], float((tiling or {}).get("spot_um", 56)),
                                   image_scale=pixel_scale)
    elif fmt == "spatialdata":
        from .spatialdata_in import read_spatialdata_sample

        spots = row["spots"] if row["spots"] != row["counts"] else None
        adata, image = read_spatialdata_sample(row["counts"], spots, row["image"], row["platform"])
        source = "sample sheet" if row["image"] else "the store's image"
    elif fmt == "hest":
        from .hest import read_hest_sample

        image, scale, source = sample_image(row)
        adata = read_hest_sample(row["counts"], row["sample"], image_scale=scale * pixel_scale)
    else:
        raise InputError(None, f"sample {row['sample']!r}: unknown format {fmt!r} (expected st, visium, visium_hd, "
                               f"xenium, hest or spatialdata)")
    adata.uns["image_source"] = source
    return adata, image
