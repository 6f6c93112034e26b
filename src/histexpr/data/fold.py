"""Everything a model sees in one fold, aligned by row: targets, windows, embeddings, exemplars."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np

from .windows import WindowStore


class FoldData:
    """One fold's data. Row ``i`` of every array is the fold's ``obs`` row ``i``.

    Args:
        expression: the fold's ``expression.h5ad`` (normalised targets, ``obs.split``).
        window_paths: ``{sample: windows.npy}``, for models that need windows.
        embeddings: ``embeddings.npy`` ``(N, D)``, optional.
        exemplars: ``exemplars.npz`` with ``index`` ``(N, k)`` (-1 = none) and
            ``distance``, optional.
    """

    def __init__(self, expression: str | os.PathLike | ad.AnnData, window_paths: dict | None = None,
                 embeddings: str | os.PathLike | None = None, exemplars: str | os.PathLike | None = None,
                 windows_in_memory: bool = False):
        self.adata = expression if isinstance(expression, ad.AnnData) else ad.read_h5ad(expression)
        self.obs = self.adata.obs
        self.genes = self.adata.var_names.tolist()
        self.targets = np.asarray(self.adata.X, dtype=np.float32)
        self.split = self.obs["split"].astype(str).to_numpy()
        self.windows = None
        if window_paths:
            order = list(dict.fromkeys(self.obs["sample"].astype(str)))
            missing = [s for s in order if s not in window_paths]
            if missing:
                raise ValueError(f"no windows for sample(s) {missing}")
            self.windows = WindowStore([window_paths[s] for s in order], in_memory=windows_in_memory)
            if len(self.windows) != len(self.obs):
                raise ValueError(f"{len(self.windows)} windows for {len(self.obs)} spots; tiles and expression disagree")
        self.embeddings = np.load(embeddings).astype(np.float32) if embeddings else None
        if exemplars:
            z = np.load(exemplars)
            self.exemplar_index, self.exemplar_distance = z["index"], z["distance"]
        else:
            self.exemplar_index = self.exemplar_distance = None

    def index(self, split: str) -> np.ndarray:
        """Row numbers of ``train``, ``val`` or ``test``."""
        return np.flatnonzero(self.split == split)

    @property
    def n_genes(self) -> int:
        return len(self.genes)
