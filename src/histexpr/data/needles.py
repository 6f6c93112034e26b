"""A synthetic megapixel task where the class sits in a few small objects: the regime attention sampling is for.

Every image is H&E-like background texture (pink stroma under a smooth stain field, scattered purple nuclei)
with ``objects`` small objects at random places. An object is a square of ``object_px // 11`` x ``object_px // 11``
cells of 11 px, each holding one dark tetromino of 3-px squares: S-shaped in an ``s`` image, Z-shaped (its mirror
image) in a ``z`` image, lying or standing, half of each in every object, in random order. A ``z`` object is an
``s`` object mirrored. So:

* the downscaled view shows *where* the objects are (dark patches) but not *which*: both classes put the same
  dark pixels in the same cells;
* whole-image colour and gradient statistics (the ``colour_hist`` floor's histograms of colour, and of gradient
  orientation and magnitude at 1, 2 and 4 px) are the same in both classes: a mirror image has the mirrored
  orientation histogram, and a lying S has the orientation histogram of a standing Z;
* a small CNN on full-resolution patches tells them apart from any one tetromino (its 9 x 9 px receptive
  field sees a whole one), and a few ``P``-px patches drawn uniformly from a 1024 x 1024 image rarely land on
  an object (each covers about 0.2% of it).

Training for this task must not mirror images (``train.flips: false``; half and quarter turns keep the
handedness). Earlier versions, kept as lessons: rings against disks of equal area left the view CNN at 97%
(at 1/16 a disk's darkness sits in one cell and a ring's spreads over its neighbours); 3-px stripes against a
3-px checkerboard left the histogram floor at 100% (checks have diagonal gradients at their corners, stripes
none); four dots at the corners of a square against a diamond defeated the floor but also the attention
models, whose 9 x 9 px feature network cannot relate dots 16 px apart.

We generate our own rather than use Megapixel MNIST (the seed's synthetic set): no download at run time,
H&E-like colours, and the object size, count and image size are parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

CLASSES = ("s", "z")
STROMA = np.array([236, 196, 214], np.float32)  # eosin pink
NUCLEUS = np.array([150, 100, 185], np.float32)  # haematoxylin purple
OBJECT = np.array([25, 20, 50], np.float32)  # the objects' tetrominoes: darker than any nucleus
UNIT = 3  # px a side of a tetromino's squares
CELL = 11  # px a side of an object's cells, one tetromino each (9 x 6 px, with a gap to the next)
S_TETROMINO = np.array([[0, 1, 1], [1, 1, 0]], bool)


@dataclass
class NeedleSpec:
    """``n_train`` / ``n_test`` images per class, ``size`` px square, ``objects`` objects of ``object_px``
    diameter each, ``nuclei`` background nuclei per 10 000 px²."""

    n_train: int = 80
    n_test: int = 40
    size: int = 1024
    objects: int = 3
    object_px: int = 44
    nuclei: float = 12.0
    seed: int = 0

    def problem(self) -> str | None:
        """Why these objects cannot be placed (each needs a free square of twice its diameter, away from the
        border), or None."""
        room = self.size - 3 * self.object_px
        if self.object_px < 2 * CELL:
            return f"object_px ({self.object_px}) must be at least {2 * CELL} (2 x 2 cells of {CELL} px)"
        if room < 1:
            return f"object_px ({self.object_px}) must be under a third of size ({self.size})"
        if self.objects * (2 * self.object_px) ** 2 > 0.5 * room**2:
            return (f"{self.objects} objects of {self.object_px} px do not fit, a diameter apart, in a {self.size} px "
                    "image: use fewer or smaller objects, or a larger size")
        return None


def _background(rng: np.random.Generator, size: int, nuclei: float) -> Image.Image:
    """Pink stroma under a smooth stain field, with purple nuclei of radius 2-5 px."""
    field = rng.normal(0, 1, (max(2, size // 128),) * 2 + (3,)).astype(np.float32)
    field = np.asarray(Image.fromarray(((field * 20) + 128).clip(0, 255).astype(np.uint8)).resize(
        (size, size), Image.BILINEAR), np.float32) - 128
    img = Image.fromarray((STROMA + 0.4 * field).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    n = int(nuclei * size * size / 10_000)
    xy = rng.uniform(0, size, (n, 2))
    radius = rng.uniform(2, 5, n)
    shade = rng.normal(0, 18, (n, 3))
    for (x, y), r, d in zip(xy, radius, shade):
        colour = tuple(int(v) for v in (NUCLEUS + d).clip(0, 255))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return img


def object_mask(diameter: int) -> np.ndarray:
    """The objects' disk, a boolean ``(diameter, diameter)`` mask."""
    yy, xx = np.mgrid[:diameter, :diameter] + 0.5 - diameter / 2
    return yy**2 + xx**2 <= (diameter / 2) ** 2


