"""Windows centred on spots, at a physical size, resampled to the model's input.

A window covers ``window_um`` micrometres of tissue around each spot centre and
is resampled to ``window_px`` pixels. Micrometres per pixel come from the
sample sheet, else the image's metadata, else the spot grid: neighbouring spot
centres are ``pitch`` micrometres apart (legacy ST 200 µm, Visium 100 µm).
Windows that leave the image or show mostly background are dropped and
counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree
from tqdm import tqdm

from ..errors import InputError
from ..io.image import Slide

log = logging.getLogger(__name__)

SPOT_PITCH_UM = {"st": 200.0, "visium": 100.0}


def estimate_um_per_px(xy: np.ndarray, pitch_um: float) -> float:
    """Micrometres per pixel from the median nearest-neighbour spot distance.

    Args:
        xy: ``(n, 2)`` spot centres in image pixels, ``n >= 2``.
        pitch_um: centre-to-centre distance of neighbouring spots.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < 2:
        raise ValueError("need at least two spots to estimate the pixel size from the spot grid")
    dist, _ = cKDTree(xy).query(xy, k=2)
    nn = float(np.median(dist[:, 1]))
    if not nn > 0:
        raise ValueError("spot centres coincide; cannot estimate the pixel size")
    return pitch_um / nn


def tissue_fraction(window: np.ndarray) -> float:
    """Fraction of pixels that are neither blank glass (light, unsaturated) nor black.

    Args:
        window: ``(H, W, 3)`` uint8 RGB.
    """
    w = window.astype(np.int16)
    lo, hi = w.min(axis=-1), w.max(axis=-1)
    glass = (lo > 205) & (hi - lo < 25)
    black = hi < 35
    return float(1.0 - (glass | black).mean())


def check_spots_on_image(xy: np.ndarray, width: int, height: int, spots_path: str, image_path: str) -> None:
    """Every spot centre must lie on the image; otherwise coordinates or scale are wrong."""
    off = (xy[:, 0] < 0) | (xy[:, 0] >= width) | (xy[:, 1] < 0) | (xy[:, 1] >= height)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise InputError(spots_path, f"{int(off.sum())} of {len(xy)} spot centre(s) lie outside the "
                                     f"{width}x{height} image {image_path} (first at x={xy[i, 0]:.0f}, "
                                     f"y={xy[i, 1]:.0f}); wrong image or wrong pixel_scale?")


@dataclass
class TilingResult:
    """Windows of the kept spots and what happened to every spot."""

    windows: np.ndarray  # (n_kept, window_px, window_px, 3) uint8
    status: np.ndarray  # (n_spots,) "kept" | "edge" | "background"
    tissue: np.ndarray  # (n_spots,) tissue fraction (NaN for edge spots)
    window_size_px: float  # window side in level-0 image pixels
    counts: dict = field(default_factory=dict)

    @property
    def kept(self) -> np.ndarray:
        return self.status == "kept"


def tile_spots(slide: Slide, xy: np.ndarray, um_per_px: float, window_um: float = 112.0,
               window_px: int = 224, min_tissue: float = 0.25, desc: str = "tiling") -> TilingResult:
    """Cut one window per spot centre.

    Args:
        slide: the opened image.
        xy: ``(n, 2)`` spot centres in level-0 pixels (x, y).
        um_per_px: micrometres per level-0 pixel.
        window_um: window side in micrometres.
        window_px: output side in pixels.
        min_tissue: windows with a smaller tissue fraction are dropped.
    """
    side = window_um / um_per_px
    downsample = side / window_px
    n = len(xy)
    out = np.zeros((n, window_px, window_px, 3), dtype=np.uint8)
    status = np.full(n, "kept", dtype=object)
    tissue = np.full(n, np.nan)
    for i in tqdm(range(n), desc=desc, mininterval=2.0):
        x0 = int(round(xy[i, 0] - side / 2))
        y0 = int(round(xy[i, 1] - side / 2))
        s = int(round(side))
        if x0 < 0 or y0 < 0 or x0 + s > slide.width or y0 + s > slide.height:
            status[i] = "edge"
            continue
        region = slide.read(x0, y0, s, s, downsample=downsample)
        if region.shape[:2] != (window_px, window_px):
            region = np.asarray(Image.fromarray(region).resize((window_px, window_px), Image.Resampling.BILINEAR))
        out[i] = region
        tissue[i] = tissue_fraction(region)
        if tissue[i] < min_tissue:
            status[i] = "background"
    kept = status == "kept"
    counts = {k: int((status == k).sum()) for k in ("kept", "edge", "background")}
    counts["input"] = n
    return TilingResult(out[kept], status.astype(str), tissue, side, counts)
