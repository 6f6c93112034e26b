"""``knn``: predict each window's expression as the mean of its k exemplars.

With exemplar set ``K_i`` (the k nearest training windows of other patients in
the extractor's embedding space), ``ŷ_i = (1/|K_i|) Σ_{j ∈ K_i} y_j``. A floor
every deep model must beat: it uses the same retrieval as EGN and no learning.
"""

from __future__ import annotations

import logging

import numpy as np

from . import register_model

log = logging.getLogger(__name__)


@register_model("knn", kind="fitted", needs=("exemplars",), description="mean of the k exemplars' expression")
class ExemplarMean:
    def __init__(self, params: dict | None = None):
        self.params = params or {}

    def fit(self, data) -> ExemplarMean:
        self.targets = data.targets
        self.train_mean = data.targets[data.index("train")].mean(axis=0)
        return self

    def predict(self, data, index: np.ndarray) -> np.ndarray:
        ex = data.exemplar_index[index]  # (n, k), -1 where missing
        valid = ex >= 0
        summed = np.einsum("nk,nkg->ng", valid.astype(np.float64), self.targets[np.where(valid, ex, 0)])
        n = valid.sum(axis=1, keepdims=True)
        pred = np.where(n > 0, summed / np.maximum(n, 1), self.train_mean[None, :])
        if (n == 0).any():
            log.warning("knn: %d window(s) have no exemplar; predicted the training mean", int((n == 0).sum()))
        return pred.astype(np.float32)
