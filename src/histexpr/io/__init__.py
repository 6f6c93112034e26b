"""Readers for slide images and spatial transcriptomics outputs."""

from .image import Slide, open_image
from .st import read_st_sample
from .visium import read_visium_sample
from .sheet import build_her2st_sheet, load_sample_sheet, read_sample

__all__ = [
    "Slide",
    "open_image",
    "read_st_sample",
    "read_visium_sample",
    "build_her2st_sheet",
    "load_sample_sheet",
    "read_sample",
]
