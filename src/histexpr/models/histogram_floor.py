"""``colour_hist``: the floor every image classifier must clear — logistic regression on histograms.

Each whole image ``X`` (``H × W`` RGB, values in ``[0, 1]``) becomes a fixed vector of normalised histograms

    φ(X) = [ hist(X_c),            c ∈ {R, G, B, H, S, V}, ``bins`` each            (6·bins)
             hist_|∇|(θ_s),        gradient orientation in [0, π), weighted by
                                   magnitude, of the grey image at scales s ∈ {1, 2, 4}  (3·orientations)
             hist(log |∇_s|) ]     gradient magnitude at the same scales               (3·orientations)

standardised with the training images' mean and SD, and classified by
multinomial logistic regression whose inverse regularisation ``C`` is chosen
on the fold's validation images (test images are never seen). Nothing here
looks at where anything is: what it scores is what the image's colour and
texture statistics give away. On the lymphoma images HSV histograms carry most
of it (RGB and gradient histograms alone score about 12 points less).

Written here rather than taken from scikit-image: ``skimage.feature.hog`` gives local cell histograms of a
fixed layout, and the floor wants global, layout-free ones.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def histogram_features(image: np.ndarray, bins: int = 16, orientations: int = 12, scales=(1, 2, 4)) -> np.ndarray:
    """φ(X) of one ``(H, W, 3)`` uint8 image: ``(6·bins + 2·len(scales)·orientations,)`` float64."""
    rgb = image.astype(np.float64) / 255.0
    hsv = np.asarray(Image.fromarray(np.ascontiguousarray(image)).convert("HSV"), dtype=np.float64) / 255.0
    out = []
    for channel in [rgb[..., c] for c in range(3)] + [hsv[..., c] for c in range(3)]:
        h, _ = np.histogram(channel, bins=bins, range=(0.0, 1.0))
        out.append(h / h.sum())
    grey = rgb.mean(-1)
    for s in scales:
        g = grey[: grey.shape[0] // s * s, : grey.shape[1] // s * s]
        g = g.reshape(g.shape[0] // s, s, g.shape[1] // s, s).mean((1, 3))
        gy, gx = np.gradient(g)
        mag, angle = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
        h, _ = np.histogram(angle, bins=orientations, range=(0.0, np.pi), weights=mag)
        out.append(h / max(h.sum(), 1e-12))
        h, _ = np.histogram(np.log(mag + 1e-4), bins=orientations, range=(np.log(1e-4), 0.0))
        out.append(h / h.sum())
    return np.concatenate(out)


def fit_floor(features: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray, seed: int = 0):
    """Standardise + logistic regression fitted on ``train`` rows, ``C`` chosen by validation accuracy (ties: the
    smaller ``C``; with no validation rows the middle of the grid). Returns the model and one row per ``C``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    history, best = [], None
    grid = C_GRID if len(val) else (1.0,)
    for i, c in enumerate(grid, start=1):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
        model.fit(features[train], labels[train])
        row = {"epoch": i, "C": c, "train_acc": float((model.predict(features[train]) == labels[train]).mean())}
        if len(val):
            p = model.predict_proba(features[val])
            row["val_acc"] = float((p.argmax(1) == labels[val]).mean())
            row["val_ce"] = float(-np.mean(np.log(np.maximum(p[np.arange(len(val)), labels[val]], 1e-12))))
        history.append(row)
        if best is None or row.get("val_acc", 0.0) > best[0]:
            best = (row.get("val_acc", 0.0), i, model)
    for row in history:
        row["selected"] = row["epoch"] == best[1]
    return best[2], history
