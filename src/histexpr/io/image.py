"""Slide images, read region by region through OpenSlide.

Whole-slide formats (pyramidal TIFF, SVS, NDPI, MRXS, ...) are read by
OpenSlide one region at a time, from the pyramid level closest to the wanted
resolution, so a window never needs the whole slide in memory. Plain JPEG/PNG
files go through OpenSlide's :class:`~openslide.ImageSlide` (Pillow), which has
to decode the file once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError

# Histology images are large by nature; these files are the user's own. Pillow's own bomb check is off, and
# Slide.check_size applies ours: a plain (non-pyramidal) image is decoded whole, so its size is capped.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_MEGAPIXELS = 1000.0


@dataclass
class Slide:
    """An opened slide image.

    Attributes:
        path: the file.
        width, height: level-0 size in pixels.
        mpp: micrometres per level-0 pixel from the file's metadata, if any.
    """

    path: str
    _slide: object

    @property
    def width(self) -> int:
        return int(self._slide.dimensions[0])

    @property
    def height(self) -> int:
        return int(self._slide.dimensions[1])

    @property
    def mpp(self) -> float | None:
        props = getattr(self._slide, "properties", {})
        try:
            value = float(props.get("openslide.mpp-x"))
        except (TypeError, ValueError):
            return None
        return value if value > 0 else None

    @property
    def exif_orientation(self) -> int:
        """The EXIF orientation tag of a JPEG/TIFF read through Pillow (1 = as stored; 2-8 = viewers rotate or
        mirror it for display). histexpr always reads the stored pixels."""
        image = getattr(self._slide, "_image", None)
        try:
            return int(image.getexif().get(0x0112, 1)) if image is not None else 1
        except Exception:
            return 1

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(self._slide.level_downsamples)

    def read(self, x: int, y: int, w: int, h: int, downsample: float = 1.0) -> np.ndarray:
        """Read the level-0 box ``(x, y, w, h)``, at roughly ``downsample``.

        Returns an ``(H', W', 3)`` uint8 RGB array read from the pyramid level
        closest to (not coarser than) ``downsample``; transparent pixels (off
        the image) are composited on white.
        """
        level = 0
        if downsample > 1 and len(self.level_downsamples) > 1:
            level = int(self._slide.get_best_level_for_downsample(downsample))
        ds = self.level_downsamples[level]
        size = (max(1, int(round(w / ds))), max(1, int(round(h / ds))))
        try:
            region = self._slide.read_region((int(x), int(y)), level, size)
        except Exception as err:  # openslide and PIL raise various errors on corrupt data
            raise InputError(self.path, f"cannot decode image data ({err})") from None
        rgba = np.asarray(region, dtype=np.uint8)
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return rgb.round().astype(np.uint8)

    @property
    def pyramidal(self) -> bool:
        """Read region by region (OpenSlide formats); plain JPEG/PNG files are decoded whole."""
        import openslide

        return not isinstance(self._slide, openslide.ImageSlide)

    def check_size(self, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> None:
        """A plain image must be decoded whole: refuse one whose header declares more than ``max_megapixels``."""
        mpx = self.width * self.height / 1e6
        if not self.pyramidal and mpx > max_megapixels:
            raise InputError(self.path, f"the header declares {self.width}x{self.height} px ({mpx:.0f} Mpx, "
                                        f"~{mpx * 4 / 1000:.1f} GB decoded); a plain image is decoded whole and "
                                        f"this exceeds tiling.max_image_megapixels = {max_megapixels:g}. Convert it "
                                        f"to a tiled pyramidal TIFF (e.g. vips tiffsave in.png out.tif --tile "
                                        f"--pyramid) or raise the limit")

    def is_blank(self) -> bool:
        """Every pixel (nearly) the same colour: a placeholder, not a tissue image."""
        thumb, _ = self.thumbnail(256)
        return float(thumb.reshape(-1, 3).astype(np.float32).std(axis=0).max()) < 1.0

    def thumbnail(self, max_px: int) -> tuple[np.ndarray, float]:
        """A downscaled RGB copy whose longer side is at most ``max_px``.

        Returns the array and its scale factor (thumbnail px per level-0 px).
        """
        scale = min(1.0, max_px / max(self.width, self.height))
        try:
            thumb = self._slide.get_thumbnail((max(1, int(self.width * scale)), max(1, int(self.height * scale))))
        except Exception as err:
            raise InputError(self.path, f"cannot decode image data ({err})") from None
        arr = np.asarray(thumb.convert("RGB"), dtype=np.uint8)
        return arr, arr.shape[1] / self.width

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ElementSlide:
    """OpenSlide's reading API (``dimensions``, ``level_downsamples``, ``read_region``, ``get_thumbnail``) over a
    SpatialData image element, single- or multi-scale, read region by region through dask: what
    :class:`Slide` needs to tile an image that lives in a ``.zarr`` store. Written here because spatialdata
    gives arrays, not a slide reader."""

    def __init__(self, element):
        if hasattr(element, "children"):  # a multiscale DataTree: scale0, scale1, ...
            arrays = [element[k]["image"] for k in sorted(element.children, key=lambda k: int(k.lstrip("scale")))]
        else:
            arrays = [element]
        self.levels = [a.transpose("y", "x", "c").data for a in arrays]
        h, w = self.levels[0].shape[:2]
        self.dimensions = (int(w), int(h))
        self.level_downsamples = tuple(w / lv.shape[1] for lv in self.levels)
        self.properties = {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return max(i for i, d in enumerate(self.level_downsamples) if d <= max(downsample, 1.0))

    def read_region(self, location, level: int, size):
        from PIL import Image

        ds, lv = self.level_downsamples[level], self.levels[level]
        x0, y0, (w, h) = int(round(location[0] / ds)), int(round(location[1] / ds)), size
        out = np.zeros((h, w, 4), np.uint8)  # transparent off the image, as OpenSlide
        ys, xs = slice(max(0, y0), min(lv.shape[0], y0 + h)), slice(max(0, x0), min(lv.shape[1], x0 + w))
        if ys.start < ys.stop and xs.start < xs.stop:
            part = np.asarray(lv[ys, xs, :3])
            if part.dtype != np.uint8:
                part = np.clip(part, 0, 255).astype(np.uint8)
            out[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0, :part.shape[2]] = part
            out[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0, 3] = 255
        return Image.fromarray(out, "RGBA")

    def get_thumbnail(self, size):
        from PIL import Image

        level = self.get_best_level_for_downsample(max(self.dimensions[0] / size[0], self.dimensions[1] / size[1]))
        lv = self.levels[level]
        rgb = np.asarray(lv[:, :, :3])
        img = Image.fromarray(rgb if rgb.dtype == np.uint8 else np.clip(rgb, 0, 255).astype(np.uint8))
        img.thumbnail(size, Image.LANCZOS)
        return img

    def close(self) -> None:
        pass


def split_store_path(path: str | os.PathLike) -> tuple[str, str, str] | None:
    """``(store, kind, name)`` of a path to a SpatialData element (``<store>.zarr/<kind>/<name>``), else None."""
    import re

    m = re.fullmatch(r"(.+\.zarr)/(images|tables|shapes|labels|points)/([^/]+)/?", os.fspath(path))
    return (m.group(1), m.group(2), m.group(3)) if m else None


def open_image(path: str | os.PathLike, check_decode: bool = False) -> Slide:
    """Open ``path`` with OpenSlide (falling back to Pillow for JPEG/PNG), or a SpatialData image element
    (``<store>.zarr/images/<name>``).

    With ``check_decode`` a pixel is read at once, so a truncated or corrupt
    file fails here with an :class:`InputError` rather than mid-way through
    tiling.
    """
    import openslide

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "image file not found")
    element = split_store_path(path)
    if element and element[1] == "images":
        from .spatialdata_in import read_store

        return Slide(path, ElementSlide(read_store(element[0], ("images",)).images[element[2]]))
    try:
        slide = openslide.open_slide(path)
    except Exception as err:
        raise InputError(path, f"not a readable image ({type(err).__name__}: {err})") from None
    out = Slide(path, slide)
    if check_decode:
        out.read(0, 0, 1, 1)
        if isinstance(slide, openslide.ImageSlide):
            # Pillow decodes lazily and tolerates some truncation at crop time; force a full load.
            try:
                slide._image.load()
            except Exception as err:
                raise InputError(path, f"cannot decode image data ({err})") from None
    return out
