"""Figures of a study: sweeps (EGN Fig. 7) and latent spaces (EGN Fig. 6).

Matplotlib with the Agg backend; every function writes one PNG atomically.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .utils import atomic_path

log = logging.getLogger(__name__)

PAPER_NAMES = {"egn": "EGN (all components)", "egn_backbone_only": "Backbone only",
               "egn_no_eb_block": "w/o EB block", "egn_no_projector": "w/o projector",
               "egn_pretrained_e_linear": "Pretrained E(·) + linear"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sweep_figure(sweeps: pd.DataFrame, path: str, metrics=("PCC@M", "MSE", "MAE")) -> None:
    """One row of panels per swept parameter: each metric (mean ± sd over folds) against the value.

    Args:
        sweeps: rows of the metrics table with ``param``, ``value``, ``protocol`` and
            ``evaluation`` columns (the aggregate rule's ``sweeps.tsv``).
    """
    plt = _plt()
    pooled = sweeps[sweeps["evaluation"] == "pooled"]
    params = list(dict.fromkeys(pooled["param"]))
    fig, axes = plt.subplots(len(params), len(metrics), figsize=(4 * len(metrics), 3.2 * len(params)), squeeze=False)
    for i, param in enumerate(params):
        part = pooled[pooled["param"] == param]
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            for (model, protocol), g in part.groupby(["base_model", "protocol"], sort=False):
                g = g.sort_values("value")
                ax.errorbar(g["value"], g[metric], yerr=g[f"{metric}_sd"], marker="o", capsize=3,
                            label=f"{model}, {protocol}")
            ax.set_xlabel(param)
            ax.set_ylabel(f"{metric} (pooled, mean ± sd over folds)")
            ax.grid(alpha=0.3)
        axes[i, 0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def latent_figure(latents: dict[str, "object"], path: str, n_clusters: int = 4, seed: int = 0,
                  max_points: int = 2000) -> pd.DataFrame:
    """t-SNE of each model's representation of the same test windows (EGN Fig. 6).

    Each representation is standardised per feature (clipped at ±5 SD), reduced
    to 50 principal components, then embedded.

    Args:
        latents: ``{model: AnnData}`` of one fold's test predictions, each with
            ``obsm["X_latent"]``, the ``truth`` layer and ``obs["sample"]``.
        n_clusters: windows are coloured by k-means clusters of their measured
            expression (the first model's truth; PCA to 20 dimensions), so a
            reader sees whether windows that express alike sit together.

    Returns:
        Per model, the silhouette of the expression clusters in the latent space
        (higher = expression groups better separated).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    plt = _plt()
    names = list(latents)
    first = latents[names[0]]
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(first.n_obs, min(max_points, first.n_obs), replace=False))
    truth = np.asarray(first.layers["truth"])[keep]
    pcs = PCA(n_components=min(20, truth.shape[1], len(truth) - 1), random_state=seed).fit_transform(truth)
    clusters = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(pcs)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 7), squeeze=False)
    rows = []
    for j, name in enumerate(names):
        a = latents[name][keep].copy()
        a.obs["expression cluster"] = pd.Categorical(clusters.astype(str))
        # standardise each feature (h and the pooled patches differ in scale), then 50 PCs, then t-SNE
        z = np.asarray(a.obsm["X_latent"], dtype=np.float64)
        z = np.clip((z - z.mean(0)) / np.where(z.std(0) > 1e-12, z.std(0), 1.0), -5, 5)  # outliers bound
        a.obsm["X_latent_pca"] = PCA(n_components=min(50, z.shape[1], len(z) - 1), random_state=seed).fit_transform(z)
        # scikit-learn's t-SNE with PCA initialisation (scanpy's wrapper scattered a few far outliers here)
        a.obsm["X_tsne"] = TSNE(init="pca", random_state=seed,
                                perplexity=min(30.0, (a.n_obs - 1) / 3)).fit_transform(a.obsm["X_latent_pca"])
        sil = float(silhouette_score(a.obsm["X_latent_pca"], clusters)) if n_clusters > 1 else float("nan")
        rows.append({"model": name, "silhouette_expression_clusters": sil, "n_windows": int(a.n_obs)})
        for i, key in enumerate(("expression cluster", "sample")):
            ax = axes[i, j]
            codes = pd.Categorical(a.obs[key].astype(str))
            xy = a.obsm["X_tsne"]
            for c, label in enumerate(codes.categories):
                m = codes.codes == c
                ax.scatter(xy[m, 0], xy[m, 1], s=4, label=label)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{PAPER_NAMES.get(name, name)}\n{key}" + (f" (silhouette {sil:.2f})" if i == 0 else ""),
                         fontsize=9)
            if j == 0:
                ax.legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return pd.DataFrame(rows)


def confusion_figure(confusion: pd.DataFrame, path: str) -> None:
    """One panel per setting: rows the true class, columns the predicted one, shaded by the row fraction."""
    plt = _plt()
    settings = list(dict.fromkeys(confusion["setting"]))
    cols = min(4, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(settings):]:
        ax.axis("off")
    for ax, setting in zip(axes.ravel(), settings):
        c = confusion[confusion["setting"] == setting]
        classes = sorted(set(c["true"]))
        frac = c.pivot(index="true", columns="predicted", values="fraction").loc[classes, classes].to_numpy()
        count = c.pivot(index="true", columns="predicted", values="count").loc[classes, classes].to_numpy()
        ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, int(count[i, j]), ha="center", va="center", color="white" if frac[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{setting} (test, all folds)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def attention_figure(items: list[dict], path: str) -> None:
    """Per image: the image with its sampled full-resolution patches outlined, then the attention map.

    Args:
        items: dicts with ``image (H, W, 3)`` uint8, ``attention (h, w)``, ``corners (N, 2)`` (row, col),
            ``patch`` (px) and ``title``.
    """
    plt = _plt()
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(len(items), 2, figsize=(8, 3.0 * len(items)), squeeze=False)
    for (ax_img, ax_att), it in zip(axes, items):
        ax_img.imshow(it["image"])
        for top, left in it["corners"]:
            ax_img.add_patch(Rectangle((left, top), it["patch"], it["patch"], fill=False, edgecolor="yellow", lw=1.2))
        ax_img.set_title(it["title"], fontsize=9)
        h, w = it["image"].shape[:2]
        ax_att.imshow(it["image"], alpha=0.5)
        im = ax_att.imshow(it["attention"], cmap="magma", alpha=0.6, extent=(0, w, h, 0))
        fig.colorbar(im, ax=ax_att, fraction=0.035)
        ax_att.set_title("attention a(x) over the view", fontsize=9)
        for ax in (ax_img, ax_att):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
