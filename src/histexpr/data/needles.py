"""A synthetic megapixel task where the class sits in a few small objects: the regime attention sampling is for.

Every image is H&E-like background texture (pink stroma under a smooth stain field, scattered purple nuclei)
with ``objects`` small round objects at random places, filled with a fine pattern of dark and pale pixels:
stripes (3-px bands, horizontal or vertical) in a ``stripes`` image, a 3-px checkerboard in a ``checks``
image. Both patterns are half dark, so every view cell (16 × 16 px at ``view_scale`` 1/16) over an object
averages to the same colour in both classes: the downscaled view shows *where* the objects are (dark dots)
but not *which* they are, colour statistics of the whole image do not differ, and only full-resolution
patches on the objects tell the classes apart. A few ``P``-px patches drawn uniformly from a 1024 × 1024
image rarely land on one (each object covers under 0.05% of the image); patches drawn where the view is dark
do. (Rings against disks of equal area, our first try, left the view CNN at 97%: at 1/16 a disk's darkness
sits in one cell and a ring's spreads over its neighbours.)

We generate our own rather than use Megapixel MNIST (the seed's synthetic set): no download at run time,
H&E-like colours, and the object size, count and image size are parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

CLASSES = ("checks", "stripes")
STROMA = np.array([236, 196, 214], np.float32)  # eosin pink
NUCLEUS = np.array([150, 100, 185], np.float32)  # haematoxylin purple
OBJECT = np.array([25, 20, 50], np.float32)  # the dark half of the class-bearing objects: darker than any nucleus
PALE = np.array([215, 205, 230], np.float32)  # their pale half
PERIOD = 3  # px per band or square


@dataclass
class NeedleSpec:
    """``n_train`` / ``n_test`` images per class, ``size`` px square, ``objects`` objects of ``object_px``
    diameter each, ``nuclei`` background nuclei per 10 000 px²."""

    n_train: int = 80
    n_test: int = 40
    size: int = 1024
    objects: int = 3
    object_px: int = 24
    nuclei: float = 12.0
    seed: int = 0

    def problem(self) -> str | None:
        """Why these objects cannot be placed (each needs a free square of twice its diameter, away from the
        border), or None."""
        room = self.size - 3 * self.object_px
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


def object_pattern(kind: str, diameter: int, vertical: bool = False) -> np.ndarray:
    """Which pixels of an object are dark: ``stripes`` (bands of ``PERIOD`` px, horizontal or ``vertical``) or
    ``checks`` (a checkerboard of ``PERIOD``-px squares); half of each, ``(diameter, diameter)`` bool."""
    yy, xx = np.mgrid[:diameter, :diameter] // PERIOD
    if kind == "stripes":
        return (xx if vertical else yy) % 2 == 0
    if kind == "checks":
        return (yy + xx) % 2 == 0
    raise ValueError(f"unknown object {kind!r}; choose from {CLASSES}")


def needle_image(rng: np.random.Generator, label: str, spec: NeedleSpec) -> tuple[np.ndarray, np.ndarray]:
    """One ``(size, size, 3)`` uint8 image of class ``label`` and its objects' top-left corners ``(objects, 2)``
    (at least one diameter apart and from the border)."""
    if spec.problem():
        raise ValueError(spec.problem())
    img = np.array(_background(rng, spec.size, spec.nuclei))
    d = spec.object_px
    disk = object_mask(d)
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
        dark = object_pattern(label, d, vertical=bool(rng.integers(2)))
        shift = rng.normal(0, 6, 3)
        window = img[top:top + d, left:left + d]
        window[disk & dark] = (OBJECT + shift).clip(0, 255).astype(np.uint8)
        window[disk & ~dark] = (PALE + shift).clip(0, 255).astype(np.uint8)
    return img, np.array(corners)


def write_needle_study(root: str | os.PathLike, spec: NeedleSpec, progress=None) -> pd.DataFrame:
    """Write ``root/{train,test}/{disk,ring}/<i>.png`` (torchvision's ImageFolder layout with a fixed test set)
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
