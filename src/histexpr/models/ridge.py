"""``ridge``: ridge regression on the extractor's global views — a second non-deep floor.

Like the HEST-Benchmark's linear probes: the frozen extractor's embedding
``e_i`` of each window (the same ``E(·)`` EGN retrieves with) is standardised
and mapped to the ``M`` genes by ridge regression,
``W_α = argmin ||Y - 1μᵀ - Φ W||² + α ||W||²``, solved for every ``α`` of a
grid from one SVD ``Φ = U Σ Vᵀ``: ``W_α = V diag(σ / (σ² + α)) Uᵀ (Y - 1μᵀ)``.
``α`` is chosen by PCC@M on the validation split (generalised
cross-validation on the training windows when a fold has none), and the
model is refit on training + validation windows (``refit``); test windows are
never seen. :class:`Ridge` is the solver both this and ``colour_ridge`` use;
they differ only in ``features``.
"""

from __future__ import annotations

import logging

import numpy as np

from . import register_model

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = [10.0**e for e in np.arange(-1.0, 5.01, 0.5)]


def _pcc_mean(t: np.ndarray, p: np.ndarray) -> float:
    from ..metrics import summarise

    value = summarise(t, p)["PCC@M"]
    return -np.inf if value != value else value


class Ridge:
    """Ridge regression of the targets on ``features(data, index)`` with ``α`` chosen as above."""

    name = "ridge"

    standardise = True  # each feature to unit variance on the training windows before the penalty

    def __init__(self, params: dict | None = None):
        params = params or {}
        self.alphas = [float(a) for a in params.get("alphas") or DEFAULT_ALPHAS]
        self.refit = bool(params.get("refit", True))

    def features(self, data, index: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _solve(self, phi: np.ndarray, y: np.ndarray):
        """Standardise on these windows and return ``coef(alpha)`` from one SVD, plus the SVD parts."""
        self.mu = phi.mean(0)
        self.sd = np.where(phi.std(0) > 1e-12, phi.std(0), 1.0) if self.standardise else np.ones(phi.shape[1])
        self.y_mean = y.mean(0)
        u, sig, vt = np.linalg.svd((phi - self.mu) / self.sd, full_matrices=False)
        uty = u.T @ (y - self.y_mean)  # (r, G)

        def coef(alpha):
            return vt.T @ ((sig / (sig**2 + alpha))[:, None] * uty)

        return coef, sig, uty

    def fit(self, data) -> Ridge:
        train, val = data.index("train"), data.index("val")
        phi = self.features(data, train)
        y = data.targets[train].astype(np.float64)
        coef, sig, uty = self._solve(phi, y)
        if len(val):
            phi_val = self.features(data, val)
            zv = (phi_val - self.mu) / self.sd
            scores = [_pcc_mean(data.targets[val], zv @ coef(a) + self.y_mean) for a in self.alphas]
            how = "validation PCC@M"
        else:  # generalised cross-validation: ||(I - H) y||² / n / (1 - tr(H)/n)²
            n = len(train)
            resid0 = ((y - self.y_mean) ** 2).sum() - (uty**2).sum()  # part of y outside span(U)
            scores = []
            for a in self.alphas:
                shrink = sig**2 / (sig**2 + a)
                rss = resid0 + (((1 - shrink)[:, None] * uty) ** 2).sum()
                scores.append(-rss / n / (1 - shrink.sum() / n) ** 2)
            how = "generalised cross-validation (no validation split)"
        # Scores equal to rounding (e.g. depth_oracle's one feature: PCC is blind to the shrinkage) are a tie,
        # and a tie keeps the least shrinkage rather than whichever alpha rounding favoured.
        top = float(np.max(scores))
        tied = [i for i, v in enumerate(scores) if v >= top - 1e-9 * max(1.0, abs(top))]
        best = min(tied, key=lambda i: self.alphas[i])
        flat = len(tied) == len(scores)
        self.alpha = self.alphas[best]
        self.scores = dict(zip(self.alphas, map(float, scores)))
        if self.refit and len(val):
            coef, _, _ = self._solve(np.concatenate([phi, phi_val]),
                                     np.concatenate([y, data.targets[val].astype(np.float64)]))
        self.coef = coef(self.alpha)
        self.n_fit_windows = len(train) + (len(val) if self.refit else 0)
        log.info("%s: %d features, %d training windows; alpha %.3g chosen by %s (score %.4f)%s",
                 self.name, phi.shape[1], len(train), self.alpha, how, scores[best],
                 f"; refit on {len(train) + len(val)} training + validation windows" if self.refit and len(val) else "")
        if flat and len(self.alphas) > 1:
            log.info("%s: the %s does not depend on alpha (equal for all %d values); the smallest, %.3g, is kept",
                     self.name, how, len(self.alphas), self.alpha)
        elif len(self.alphas) > 1 and best in (0, len(self.alphas) - 1):
            log.warning("%s: alpha %.3g is at the edge of the grid %s; widen model_params.%s.alphas",
                        self.name, self.alpha, [f"{a:.3g}" for a in self.alphas], self.name)
        return self

    def predict(self, data, index: np.ndarray) -> np.ndarray:
        if len(index) == 0:  # e.g. fold 0, which has no test windows
            return np.zeros((0, self.coef.shape[1]), np.float32)
        z = (self.features(data, index) - self.mu) / self.sd
        return (z @ self.coef + self.y_mean).astype(np.float32)


@register_model("ridge", kind="fitted", needs=("embeddings",),
                description="ridge regression on the extractor's embeddings (a floor)")
class EmbeddingRidge(Ridge):
    name = "ridge"

    def features(self, data, index: np.ndarray) -> np.ndarray:
        if data.embeddings is None:
            raise ValueError("ridge needs the fold's extractor embeddings")
        return data.embeddings[index].astype(np.float64)


@register_model("depth_oracle", kind="fitted", needs=(),
                description="each gene from the spot's own measured log total count (an oracle: reads test counts)")
class DepthOracle(Ridge):
    """``depth_oracle``: each gene predicted from the spot's own log total count, ``log1p(library_size)``,
    by the same ridge fit on training spots. It reads the *test* spot's measured counts, so it is an oracle,
    not a method: it shows how much of a table's PCC any model could get from sequencing depth (cellularity)
    alone. Tables mark it and never call it the best."""

    name = "depth_oracle"

    def features(self, data, index: np.ndarray) -> np.ndarray:
        obs = data.adata.obs
        if "library_size" not in obs:
            raise ValueError("depth_oracle needs obs['library_size'] in the fold's expression table")
        return np.log1p(obs["library_size"].to_numpy(dtype=np.float64)[index])[:, None]


@register_model("probe", kind="fitted", needs=("embeddings",),
                description="HEST's linear probe: PCA of the embeddings, then ridge (a floor for any encoder)")
class Probe(Ridge):
    """``probe``: the HEST-Benchmark recipe on any window embedding ``e_i`` (an extractor's, or a pathology
    foundation model's). Standardise ``e`` on the training windows, project on their first ``n_components``
    principal axes, ``z = ((e - μ) / σ) V_k``, then ridge on ``z`` (no second standardisation, as
    ``Pipeline(StandardScaler, PCA, Ridge)`` does). ``alpha``: chosen on validation from ``alphas`` like
    ``ridge``, or HEST's rule ``100 / (k · M)`` (``alpha_rule: hest``; HEST also drops the intercept, we keep
    it). PCA sees training windows only."""

    name = "probe"
    standardise = False

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        params = params or {}
        self.n_components = int(params.get("n_components", 256))
        self.alpha_rule = params.get("alpha_rule", "validation")

    def fit(self, data) -> Probe:
        if data.embeddings is None:
            raise ValueError("probe needs the fold's embeddings")
        e = data.embeddings[data.index("train")].astype(np.float64)
        self.e_mu = e.mean(0)
        self.e_sd = np.where(e.std(0) > 1e-12, e.std(0), 1.0)
        _, _, vt = np.linalg.svd((e - self.e_mu) / self.e_sd, full_matrices=False)
        self.components = vt[: min(self.n_components, len(vt))].T  # (d, k)
        if self.alpha_rule == "hest":
            self.alphas = [100.0 / (self.components.shape[1] * data.n_genes)]
        log.info("probe: PCA %d -> %d dimensions on %d training windows", e.shape[1], self.components.shape[1],
                 len(e))
        self.note = None
        if self.n_components >= len(vt):
            self.note = (f"probe = ridge on the standardised embedding here: n_components ({self.n_components}) is "
                         "no fewer than the directions the training embeddings span, so PCA keeps them all")
            log.warning("probe: n_components (%d) is no fewer than the %d directions the training embeddings span "
                        "(%d dimensions, %d windows): PCA keeps them all, so probe is ridge on the standardised "
                        "embedding; its row and ridge's differ only by their alpha grids", self.n_components, len(vt),
                        e.shape[1], len(e))
        return super().fit(data)

    def features(self, data, index: np.ndarray) -> np.ndarray:
        e = data.embeddings[index].astype(np.float64)
        return ((e - self.e_mu) / self.e_sd) @ self.components
