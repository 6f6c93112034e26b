"""A leakage and duplicate audit, run on every sheet before anything is tiled or trained.

Files are compared by a content fingerprint: their size and SHA-256 of the first, middle and last MiB (a whole
slide can be gigabytes; files that agree on all four are the same scan or the same matrix in practice). We write
our own because no library we use audits a sample sheet for the same section entered twice.
"""

from __future__ import annotations

import hashlib
import os

import pandas as pd

from ..errors import InputError

BLOCK = 1 << 20


def fingerprint(path: str | os.PathLike) -> str:
    """``size:sha256`` of a file's first, middle and last MiB (the whole file when it is under 3 MiB)."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= 3 * BLOCK:
            h.update(fh.read())
        else:
            for at in (0, size // 2 - BLOCK // 2, size - BLOCK):
                fh.seek(at)
                h.update(fh.read(BLOCK))
    return f"{size}:{h.hexdigest()}"


def _same(paths: pd.Series) -> dict[str, list[int]]:
    """Fingerprint -> row numbers (0-based) of the rows whose file has it, for fingerprints held by two rows."""
    seen: dict[str, list[int]] = {}
    prints: dict[str, str] = {}
    for i, p in enumerate(paths):
        if not p or not os.path.isfile(p):
            continue
        key = prints.setdefault(os.path.realpath(p), fingerprint(p))
        seen.setdefault(key, []).append(i)
    return {k: v for k, v in seen.items() if len(v) > 1}


def audit_sample_sheet(sheet: pd.DataFrame, source: str) -> list[str]:
    """Refuse one section entered twice: the same counts file (by content) under two samples, or the same image
    under samples of different patients (a patient would then train the fold that tests it). The same image
    under two samples of one patient (several sections on one slide) is allowed and returned as a note."""
    notes = []
    for _, rows in _same(sheet["counts"]).items():
        names = ", ".join(f"row {i + 1} ({sheet['sample'].iloc[i]})" for i in rows)
        raise InputError(source, f"{names} have identical count files ({sheet['counts'].iloc[rows[0]]} and "
                                 f"{sheet['counts'].iloc[rows[1]]}): one section entered twice; a section under two "
                                 f"sample ids could train the fold that tests it")
    if "image" in sheet:
        for _, rows in _same(sheet["image"]).items():
            patients = sheet["patient"].iloc[rows].astype(str)
            names = ", ".join(f"row {i + 1} ({sheet['sample'].iloc[i]}, patient {sheet['patient'].iloc[i]})"
                              for i in rows)
            if patients.nunique() > 1:
                raise InputError(source, f"{names} share one image ({sheet['image'].iloc[rows[0]]}, identical "
                                         f"content) under different patients: one patient's tissue would be on both "
                                         f"sides of a fold")
            notes.append(f"{names} share one image (several sections of one slide)")
    return notes


def audit_image_sheet(sheet: pd.DataFrame, source: str) -> None:
    """Refuse an image listed twice (by content) in a classification sheet: it could be trained and tested."""
    for _, rows in _same(sheet["image"]).items():
        names = ", ".join(f"row {i + 1} ({sheet['image'].iloc[i]}, label {sheet['label'].iloc[i]})" for i in rows)
        raise InputError(source, f"{names} are the same image (identical content): it could land in training and "
                                 f"test of one fold; list each image once")