def object_pattern(kind: str, object_px: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Which pixels of an ``(object_px, object_px)`` object are dark (bool): a tetromino per cell, S-shaped
    (``s``) or Z-shaped (``z``, the mirror image), half lying and half standing, in an order drawn from ``rng``
    (alternating without one). The same ``rng`` state gives an ``s`` object and its mirror image as ``z``."""
    if kind not in CLASSES:
        raise ValueError(f"unknown object {kind!r}; choose from {CLASSES}")
    n = object_px // CELL
    standing = np.arange(n * n) % 2 == 1
    if rng is not None:
        standing = rng.permutation(standing)
    shape = np.kron(S_TETROMINO, np.ones((UNIT, UNIT), bool))
    out = np.zeros((object_px, object_px), bool)
    offset = (object_px - n * CELL) // 2
    for c, stand in enumerate(standing):
        t = np.rot90(shape) if stand else shape
        top = offset + (c // n) * CELL + (CELL - t.shape[0]) // 2
        left = offset + (c % n) * CELL + (CELL - t.shape[1]) // 2
        out[top:top + t.shape[0], left:left + t.shape[1]] = t
    return out[:, ::-1].copy() if kind == "z" else out


def needle_image(rng: np.random.Generator, label: str, spec: NeedleSpec) -> tuple[np.ndarray, np.ndarray]:
    """One ``(size, size, 3)`` uint8 image of class ``label`` and its objects' top-left corners ``(objects, 2)``
    (at least one diameter apart and from the border)."""
    if spec.problem():
        raise ValueError(spec.problem())
    img = np.array(_background(rng, spec.size, spec.nuclei))
    d = spec.object_px
    corners: list[np.ndarray] = []
    for _ in range(1000 * spec.objects):  # at most half the room is taken, so this ends long before
        c = rng.integers(d, spec.size - 2 * d, 2)
        if all(np.abs(c - o).max() >= 2 * d for o in corners):
            corners.append(c)
        if len(corners) == spec.objects:
            break
    else:
        raise ValueError(f"could not place {spec.objects} objects of {d} px in a {spec.size} px image")
    for top, left in corners:
        shift = rng.normal(0, 6, 3)
        dark = object_pattern(label, d, rng)
        img[top:top + d, left:left + d][dark] = (OBJECT + shift).clip(0, 255).astype(np.uint8)
    return img, np.array(corners)


def write_needle_study(root: str | os.PathLike, spec: NeedleSpec, progress=None) -> pd.DataFrame:
    """Write ``root/{train,test}/{s,z}/<i>.png`` (torchvision's ImageFolder layout with a fixed test set)
    and ``root/objects.tsv`` (where every object is; image paths relative to ``root``); returns the sheet
    ``image, label, split``."""
    rng = np.random.default_rng(spec.seed)
    rows, objects = [], []
    for split, n in (("train", spec.n_train), ("test", spec.n_test)):
        for label in CLASSES:
            os.makedirs(os.path.join(root, split, label), exist_ok=True)
        for i in range(n * len(CLASSES)):
            label = CLASSES[i % len(CLASSES)]
            img, corners = needle_image(rng, label, spec)
            path = os.path.join(root, split, label, f"{i // len(CLASSES):04d}.png")
            Image.fromarray(img).save(path, optimize=False, compress_level=1)
            rows.append({"image": path, "label": label, "split": split})
            rel = os.path.relpath(path, root)
            objects += [{"image": rel, "top": int(t), "left": int(l), "diameter": spec.object_px} for t, l in corners]
            if progress:
                progress(len(rows), (spec.n_train + spec.n_test) * len(CLASSES))
    pd.DataFrame(objects).to_csv(os.path.join(root, "objects.tsv"), sep="\t", index=False)
    with open(os.path.join(root, "SYNTHETIC_DATA.txt"), "w") as fh:
        fh.write(f"Synthetic images from histexpr.data.needles ({spec}); not real tissue.\n")
    return pd.DataFrame(rows)
