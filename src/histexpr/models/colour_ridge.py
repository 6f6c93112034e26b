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

import numpy as np
import torch
import torch.nn.functional as F

from . import register_model
from .ridge import Ridge


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


@register_model("colour_ridge", kind="fitted", needs=("windows",),
                description="ridge regression on colour statistics and a thumbnail (a floor)")
class ColourRidge(Ridge):
    name = "colour_ridge"

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        params = params or {}
        self.bins = int(params.get("bins", 16))
        self.thumbnail_px = int(params.get("thumbnail_px", 4))
        self.batch = int(params.get("batch_size", 512))

    def features(self, data, index: np.ndarray) -> np.ndarray:
        if data.windows is None:
            raise ValueError("colour_ridge needs the fold's windows")
        parts = [colour_features(data.windows[index[i:i + self.batch]], self.bins, self.thumbnail_px)
                 for i in range(0, len(index), self.batch)]
        return np.concatenate(parts) if parts else np.zeros((0, 0))
