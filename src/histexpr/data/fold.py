"""Everything a model sees in one fold, aligned by row: targets, windows, embeddings, exemplars."""

from __future__ import annotations

import os

import numpy as np

from .windows import WindowStore


class FoldData:
    """One fold's data. Row ``i`` of every array belongs to the same spot.

    Args:
        targets: ``(N, G)`` normalised expression.
        split: ``(N,)`` ``"train"`` / ``"val"`` / ``"test"``.
        genes: the ``G`` gene names.
        windows: anything indexable by an int array giving ``(B, S, S, 3)``
            uint8 windows (a :class:`WindowStore` or an array), optional.
        embeddings: ``(N, D)`` extractor embeddings, optional.
        exemplar_index, exemplar_distance: ``(N, k)`` exemplar rows (-1 = none)
            and distances, optional.
    """

    def __init__(self, targets: np.ndarray, split: np.ndarray, genes: list[str], windows=None,
                 embeddings: np.ndarray | None = None, exemplar_index: np.ndarray | None = None,
                 exemplar_distance: np.ndarray | None = None, adata=None):
        self.targets = np.asarray(targets, dtype=np.float32)
        self.split = np.asarray(split).astype(str)
        self.genes = list(genes)
        self.windows = windows
        self.embeddings = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        self.exemplar_index = exemplar_index
        self.exemplar_distance = exemplar_distance
        self.adata = adata
        n = len(self.targets)
        for name, arr in (("split", self.split), ("windows", windows), ("embeddings", self.embeddings),
                          ("exemplar_index", exemplar_index)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows for {n} spots; fold inputs disagree")

    @classmethod
    def load(cls, expression, window_paths: dict | None = None, embeddings: str | os.PathLike | None = None,
             exemplars: str | os.PathLike | None = None, windows_in_memory: bool = False) -> FoldData:
        """From the workflow's files: ``expression.h5ad`` (or AnnData), ``{sample: windows.npy}``,
        ``embeddings.npy`` and ``exemplars.npz``."""
        import anndata as ad

        adata = expression if isinstance(expression, ad.AnnData) else ad.read_h5ad(expression)
        windows = None
        if window_paths:
            order = list(dict.fromkeys(adata.obs["sample"].astype(str)))
            missing = [s for s in order if s not in window_paths]
            if missing:
                raise ValueError(f"no windows for sample(s) {missing}")
            windows = WindowStore([window_paths[s] for s in order], in_memory=windows_in_memory)
        ex_idx = ex_dist = None
        if exemplars:
            z = np.load(exemplars)
            ex_idx, ex_dist = z["index"], z["distance"]
        return cls(np.asarray(adata.X), adata.obs["split"].to_numpy(), adata.var_names.tolist(), windows,
                   np.load(embeddings) if embeddings else None, ex_idx, ex_dist, adata=adata)

    def index(self, split: str) -> np.ndarray:
        """Row numbers of ``train``, ``val`` or ``test``."""
        return np.flatnonzero(self.split == split)

    @property
    def n_genes(self) -> int:
        return len(self.genes)
