"""Access to the tiled windows of many samples through one global index.

Each sample's windows live in one file, read lazily:

* ``.npy``: a memory-mapped ``(n, S, S, 3)`` uint8 array (the default; 150 KB a 224-px window).
* ``.jpg.h5``: every window a JPEG (4:4:4 chroma, quality 90 by default: about 11% of the uint8 bytes at
  44 dB PSNR on HER2ST), concatenated in one chunked HDF5 byte dataset with their offsets. A batch decodes
  only its own windows (libjpeg-turbo through torchvision, ~3,500 windows/s a core); a fold that fits on the
  GPU is decoded there once, by nvJPEG. HDF5 because anndata already brings h5py; plain bytes and offsets
  because nothing read back can execute code.

A :class:`WindowStore` concatenates the samples' files virtually in study order, so a batch gathers only
the rows it needs.
"""

from __future__ import annotations

import io
import logging
import os
import re

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

STORES = {"npy": ".npy", "jpeg": ".jpg.h5"}
JPEG_FORMAT = "histexpr-jpeg-windows/1"


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each ``(S, S, 3)`` uint8 pair along axis 0 (inf where equal)."""
    diff = (a.astype(np.int32) - b.astype(np.int32)).reshape(len(a), -1)
    mse = np.einsum("ij,ij->i", diff, diff, dtype=np.int64) / diff.shape[1]  # int64: 224^2*3*255^2 > 2^31
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


def encode_jpeg(windows: np.ndarray, quality: int = 90) -> list[bytes]:
    """JPEG bytes of each ``(S, S, 3)`` uint8 window, 4:4:4 chroma (H&E's fine colour detail survives)."""
    from PIL import Image
    from tqdm import tqdm

    out = []
    for w in tqdm(windows, desc="JPEG store", mininterval=2.0, disable=len(windows) < 20_000):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(w)).save(buf, "JPEG", quality=int(quality), subsampling=0)
        out.append(buf.getvalue())
    return out


def decode_jpeg(blobs: list, device=None) -> np.ndarray | object:
    """Decode JPEG byte strings to ``(B, S, S, 3)`` uint8: a NumPy array on the CPU, or a CUDA tensor when
    ``device`` is a CUDA device (torchvision's batched nvJPEG decode)."""
    import warnings

    import torch

    if not blobs:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 says its codecs move to torchcodec; they still work
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torchvision.io import decode_jpeg as tv_decode
        except ImportError:  # a torchvision without codecs: PIL on the CPU
            from PIL import Image

            return np.stack([np.asarray(Image.open(io.BytesIO(bytes(b))).convert("RGB")) for b in blobs])
        data = [torch.from_numpy(np.ascontiguousarray(b)) if isinstance(b, np.ndarray)
                else torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        if device is not None and torch.device(device).type == "cuda":
            return torch.stack(tv_decode(data, device=device)).permute(0, 2, 3, 1).contiguous()
        return torch.stack(tv_decode(data)).permute(0, 2, 3, 1).numpy()


def write_windows(windows: np.ndarray, path: str | os.PathLike, store: str = "npy", quality: int = 90) -> dict:
    """Write ``(n, S, S, 3)`` uint8 windows atomically as ``store`` (``npy`` or ``jpeg``).

    Returns what was written: ``bytes``, ``uint8_bytes`` and, for ``jpeg``, ``psnr_mean_db`` / ``psnr_min_db``
    measured by decoding every window again.
    """
    from ..utils import atomic_path

    windows = np.asarray(windows)
    if windows.dtype != np.uint8 or windows.ndim != 4 or windows.shape[-1] != 3:
        raise ValueError(f"windows must be (n, S, S, 3) uint8, got {windows.dtype} {windows.shape}")
    if store not in STORES:
        raise ValueError(f"unknown window store {store!r}; choose one of {', '.join(STORES)}")
    stats = {"store": store, "n": len(windows), "uint8_bytes": int(windows.nbytes)}
    if store == "npy":
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, windows)
        stats["bytes"] = os.path.getsize(path)
        return stats
    import h5py

    blobs = encode_jpeg(windows, quality)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    p = np.concatenate([psnr(windows[i:i + 256], decode_jpeg(blobs[i:i + 256]))
                        for i in range(0, len(blobs), 256)]) if blobs else np.array([np.inf])
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=JPEG_FORMAT, codec="jpeg", quality=int(quality), chroma="4:4:4",
                           shape=np.asarray(windows.shape, dtype=np.int64), psnr_mean_db=float(np.mean(p)),
                           psnr_min_db=float(np.min(p)))
            f.create_dataset("jpeg", data=data, chunks=(min(max(1, len(data)), 1 << 20),))
            f.create_dataset("offsets", data=offsets)
    stats.update(bytes=os.path.getsize(path), psnr_mean_db=float(np.mean(p)), psnr_min_db=float(np.min(p)))
    return stats


