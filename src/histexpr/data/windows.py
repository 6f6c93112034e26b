"""Access to the tiled windows of many samples through one global index.

Each sample's windows live in one memory-mapped ``(n, S, S, 3)`` uint8
``.npy`` file; a :class:`WindowStore` concatenates them virtually in study
order, so a batch gathers only the rows it needs.
"""

from __future__ import annotations

import os

import numpy as np


class WindowStore:
    """Windows of several samples behind one index ``0 .. len-1``.

    Args:
        paths: ``.npy`` files in the order their rows appear in the fold's obs.
        in_memory: load the arrays instead of memory-mapping them.
    """

    def __init__(self, paths: list[str | os.PathLike], in_memory: bool = False):
        mode = None if in_memory else "r"
        self.arrays = [np.load(os.fspath(p), mmap_mode=mode) for p in paths]
        sizes = [len(a) for a in self.arrays]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        shapes = {a.shape[1:] for a in self.arrays if len(a)}
        if len(shapes) > 1:
            raise ValueError(f"windows differ in shape across samples: {sorted(shapes)}")
        self.shape = (int(self.offsets[-1]),) + (shapes.pop() if shapes else (0, 0, 3))

    def __len__(self) -> int:
        return int(self.offsets[-1])

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
