"""Readers for slide images and spatial transcriptomics outputs.

The names below load on first use, so ``histexpr.io.sheet`` (read when the workflow is parsed) does not pull
in anndata and the image stack.
"""

import importlib

_HOMES = {
    "Slide": "image",
    "open_image": "image",
    "read_st_sample": "st",
    "read_visium_sample": "visium",
    "build_her2st_sheet": "sheet",
    "load_sample_sheet": "sheet",
    "read_sample": "sheet",
}

__all__ = list(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