class JpegWindows:
    """The windows of one ``.jpg.h5`` file, indexable like the ``(n, S, S, 3)`` uint8 array they encode."""

    def __init__(self, path: str | os.PathLike, in_memory: bool = False):
        import h5py

        self.path = os.fspath(path)
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != JPEG_FORMAT:
                    raise InputError(self.path, f"not a histexpr JPEG window store "
                                                f"(format {f.attrs.get('format')!r}, expected {JPEG_FORMAT!r})")
                self.shape = tuple(int(v) for v in f.attrs["shape"])
                self.offsets = f["offsets"][()]
                self.quality = int(f.attrs["quality"])
                self._bytes = f["jpeg"][()] if in_memory else None
        except OSError as e:
            raise InputError(self.path, f"cannot read the window store ({e})") from e
        if len(self.offsets) != self.shape[0] + 1:
            raise InputError(self.path, f"{len(self.offsets) - 1} offsets for {self.shape[0]} windows")
        self._file = None

    def __len__(self) -> int:
        return self.shape[0]

    def blobs(self, idx) -> list:
        """The JPEG bytes of rows ``idx`` (an int array), in that order."""
        if self._bytes is not None:
            return [self._bytes[self.offsets[i]:self.offsets[i + 1]] for i in idx]
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        ds = self._file["jpeg"]
        return [ds[self.offsets[i]:self.offsets[i + 1]] for i in idx]

    def decode(self, idx, device=None):
        """Windows ``idx`` decoded (:func:`decode_jpeg`); a corrupt one is an error naming this file."""
        try:
            return decode_jpeg(self.blobs(idx), device)
        except RuntimeError as e:  # torchvision's decoder: bad bytes, or windows of another size
            why = re.sub(r"^.*\.cpp:\d+, ", "", (str(e).strip().splitlines() or [type(e).__name__])[0])
            raise InputError(self.path, f"windows {idx[0]}..{idx[-1]} do not decode as {self.shape[1]}-px JPEGs "
                                        f"({why[:200]}); tile the sample again") from e

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        return self.decode(idx) if len(idx) else np.zeros((0,) + self.shape[1:], dtype=np.uint8)

    def __getstate__(self):  # an open HDF5 handle does not cross process boundaries
        return {**self.__dict__, "_file": None}


def tile_sample(path: str | os.PathLike) -> str:
    """The sample name of a tile file: ``tiles/A1.npy`` or ``tiles/A1.jpg.h5`` -> ``A1``."""
    name = os.path.basename(os.fspath(path))
    for suffix in STORES.values():
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return os.path.splitext(name)[0]


def open_windows(path: str | os.PathLike, in_memory: bool = False):
    """One sample's windows: a (memory-mapped) ``.npy`` array or a :class:`JpegWindows`."""
    path = os.fspath(path)
    if path.endswith(STORES["jpeg"]):
        return JpegWindows(path, in_memory)
    return np.load(path, mmap_mode=None if in_memory else "r")


class WindowStore:
    """Windows of several samples behind one index ``0 .. len-1``.

    Args:
        paths: ``.npy`` or ``.jpg.h5`` files in the order their rows appear in the fold's obs.
        in_memory: load the arrays (or the JPEG bytes) instead of reading them lazily.
    """

    def __init__(self, paths: list[str | os.PathLike], in_memory: bool = False):
        self.arrays = [open_windows(p, in_memory) for p in paths]
        sizes = [len(a) for a in self.arrays]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        shapes = {tuple(a.shape[1:]) for a in self.arrays if len(a)}
        if len(shapes) > 1:
            raise ValueError(f"windows differ in shape across samples: {sorted(shapes)}")
        self.shape = (int(self.offsets[-1]),) + (shapes.pop() if shapes else (0, 0, 3))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def compressed(self) -> bool:
        return any(isinstance(a, JpegWindows) for a in self.arrays)

    def __getitem__(self, idx) -> np.ndarray:
        """Gather rows ``idx`` (an int array) as one ``(B, S, S, 3)`` uint8 array."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx),) + self.shape[1:], dtype=np.uint8)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for s in np.unique(which):
            sel = which == s
            local = idx[sel] - self.offsets[s]
            order = np.argsort(local)  # sorted reads are kinder to memory maps
            out[np.flatnonzero(sel)[order]] = self.arrays[s][local[order]]
        return out

    def to_tensor(self, device, batch: int = 1024):
        """Every window as one ``(N, S, S, 3)`` uint8 tensor on ``device``; JPEG files decode on a CUDA
        device there (nvJPEG), in batches of ``batch``."""
        import torch

        device = torch.device(device)
        if device.type != "cuda" or not self.compressed:
            return torch.as_tensor(self[np.arange(len(self))]).to(device)
        out = torch.empty(self.shape, dtype=torch.uint8, device=device)
        for a, start in zip(self.arrays, self.offsets[:-1]):
            for i in range(0, len(a), batch):
                rows = np.arange(i, min(i + batch, len(a)))
                part = (a.decode(rows, device) if isinstance(a, JpegWindows)
                        else torch.as_tensor(np.asarray(a[rows])).to(device))
                out[start + i:start + i + len(rows)] = part
        return out
