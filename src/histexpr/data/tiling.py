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
    def outside(p):
        return (p[:, 0] < 0) | (p[:, 0] >= width) | (p[:, 1] < 0) | (p[:, 1] >= height)

    off = outside(xy)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        swapped = " (with pixel_x and pixel_y swapped every spot would lie on it)" if not outside(xy[:, ::-1]).any() else ""
        raise InputError(spots_path, f"{int(off.sum())} of {len(xy)} spot centre(s) lie outside the "
                                     f"{width}x{height} image {image_path} (first at x={xy[i, 0]:.0f}, "
                                     f"y={xy[i, 1]:.0f}){swapped}; wrong image, wrong pixel_scale or swapped axes?")


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


# --- pixel size from the array grid ---------------------------------------------------------------------------

def array_um(array_x: np.ndarray, array_y: np.ndarray, platform: str, pitch_um: float) -> np.ndarray:
    """Array coordinates in micrometres: legacy ST is a square grid (``x``, ``y`` one pitch apart); Visium a
    hexagonal one (``array_col`` steps half a pitch, ``array_row`` steps ``pitch * sqrt(3) / 2``)."""
    ax, ay = np.asarray(array_x, np.float64), np.asarray(array_y, np.float64)
    if platform == "visium":
        return np.column_stack([ax * pitch_um / 2, ay * pitch_um * np.sqrt(3) / 2])
    return np.column_stack([ax * pitch_um, ay * pitch_um])


def estimate_um_per_px_from_array(array_x: np.ndarray, array_y: np.ndarray, xy: np.ndarray, platform: str,
                                  pitch_um: float) -> float | None:
    """Micrometres per pixel from spots that are neighbours on the array (one pitch apart).

    The median pixel distance of array-neighbour pairs (ST: one step in ``x`` or ``y``; Visium: two columns,
    or one row and one column) is one pitch. Unlike the nearest-neighbour distance in pixels this holds for a
    sparse subset of the array, where the nearest spot in the subset may be several pitches away. With fewer
    than three neighbour pairs, an affine fit of pixels on array micrometres (:func:`array_um`) is used.
    Returns None when neither is possible.
    """
    ax, ay = np.asarray(array_x, np.int64), np.asarray(array_y, np.int64)
    xy = np.asarray(xy, np.float64)
    steps = ((0, 2), (1, 1), (1, -1)) if platform == "visium" else ((1, 0), (0, 1))
    where = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(ax, ay))}
    dist = [np.hypot(*(xy[j] - xy[i])) for i, (a, b) in enumerate(zip(ax, ay)) for dy, dx in steps
            if (j := where.get((int(a + dx), int(b + dy)))) is not None]
    if len(dist) >= 3 and np.median(dist) > 0:
        return pitch_um / float(np.median(dist))
    a = array_um(ax, ay, platform, pitch_um)
    design = np.column_stack([a, np.ones(len(a))])
    if len(a) < 3 or np.linalg.matrix_rank(design) < 3:
        return None
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    px_per_um = float(np.sqrt(abs(np.linalg.det(coef[:2]))))
    return 1.0 / px_per_um if px_per_um > 0 else None


# --- where the tissue is, and whether the spots sit on it ------------------------------------------------------

def _otsu(values: np.ndarray) -> int:
    hist = np.bincount(values.ravel(), minlength=256)[:256].astype(np.float64)
    p = hist / max(hist.sum(), 1)
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return int(np.argmax(between))


def tissue_mask(thumb: np.ndarray, min_saturation: int = 12) -> np.ndarray:
    """Stained tissue on a low-resolution RGB image: colour saturation (max - min channel) above Otsu's
    threshold, which separates eosin/haematoxylin from grey or white glass, black borders and fiducials
    whatever the scanner's white balance."""
    w = thumb.astype(np.int16)
    sat = np.clip(w.max(axis=-1) - w.min(axis=-1), 0, 255).astype(np.uint8)
    mask = (sat > max(_otsu(sat), min_saturation)) & (w.max(axis=-1) > 35)
    from scipy import ndimage

    return ndimage.binary_opening(mask, iterations=1)


@dataclass
class Placement:
    """How well spot centres sit on the tissue of a thumbnail."""

    on_tissue: float  # fraction of spot centres on (dilated) tissue
    coverage: float  # fraction of tissue pixels within one spot pitch of a spot centre
    tissue_area: float  # fraction of the thumbnail that is tissue
    alternative: tuple[str, float] | None = None  # a transform of the spots that fits much better, and its score


def _on_tissue(mask: np.ndarray, xy_thumb: np.ndarray) -> float:
    xt = np.round(xy_thumb).astype(int)
    h, w = mask.shape
    ok = (xt[:, 0] >= 0) & (xt[:, 1] >= 0) & (xt[:, 0] < w) & (xt[:, 1] < h)
    hit = np.zeros(len(xt), bool)
    hit[ok] = mask[xt[ok, 1], xt[ok, 0]]
    return float(hit.mean()) if len(xt) else 0.0


def spot_placement(mask: np.ndarray, scale: float, xy: np.ndarray, spot_radius_px: float, pitch_px: float,
                   image_size: tuple[int, int]) -> Placement:
    """Score spot centres ``xy`` (level-0 px) against the tissue ``mask`` of a thumbnail at ``scale``.

    A centre counts as on tissue within one spot radius of it. When few are, the spots' likely mistakes are
    tried (pixel_x/pixel_y swapped, mirrored axes, pixel_scale off by a factor of 2 or 4) and the one that
    fits best is reported.
    """
    from scipy import ndimage

    r = max(1, int(round(spot_radius_px * scale)))
    grown = ndimage.binary_dilation(mask, iterations=r)
    on = _on_tissue(grown, xy * scale)
    near = np.zeros(mask.shape, bool)
    xt = np.round(xy * scale).astype(int)
    ok = (xt[:, 0] >= 0) & (xt[:, 1] >= 0) & (xt[:, 0] < mask.shape[1]) & (xt[:, 1] < mask.shape[0])
    near[xt[ok, 1], xt[ok, 0]] = True
    dist = ndimage.distance_transform_edt(~near)
    tissue = mask.sum()
    coverage = float((mask & (dist <= max(1.0, pitch_px * scale))).sum() / tissue) if tissue else 0.0
    w, h = image_size
    candidates = {
        "pixel_x and pixel_y swapped": xy[:, ::-1],
        "x mirrored (image flipped left-right)": np.column_stack([w - xy[:, 0], xy[:, 1]]),
        "y mirrored (image flipped top-bottom)": np.column_stack([xy[:, 0], h - xy[:, 1]]),
        **{f"pixel_scale {f:g} times larger": xy * f for f in (2.0, 4.0)},
        **{f"pixel_scale {f:g} times smaller": xy / f for f in (2.0, 4.0)},
    }
    best = max(((name, _on_tissue(grown, c * scale)) for name, c in candidates.items()), key=lambda t: t[1])
    alternative = best if best[1] >= max(0.9, on + 0.15) else None
    return Placement(on, coverage, float(mask.mean()), alternative)
