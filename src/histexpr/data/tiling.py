"""Windows centred on spots, at a physical size, resampled to the model's input.

A window covers ``window_um`` micrometres of tissue around each spot centre and
is resampled to ``window_px`` pixels. Micrometres per pixel come from the
sample sheet, else the image's metadata, else the spot grid (:data:`GRIDS`: legacy ST
1k 200 µm between neighbours, 2k 141 µm on the diagonal, Visium 100 µm).
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

SPOT_PITCH_UM = {"st": 200.0, "st_2k": 100.0, "visium": 100.0}  # um per array step; see GRIDS


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
    out = window_buffer(n, window_px)
    status = np.full(n, "kept", dtype=object)
    tissue = np.full(n, np.nan)
    j = 0  # kept windows fill ``out`` from the front, so the result is a view, never a copy
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
        tissue[i] = tissue_fraction(region)
        if tissue[i] < min_tissue:
            status[i] = "background"
            continue
        out[j] = region
        j += 1
    counts = {k: int((status == k).sum()) for k in ("kept", "edge", "background")}
    counts["input"] = n
    return TilingResult(out[:j], status.astype(str), tissue, side, counts)


# Windows above this many bytes are cut into an unlinked temporary file (TMPDIR) rather than memory: a Visium HD
# slide's 150,000 windows of 224 px are 22.6 GB, more than a 24 GB machine holds beside everything else.
IN_MEMORY_WINDOW_BYTES = 2 << 30


def window_buffer(n: int, window_px: int) -> np.ndarray:
    """An ``(n, S, S, 3)`` uint8 array for cut windows: in memory up to ``IN_MEMORY_WINDOW_BYTES``, else memory-
    mapped on an anonymous temporary file that the OS removes when the array is freed."""
    shape = (n, window_px, window_px, 3)
    size = int(np.prod(shape, dtype=np.int64))
    if size <= IN_MEMORY_WINDOW_BYTES:
        return np.zeros(shape, dtype=np.uint8)
    import tempfile

    log.info("%d windows of %d px are %.1f GB: cut into a temporary file in %s rather than memory", n, window_px,
             size / 1e9, tempfile.gettempdir())
    return np.memmap(tempfile.TemporaryFile(prefix="histexpr-windows-"), dtype=np.uint8, mode="w+", shape=shape)


# --- pixel size from the array grid ---------------------------------------------------------------------------

# The array designs, by the sample sheet's ``platform``: the key of ``tiling.spot_pitch_um`` that gives the
# micrometres of one array step, the array steps ``(dx, dy)`` that join nearest neighbours, and their length in
# pitches. Legacy ST 1k: a square grid, x 1-33, y 1-35, 200 um a step. Legacy ST 2k: x up to 67, y up to 64,
# spots only where x + y has one parity (a checkerboard), 100 um a step, so the nearest spots are diagonal,
# 141 um apart. Visium: a hexagonal grid, array_col steps half a pitch, array_row sqrt(3)/2 of one.
GRIDS = {
    "st_1k": ("st", ((1, 0), (0, 1)), 1.0),
    "st_2k": ("st_2k", ((1, 1), (1, -1)), float(np.sqrt(2.0))),
    "visium": ("visium", ((2, 0), (1, 1), (-1, 1)), 1.0),
    "visium_hd": ("visium_hd", ((1, 0), (0, 1)), 1.0),  # square pseudo-spots of tiling.spot_um, edge to edge
    "xenium": ("xenium", ((1, 0), (0, 1)), 1.0),  # the same, of cells
}
ST_1K_EXTENT = (33, 35)  # the largest array x and y of a 1k array


def grid_pitch_um(platform: str, spot_pitch_um: dict) -> tuple[float, float]:
    """``(um per array step, um between nearest spots)`` of a design, from ``tiling.spot_pitch_um``."""
    key, _, nn = GRIDS[platform]
    step = float(spot_pitch_um[key])
    return step, step * nn


@dataclass
class Design:
    """A legacy-ST array design read off the array coordinates, and the evidence."""

    platform: str  # st_1k | st_2k
    parity_share: float  # share of spots whose x + y has the majority parity (1.0 on a 2k array)
    axis_pairs: int  # spot pairs one step apart in x or in y (none on a 2k array)
    diagonal_pairs: int  # spot pairs one step apart in x and in y
    extent: tuple[int, int]  # largest array x and y
    why: str


def _pairs(ax: np.ndarray, ay: np.ndarray, steps) -> int:
    have = set(zip(ax.tolist(), ay.tolist()))
    return sum((x + dx, y + dy) in have for x, y in have for dx, dy in steps)


def detect_st_design(array_x, array_y) -> Design:
    """Tell a legacy-ST 2k array from a 1k one by its coordinates.

    2k when every spot's ``x + y`` has one parity and either the spots that are neighbours are diagonal ones
    (no two spots one step apart along x or y, at least three diagonal pairs) or the coordinates run past the 1k
    array's 33 x 35; otherwise 1k (a 1k array holds spots of both parities side by side).
    """
    ax, ay = np.asarray(array_x, np.int64), np.asarray(array_y, np.int64)
    odd = float(((ax + ay) % 2).mean()) if len(ax) else 0.0
    share = max(odd, 1.0 - odd)
    axis, diag = _pairs(ax, ay, ((1, 0), (0, 1))), _pairs(ax, ay, ((1, 1), (1, -1)))
    extent = (int(ax.max(initial=0)), int(ay.max(initial=0)))
    beyond = extent[0] > ST_1K_EXTENT[0] + 2 or extent[1] > ST_1K_EXTENT[1] + 2
    if share == 1.0 and axis == 0 and diag >= 3:
        why = f"every spot has x + y of one parity and the {diag} neighbour pairs are all diagonal"
        return Design("st_2k", share, axis, diag, extent, why)
    if share >= 0.99 and beyond:
        why = f"array x up to {extent[0]}, y up to {extent[1]} (past a 1k array) with x + y of one parity"
        return Design("st_2k", share, axis, diag, extent, why)
    why = (f"{axis} neighbour pairs along x or y" if axis else f"only {len(ax)} spots, {diag} diagonal pairs") + \
          f"; array x up to {extent[0]}, y up to {extent[1]}"
    return Design("st_1k", share, axis, diag, extent, why)


def array_um(array_x: np.ndarray, array_y: np.ndarray, platform: str, step_um: float) -> np.ndarray:
    """Array coordinates in micrometres: legacy ST (1k and 2k) is a square lattice of ``step_um`` (a 2k array
    fills only half of it); Visium a hexagonal one (``array_col`` steps half a pitch, ``array_row`` steps
    ``pitch * sqrt(3) / 2``)."""
    ax, ay = np.asarray(array_x, np.float64), np.asarray(array_y, np.float64)
    if platform == "visium":
        return np.column_stack([ax * step_um / 2, ay * step_um * np.sqrt(3) / 2])
    return np.column_stack([ax * step_um, ay * step_um])


@dataclass
class GridEstimate:
    """Micrometres per pixel read off the array grid."""

    um_per_px: float
    method: str  # "neighbours" (median pixel distance of array neighbours) or "affine" (least-squares fit)
    x_um_per_px: float | None = None  # along the array's x and y axes (affine fit), to catch a stretched grid
    y_um_per_px: float | None = None

    @property
    def anisotropy(self) -> float:
        """How much the x and y scales differ, as a fraction (0 = a square grid in pixels)."""
        if not self.x_um_per_px or not self.y_um_per_px:
            return 0.0
        return abs(self.x_um_per_px / self.y_um_per_px - 1.0)


def estimate_grid(array_x: np.ndarray, array_y: np.ndarray, xy: np.ndarray, platform: str,
                  step_um: float) -> GridEstimate | None:
    """Micrometres per pixel from spots that are neighbours on the array.

    The median pixel distance of array-neighbour pairs (the steps of :data:`GRIDS`) is one nearest-neighbour
    distance in micrometres. Unlike the nearest-neighbour distance in pixels this holds for a sparse subset of
    the array, where the nearest spot in the subset may be several pitches away. With fewer than three
    neighbour pairs, an affine fit of pixels on array micrometres (:func:`array_um`) gives it. The affine fit,
    when there are three spots off one line, also gives the x and y scales apart. None when neither is possible.
    """
    ax, ay = np.asarray(array_x, np.int64), np.asarray(array_y, np.int64)
    xy = np.asarray(xy, np.float64)
    _, steps, nn = GRIDS[platform]
    where = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(ax, ay))}
    dist = [np.hypot(*(xy[j] - xy[i])) for i, (a, b) in enumerate(zip(ax, ay)) for dx, dy in steps
            if (j := where.get((int(a + dx), int(b + dy)))) is not None]
    a = array_um(ax, ay, platform, step_um)
    design = np.column_stack([a, np.ones(len(a))])
    sx = sy = affine = None
    if len(a) >= 3 and np.linalg.matrix_rank(design) == 3:
        coef, *_ = np.linalg.lstsq(design, xy, rcond=None)  # rows: pixels per um of array x, of array y
        px_per_um = float(np.sqrt(abs(np.linalg.det(coef[:2]))))
        affine = 1.0 / px_per_um if px_per_um > 0 else None
        nx, ny = np.linalg.norm(coef[0]), np.linalg.norm(coef[1])
        sx, sy = (1.0 / nx if nx > 0 else None), (1.0 / ny if ny > 0 else None)
    if len(dist) >= 3 and np.median(dist) > 0:
        return GridEstimate(step_um * nn / float(np.median(dist)), "neighbours", sx, sy)
    return GridEstimate(affine, "affine", sx, sy) if affine else None


def estimate_um_per_px_from_array(array_x: np.ndarray, array_y: np.ndarray, xy: np.ndarray, platform: str,
                                  step_um: float) -> float | None:
    """:func:`estimate_grid`'s micrometres per pixel (``platform`` ``st`` reads as ``st_1k``)."""
    est = estimate_grid(array_x, array_y, xy, "st_1k" if platform == "st" else platform, step_um)
    return est.um_per_px if est else None


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
