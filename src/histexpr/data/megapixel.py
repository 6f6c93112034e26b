"""Labelled large images for attention sampling: the image sheet, folds, views and lazily read patches.

An image is used two ways: a downscaled *view* for the attention network and
``N`` full-resolution ``P × P`` *patches* around the cells it picks. Cell
``(r, c)`` of an ``h × w`` view covers the full-resolution box of
``H/h × W/w`` pixels at row ``r``, column ``c``; its patch is centred on that
box and shifted inside the image where it would cross the border.

:class:`ArrayImage` holds a small image in memory; :class:`SlideImage` reads a
whole-slide image (TIFF pyramid, SVS, ...) through OpenSlide — the view from a
low-resolution pyramid level, each patch by one ``read_region`` at level 0 —
so memory and time per image grow with ``N · P²`` and the view's size, not
with the slide's.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".bmp")


SPLITS = ("train", "test")


def build_image_sheet(root: str | os.PathLike) -> pd.DataFrame:
    """One row per image (``image``, ``label``) from ``root/<class>/<image>``; classes sorted by name.

    A root holding exactly ``train/`` and ``test/``, each with class sub-folders (the layout of torchvision's
    ImageFolder splits), gives a ``split`` column as well: a fixed test set.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise InputError(root, "image folder not found (one sub-folder per class expected)")
    subdirs = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")}
    if subdirs == set(SPLITS):
        parts = [_class_folders(os.path.join(root, s)).assign(split=s) for s in SPLITS]
        return check_split(pd.concat(parts, ignore_index=True), root)
    return _class_folders(root)


