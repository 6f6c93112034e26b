"""``colour_ridge``: the floor every model must clear — ridge regression on colour.

Each window ``X`` (``S × S`` RGB in ``[0, 1]``) becomes a fixed feature vector

    φ(X) = [ mean_c, std_c,                    per channel c          (3 + 3)
             hist_c(b) / S²,                   ``bins`` per channel   (3·bins)
             avgpool(X) to t × t,              a tiny thumbnail       (3·t²)
             mean(|∂x g|² + |∂y g|²) ]         gradient energy of the grey image (1)

standardised with the training windows' mean and SD, and the targets are fit
by ridge regression ``W_α = argmin ||Y - 1μᵀ - Φ W||² + α ||W||²``, solved for
every ``α`` of a grid at once from one SVD ``Φ = U Σ Vᵀ``:
``W_α = V diag(σ / (σ² + α)) Uᵀ (Y - 1μᵀ)``. ``α`` is chosen by PCC@M on the
validation split (by generalised cross-validation on the training windows
when a fold has no validation split), then the model is refit with that
``α`` on training + validation windows (``refit``; test windows are never
seen). The thumbnail is deliberately tiny (4 × 4): with 16 × 16 its 768
features swamp the rest and the floor overfits. Nothing here knows about cells or
tissue: what it predicts is what colour and coarse layout give away — mostly
a spot's total count (cellularity) under the ``raw`` target protocol.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from . import register_model

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = [10.0**e for e in np.arange(-1.0, 5.01, 0.5)]


def colour_features(windows: np.ndarray, bins: int = 16, thumbnail_px: int = 16) -> np.ndarray:
    """φ(X) for a batch of windows.

    Args:
        windows: ``(B, S, S, 3)`` uint8.
    Returns:
        ``(B, 6 + 3·bins + 3·thumbnail_px² + 1)`` float64.
    """
    x = torch.from_numpy(np.ascontiguousarray(windows)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S)
    b = x.shape[0]
    flat = x.reshape(b, 3, -1)
    mean, std = flat.mean(-1), flat.std(-1, correction=0)
    idx = (flat * bins).long().clamp_(0, bins - 1)
    hist = torch.zeros(b, 3, bins).scatter_add_(2, idx, torch.ones_like(flat)) / flat.shape[-1]
    thumb = F.adaptive_avg_pool2d(x, thumbnail_px).reshape(b, -1)
    grey = x.mean(1)
    energy = ((grey[:, :, 1:] - grey[:, :, :-1]) ** 2).mean((1, 2)) + ((grey[:, 1:] - grey[:, :-1]) ** 2).mean((1, 2))
    return torch.cat([mean, std, hist.reshape(b, -1), thumb, energy[:, None]], 1).double().numpy()


def _pcc_mean(t: np.ndarray, p: np.ndarray) -> float:
    from ..metrics import summarise

    value = summarise(t, p)["PCC@M"]
    return -np.inf if value != value else value


@register_model("colour_ridge", kind="fitted", needs=("windows",),
                description="ridge regression on colour statistics and a thumbnail (a floor)")
class ColourRidge:
    def __init__(self, params: dict | None = None):
        params = params or {}
        self.alphas = [float(a) for a in params.get("alphas") or DEFAULT_ALPHAS]
        self.bins = int(params.get("bins", 16))
        self.thumbnail_px = int(params.get("thumbnail_px", 4))
        self.refit = bool(params.get("refit", True))
        self.batch = int(params.get("batch_size", 512))

    def features(self, data, index: np.ndarray) -> np.ndarray:
        if data.windows is None:
            raise ValueError("colour_ridge needs the fold's windows")
        parts = [colour_features(data.windows[index[i:i + self.batch]], self.bins, self.thumbnail_px)
                 for i in range(0, len(index), self.batch)]
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def _solve(self, phi: np.ndarray, y: np.ndarray):
        """Standardise on these windows and return ``coef(alpha)`` from one SVD, plus the SVD parts."""
        self.mu = phi.mean(0)
        self.sd = np.where(phi.std(0) > 1e-12, phi.std(0), 1.0)
        self.y_mean = y.mean(0)
        u, sig, vt = np.linalg.svd((phi - self.mu) / self.sd, full_matrices=False)
        uty = u.T @ (y - self.y_mean)  # (r, G)

        def coef(alpha):
            return vt.T @ ((sig / (sig**2 + alpha))[:, None] * uty)

        return coef, sig, uty

    def fit(self, data) -> "ColourRidge":
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
        best = int(np.argmax(scores))
        self.alpha = self.alphas[best]
        self.scores = dict(zip(self.alphas, map(float, scores)))
        if self.refit and len(val):
            coef, _, _ = self._solve(np.concatenate([phi, phi_val]),
                                     np.concatenate([y, data.targets[val].astype(np.float64)]))
        self.coef = coef(self.alpha)
        log.info("colour_ridge: %d features, %d training windows; alpha %.3g chosen by %s (score %.4f)%s",
                 phi.shape[1], len(train), self.alpha, how, scores[best],
                 f"; refit on {len(train) + len(val)} training + validation windows" if self.refit and len(val) else "")
        if len(self.alphas) > 1 and best in (0, len(self.alphas) - 1):
            log.warning("colour_ridge: alpha %.3g is at the edge of the grid %s; widen model_params.colour_ridge."
                        "alphas", self.alpha, [f"{a:.3g}" for a in self.alphas])
        return self

    def predict(self, data, index: np.ndarray) -> np.ndarray:
        z = (self.features(data, index) - self.mu) / self.sd
        return (z @ self.coef + self.y_mean).astype(np.float32)