def _class_folders(root: str) -> pd.DataFrame:
    rows = []
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    for c in classes:
        files = sorted(f for f in os.listdir(os.path.join(root, c)) if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise InputError(os.path.join(root, c), f"class folder {c!r} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        rows += [{"image": os.path.join(root, c, f), "label": c} for f in files]
    if len(classes) < 2:
        raise InputError(root, f"needs at least two class sub-folders, found {classes or 'none'}")
    return pd.DataFrame(rows)


def check_split(sheet: pd.DataFrame, source: str) -> pd.DataFrame:
    """A sheet's ``split`` column: ``train`` or ``test`` on every row, both present, every test class trained on,
    no image on both sides."""
    bad = sorted(set(sheet["split"]) - set(SPLITS))
    if bad:
        raise InputError(source, f"split must be train or test on every row, found {bad}")
    if set(sheet["split"]) != set(SPLITS):
        raise InputError(source, f"the split column needs both train and test images, found only {sorted(set(sheet['split']))}")
    train = sheet[sheet["split"] == "train"]
    unseen = sorted(set(sheet.loc[sheet["split"] == "test", "label"]) - set(train["label"]))
    if unseen:
        raise InputError(source, f"test class(es) {unseen} have no training image")
    if train["label"].nunique() < 2:
        raise InputError(source, "the training images need at least two classes")
    both = set(train["image"]) & set(sheet.loc[sheet["split"] == "test", "image"])
    if both:
        raise InputError(source, f"{len(both)} image(s) are both train and test, e.g. {sorted(both)[0]}")
    return sheet


def read_image_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """A user's sheet: a TSV with columns ``image`` and ``label`` (paths relative to the sheet's folder) and
    optionally ``split`` (``train`` / ``test``: a fixed test set, see :func:`split_folds`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "image sheet not found")
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = {"image", "label"} - set(sheet.columns)
    if missing:
        raise InputError(path, f"image sheet lacks column(s) {sorted(missing)}")
    base = os.path.dirname(os.path.abspath(path))
    sheet["image"] = [p if os.path.isabs(p) else os.path.join(base, p) for p in sheet["image"]]
    absent = [p for p in sheet["image"] if not os.path.exists(p)]
    if absent:
        raise InputError(path, f"{len(absent)} image(s) not found, e.g. {absent[0]}")
    empty = [i + 2 for i, v in enumerate(sheet["label"]) if not v.strip()]
    if empty:
        raise InputError(path, f"{len(empty)} row(s) have no label, first at line {empty[0]} "
                               f"({sheet['image'].iloc[empty[0] - 2]})")
    if sheet["label"].nunique() < 2:
        raise InputError(path, "needs at least two classes")
    if "split" in sheet:
        sheet["split"] = sheet["split"].str.strip().str.lower()
        return check_split(sheet[["image", "label", "split"]], path)
    return sheet[["image", "label"]]


def sheet_has_split(source: str | os.PathLike) -> bool:
    """Whether an image source (a sheet, or a folder in the ``train/`` + ``test/`` layout) fixes the test set;
    cheap enough for the workflow to call while it is parsed."""
    source = os.fspath(source)
    if os.path.isdir(source):
        subdirs = {d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)) and not d.startswith(".")}
        return subdirs == set(SPLITS)
    if os.path.isfile(source):
        with open(source) as fh:
            return "split" in fh.readline().rstrip("\n").split("\t")
    return False


def stratified_folds(labels: np.ndarray, k: int, val_fraction: float, seed: int) -> pd.DataFrame:
    """Rows ``(index, fold, split)`` for ``k`` stratified folds; in each, ``val_fraction`` of the training
    images (stratified) are held out for model selection. Every image is a test image exactly once."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    labels = np.asarray(labels)
    counts = pd.Series(labels).value_counts()
    if counts.min() < k:
        raise ValueError(f"class {counts.idxmin()!r} has {counts.min()} images, fewer than k = {k} folds")
    rows = []
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(skf.split(np.zeros(len(labels)), labels), start=1):
        fit, val = (train, np.array([], int)) if val_fraction <= 0 else train_test_split(
            train, test_size=val_fraction, stratify=labels[train], random_state=seed + fold)
        for split, idx in (("train", fit), ("val", val), ("test", test)):
            rows += [{"index": int(i), "fold": fold, "split": split} for i in idx]
    return pd.DataFrame(rows).sort_values(["fold", "index"]).reset_index(drop=True)


def split_folds(labels: np.ndarray, split: np.ndarray, val_fraction: float, seed: int) -> pd.DataFrame:
    """One fold (rows ``index, fold, split``) whose test images are exactly those marked ``test``; validation
    is ``val_fraction`` of the ``train`` images, stratified by class."""
    from sklearn.model_selection import train_test_split

    labels, split = np.asarray(labels), np.asarray(split)
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    counts = pd.Series(labels[train]).value_counts()
    stratify = labels[train] if counts.min() >= 2 else None
    fit, val = (train, np.array([], int)) if val_fraction <= 0 else train_test_split(
        train, test_size=val_fraction, stratify=stratify, random_state=seed + 1)
    rows = [{"index": int(i), "fold": 1, "split": s} for s, idx in (("train", fit), ("val", val), ("test", test))
            for i in idx]
    return pd.DataFrame(rows).sort_values("index").reset_index(drop=True)


def view_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def patch_corners(cells: np.ndarray, view_hw: tuple[int, int], image_hw: tuple[int, int], patch: int) -> np.ndarray:
    """Top-left full-resolution corners ``(..., 2)`` (row, col) of the ``patch``-px patches around the
    view cells ``cells`` (flat indices into ``view_hw``)."""
    h, w = view_hw
    big_h, big_w = image_hw
    r, c = np.divmod(np.asarray(cells), w)
    cy, cx = (r + 0.5) * big_h / h, (c + 0.5) * big_w / w
    top = np.clip(np.round(cy - patch / 2), 0, max(big_h - patch, 0)).astype(np.int64)
    left = np.clip(np.round(cx - patch / 2), 0, max(big_w - patch, 0)).astype(np.int64)
    return np.stack([top, left], -1)


class ArrayImage:
    """An image held in memory as ``(H, W, 3)`` uint8."""

    def __init__(self, array: np.ndarray):
        self.array = np.ascontiguousarray(array[..., :3])
        self.height, self.width = self.array.shape[:2]
        self.pixels_read = 0

    @classmethod
    def open(cls, path: str | os.PathLike) -> ArrayImage:
        try:
            with Image.open(path) as im:
                return cls(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as err:
            raise InputError(path, f"not a readable image ({err})") from None

    def view(self, scale: float) -> np.ndarray:
        h, w = view_shape(self.height, self.width, scale)
        self.pixels_read += self.height * self.width
        return np.asarray(Image.fromarray(self.array).resize((w, h), Image.BOX))

    def patches(self, corners: np.ndarray, patch: int) -> np.ndarray:
        """``(N, P, P, 3)`` uint8 at ``corners (N, 2)``."""
        self.pixels_read += len(corners) * patch * patch
        return np.stack([self.array[t:t + patch, l:l + patch] for t, l in corners])


class SlideImage:
    """A whole-slide image read through OpenSlide, never whole."""

    def __init__(self, path: str | os.PathLike):
        from ..io.image import open_image

        self.slide = open_image(path, check_decode=True)
        self.height, self.width = self.slide.height, self.slide.width
        self.pixels_read = 0

    def view(self, scale: float) -> np.ndarray:
        """The ``scale``-downscaled image from the coarsest pyramid level at least that fine."""
        h, w = view_shape(self.height, self.width, scale)
        sl = self.slide._slide
        level = int(sl.get_best_level_for_downsample(1.0 / scale))
        lw, lh = sl.level_dimensions[level]
        region = np.asarray(sl.read_region((0, 0), level, (lw, lh)).convert("RGB"))
        self.pixels_read += lw * lh
        return np.asarray(Image.fromarray(region).resize((w, h), Image.BOX))

    def patches(self, corners: np.ndarray, patch: int) -> np.ndarray:
        self.pixels_read += len(corners) * patch * patch
        return np.stack([self.slide.read(int(l), int(t), patch, patch) for t, l in corners])

    def close(self) -> None:
        self.slide.close()


def open_large_image(path: str | os.PathLike, in_memory_max_px: int = 4096 * 4096):
    """:class:`ArrayImage` for a plain image up to ``in_memory_max_px`` pixels, else :class:`SlideImage`."""
    path = os.fspath(path)
    if path.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
        with Image.open(path) as im:
            if im.width * im.height <= in_memory_max_px:
                return ArrayImage.open(path)
    return SlideImage(path)
