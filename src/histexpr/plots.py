"""Figures of a study: sweeps (EGN Fig. 7), latent spaces (EGN Fig. 6), and the report's tables and maps.

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


def _save(fig, path: str, dpi: int = 100) -> None:
    """Lay out, write ``fig`` to ``path`` as PNG atomically, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


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
    _save(fig, path, dpi=120)


def spot_sweep_figure(table: pd.DataFrame, path: str, reference: str | None = None,
                      oracle: str | None = None) -> None:
    """Per-section PCC@M against pseudo-spot size: one panel per (section, protocol), a line per model, the
    floor (``reference``) dashed and the depth oracle dotted, each fold's test section as the run scored it.

    Args:
        table: :func:`histexpr.metrics.spot_sweep_table` (``spot_um``, ``protocol``, ``section``, ``model``,
            ``PCC@M``).
    """
    plt = _plt()
    sections, protocols = list(dict.fromkeys(table["section"])), list(dict.fromkeys(table["protocol"]))
    fig, axes = plt.subplots(len(sections), len(protocols), figsize=(4.2 * len(protocols), 2.8 * len(sections)),
                             squeeze=False, sharex=True)
    styles = {reference: dict(ls="--", color="0.45"), oracle: dict(ls=":", color="0.2")}
    for i, section in enumerate(sections):
        for j, protocol in enumerate(protocols):
            ax = axes[i, j]
            part = table[(table["section"] == section) & (table["protocol"] == protocol)]
            for model, g in part.groupby("model", sort=False):
                g = g.sort_values("spot_um")
                label = model + (" (floor)" if model == reference else " (depth oracle)" if model == oracle else "")
                ax.plot(g["spot_um"], g["PCC@M"], marker="o", label=label, **styles.get(model, {}))
            ax.set_xscale("log")
            ax.set_xticks(sorted(part["spot_um"].unique()))
            ax.set_xticklabels([f"{v:g}" for v in sorted(part["spot_um"].unique())])
            ax.minorticks_off()
            ax.set_title(f"{section}, {protocol}", fontsize=9)
            ax.set_ylabel("PCC@M")
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("pseudo-spot side (um)")
    axes[0, -1].legend(fontsize=7, loc="best")
    _save(fig, path, dpi=110)


def latent_figure(latents: dict[str, object], path: str, n_clusters: int = 4, seed: int = 0,
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
    _save(fig, path, dpi=120)
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
    _save(fig, path, dpi=110)


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
    _save(fig, path, dpi=100)


def attention_concentration_figure(stats: pd.DataFrame, path: str, title: str) -> None:
    """How far the learned attention is from uniform over the test images: histograms of the largest cell over
    the mean cell (1 = uniform) and of the entropy over its uniform value ``log K`` (1 = uniform).

    Args:
        stats: one row per image with ``max_over_mean`` and ``entropy_ratio``.
    """
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    ax1.hist(stats["max_over_mean"], bins=20, color="#8c2d04")
    ax1.axvline(1.0, color="grey", ls="--", lw=1)
    ax1.set_xlabel("largest attention / mean attention (1 = uniform)")
    ax1.set_ylabel("test images")
    ax1.set_title(f"median {stats['max_over_mean'].median():.1f}x uniform", fontsize=9)
    ax2.hist(stats["entropy_ratio"], bins=20, range=(0, 1), color="#225ea8")
    ax2.set_xlabel("entropy / log K (1 = uniform)")
    ax2.set_title(f"median {stats['entropy_ratio'].median():.2f}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=100)


# --- The study report (snakemake --report): tables, per-gene PCC, spatial maps, training curves -------------


def metrics_html(sections: list[tuple], path: str, title: str, notes: list[str] = (),
                 best_first: bool = True) -> None:
    """Formatted tables (strings, as :func:`histexpr.metrics.display_blocks` makes them) as one
    self-contained HTML page (the report shows it in a frame): ``notes`` as lines on top, each section a
    heading and a table whose first row, the best, is marked. A section is ``(heading, table)``, or
    ``(heading, table, False)`` for a table whose first row is not a ranking's best (e.g. one row a section)."""
    import html

    style = ("body{font-family:sans-serif;font-size:13px;margin:1em;max-width:1200px}"
             "table{border-collapse:collapse;margin-bottom:1.5em}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
             "th{background:#f0f0f0}td.text,th.text{text-align:left}tr.best td{font-weight:bold;background:#eef6ee}"
             "p.note{margin:0.2em 0}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h2>{html.escape(title)}</h2>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    for name, table, *ranked in sections:
        mark = best_first and (ranked[0] if ranked else True)
        text_cols = {c for c in table.columns if c in ("model", "protocol", "group", "evaluation", "section")}
        parts.append(f"<h3>{html.escape(name)}</h3><table><tr>"
                     + "".join(f"<th{' class=text' if c in text_cols else ''}>{html.escape(str(c))}</th>"
                               for c in table.columns) + "</tr>")
        for i, row in enumerate(table.itertuples(index=False)):
            cls = " class='best'" if mark and i == 0 else ""
            cells = "".join(f"<td{' class=text' if c in text_cols else ''}>{html.escape(str(v))}</td>"
                            for c, v in zip(table.columns, row))
            parts.append(f"<tr{cls}>{cells}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    with atomic_path(path, suffix=".html") as tmp:
        with open(tmp, "w") as fh:
            fh.write("\n".join(parts))


def pcc_distribution_figure(genes: pd.DataFrame, path: str, groups: dict[str, str] | None = None) -> None:
    """Per protocol: each model's per-gene Pearson r (mean over folds) as a box over genes, best median first,
    a dot a gene, coloured by its group when ``groups`` (gene -> group, e.g. the demo's image / noise) is given.

    Args:
        genes: the aggregate rule's ``genes.tsv`` (``model``, ``protocol``, ``gene``, ``pcc``).
    """
    plt = _plt()
    protocols = list(dict.fromkeys(genes["protocol"]))
    n_models = genes["model"].nunique()
    fig, axes = plt.subplots(1, len(protocols), figsize=(max(5.0, 0.55 * n_models + 2) * len(protocols), 4.2),
                             squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        part = genes[genes["protocol"] == protocol].dropna(subset=["pcc"])
        order = part.groupby("model")["pcc"].median().sort_values(ascending=False).index.tolist()
        ax.boxplot([part.loc[part["model"] == m, "pcc"].to_numpy() for m in order], showfliers=False,
                   medianprops={"color": "black"})
        names = sorted(set((groups or {}).values()))
        colours = {g: f"C{k}" for k, g in enumerate(names)}
        for i, m in enumerate(order, start=1):
            rows = part[part["model"] == m]
            v = rows["pcc"].to_numpy()
            jitter = np.random.default_rng(i).uniform(-0.18, 0.18, len(v))
            c = [colours.get((groups or {}).get(g), "grey") for g in rows["gene"]] if groups else "tab:blue"
            ax.scatter(i + jitter, v, s=5 if groups else 4, alpha=0.6 if groups else 0.35, c=c, linewidths=0)
        if groups:
            for g in names:
                ax.scatter([], [], s=12, color=colours[g], label=f"{g} genes")
            ax.legend(fontsize=8, loc="best", title="each dot a gene", title_fontsize=8)
        ax.set_xticks(range(1, len(order) + 1), order, rotation=45, ha="right")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel("how well each gene is predicted\n(Pearson r over test spots, mean over folds)")
        ax.set_title(f"targets: {protocol}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    _save(fig, path, dpi=110)


def spatial_maps_figure(xy: np.ndarray, truth: np.ndarray, predicted: dict[str, np.ndarray], genes: list[str],
                        path: str, title: str, image: np.ndarray | None = None, scale: float = 1.0,
                        spot_px: float | None = None, unit: str = "target") -> None:
    """Measured vs predicted expression of a few genes on one slide, as scanpy-style spot plots over the H&E.

    Rows are genes; the first column is the measured value, then one column per model, each titled with its
    Pearson r on this slide. A row shares one colour scale (1st to 99th percentile of all its panels) and one
    colour bar in ``unit``, so a prediction that is too flat looks flat.

    Args:
        xy: (N, 2) spot centres in full-resolution pixels (``obsm["spatial"]``: x, y).
        truth: (N, G) measured values; ``predicted``: model -> (N, G), the same spots and genes and units.
        image: the slide's low-resolution image (H, W, 3), ``scale`` = its pixels per full-resolution pixel.
        spot_px: spot diameter in full-resolution pixels (sets the marker size).
    """
    plt = _plt()
    cols = 1 + len(predicted)
    fig, grid = plt.subplots(len(genes), cols + 1, figsize=(2.6 * cols + 1.2, 2.5 * len(genes) + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1.0] * cols + [0.07]})
    axes, bars = grid[:, :cols], grid[:, cols]
    pts = np.asarray(xy, dtype=float) * scale
    pad = (spot_px or 0) * scale
    x0, x1 = pts[:, 0].min() - pad, pts[:, 0].max() + pad
    y0, y1 = pts[:, 1].min() - pad, pts[:, 1].max() + pad
    span = max(x1 - x0, y1 - y0, 1.0)
    # Marker area in points²: the spot's diameter as a fraction of the panel's width (~1.9 inches).
    size = (spot_px * scale / span * 1.9 * 72) ** 2 if spot_px else 30
    for i, gene in enumerate(genes):
        panels = [("measured", truth[:, i])] + [(m, p[:, i]) for m, p in predicted.items()]
        lo, hi = np.nanpercentile(np.concatenate([v for _, v in panels]), [1, 99])
        for j, (name, values) in enumerate(panels):
            ax = axes[i, j]
            if image is not None:
                ax.imshow(image)
            sc = ax.scatter(pts[:, 0], pts[:, 1], c=values, s=size, cmap="viridis", vmin=lo, vmax=max(hi, lo + 1e-9),
                            linewidths=0, alpha=0.9)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y1, y0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(gene, fontsize=9)
                ax.set_title("measured", fontsize=9)
            else:
                r = np.corrcoef(truth[:, i], values)[0, 1] if np.std(values) > 0 and np.std(truth[:, i]) > 0 else np.nan
                ax.set_title(f"{name} (r = {r:.2f})", fontsize=9)
        fig.colorbar(sc, cax=bars[i], label=unit)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=100)


def training_curves_figure(histories: dict[int, pd.DataFrame], path: str, title: str) -> None:
    """One model's training: training loss and validation MSE, and validation PCC@M, per epoch, a line a fold.

    The epoch the loop selected (best validation PCC@M) is marked with a ring.
    """
    plt = _plt()
    fig, (ax_loss, ax_val, ax_pcc) = plt.subplots(1, 3, figsize=(12, 3.4))
    for fold, h in sorted(histories.items()):
        line = ax_loss.plot(h["epoch"], h["train_loss"], marker=".", label=f"fold {fold}")[0]
        if "val_mse" in h:
            ax_val.plot(h["epoch"], h["val_mse"], marker=".", color=line.get_color())
        if "val_pcc_m" in h:
            ax_pcc.plot(h["epoch"], h["val_pcc_m"], marker=".", color=line.get_color())
            sel = h[h["selected"].astype(str) == "True"] if "selected" in h else h.iloc[:0]
            ax_pcc.scatter(sel["epoch"], sel["val_pcc_m"], s=80, facecolors="none", edgecolors=line.get_color())
    for ax, label in ((ax_loss, "training loss"), (ax_val, "validation MSE"), (ax_pcc, "validation PCC@M")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=100)


def heatmap_figure(thumbnail: np.ndarray, scale: float, xy: np.ndarray, values: np.ndarray, side_px: float,
                   path: str, title: str, unit: str = "predicted") -> None:
    """Predicted expression of one gene as squares (one per window, its true footprint) over the H&E.

    Args:
        thumbnail: the slide at low resolution; ``scale`` its pixels per level-0 pixel.
        xy: (N, 2) window centres (level-0 px); ``side_px``: window side in level-0 px.
        unit: the colour bar's label (the values' units).
    """
    plt = _plt()
    import matplotlib.colors as mcolors

    h, w = thumbnail.shape[:2]
    grid = np.full((h, w), np.nan, dtype=np.float32)
    half = side_px * scale / 2
    for (x, y), v in zip(np.asarray(xy) * scale, values):
        grid[max(0, int(round(y - half))):int(round(y + half)), max(0, int(round(x - half))):int(round(x + half))] = v
    lo, hi = np.nanpercentile(values, [1, 99])
    fig, (ax_img, ax_map) = plt.subplots(1, 2, figsize=(11, 5.5 * h / max(w, 1) + 0.6))
    ax_img.imshow(thumbnail)
    ax_img.set_title("H&E", fontsize=9)
    ax_map.imshow(thumbnail)
    im = ax_map.imshow(grid, cmap="magma", alpha=0.65, norm=mcolors.Normalize(lo, max(hi, lo + 1e-9)),
                       interpolation="nearest")
    fig.colorbar(im, ax=ax_map, fraction=0.035, label=unit)
    ax_map.set_title(title, fontsize=9)
    for ax in (ax_img, ax_map):
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path, dpi=100)


QC_COLOURS = {"kept": "#1a9641", "background": "#d7191c", "edge": "#2c7bb6", "low_counts": "#fdae61",
              "unselected": "#9e9e9e", "outside_tissue": "#9e9e9e", "no_counts": "#7b3294", "no_position": "#000000",
              "on_tissue": "#1a9641", "off_tissue": "#d7191c"}  # the last two: a section that failed placement


def spot_qc_figure(thumbnail: np.ndarray, scale: float, spots: pd.DataFrame, spot_diameter_px: float,
                   window_px: float, title: str, path: str, square: bool = False) -> None:
    """The slide thumbnail with every spot drawn in its status' colour (kept, or why it was dropped) as a circle
    of the spot's diameter, and the window of the first kept spot outlined, so a reader sees at a glance that the
    spots sit on the tissue.

    Args:
        spots: ``x``, ``y`` (level-0 px; NaN where unknown), ``status``.
        scale: thumbnail px per level-0 px; ``spot_diameter_px``, ``window_px``: level-0 px.
        square: draw each spot as a square of side ``spot_diameter_px`` (Visium HD and Xenium pseudo-spots, in
            the H&E's pixels: the figure shows them over the registered image).
    """
    plt = _plt()
    from matplotlib.collections import EllipseCollection, PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    h, w = thumbnail.shape[:2]
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * h / w + 0.8))
    ax.imshow(thumbnail)
    d = spot_diameter_px * scale  # circles in data (thumbnail px) units: the spot's true diameter at any size
    placed = spots.dropna(subset=["x", "y"])
    handles = []
    for status, colour in QC_COLOURS.items():
        part = placed[placed["status"] == status]
        n = int((spots["status"] == status).sum())
        if n and square:
            ax.add_collection(PatchCollection([Rectangle((x * scale - d / 2, y * scale - d / 2), d, d)
                                               for x, y in zip(part["x"], part["y"])], facecolors="none",
                                              edgecolors=colour, linewidths=0.6))
        elif n:
            ax.add_collection(EllipseCollection(np.full(len(part), d), np.full(len(part), d), np.zeros(len(part)),
                                                units="xy", offsets=np.column_stack([part["x"], part["y"]]) * scale,
                                                offset_transform=ax.transData, facecolors="none",
                                                edgecolors=colour, linewidths=1.0))
        if n:
            handles.append(Line2D([], [], ls="none", marker="s" if square else "o", mfc="none", mec=colour, ms=7,
                                  label=f"{status.replace('_', ' ')} ({n}"
                                        + (f", {n - len(part)} without position" if n > len(part) else "") + ")"))
    kept = placed[placed["status"] == "kept"]
    if len(kept) and window_px > 0:
        x, y = kept.iloc[0][["x", "y"]]
        side = window_px * scale
        ax.add_patch(Rectangle((x * scale - side / 2, y * scale - side / 2), side, side, fill=False,
                               edgecolor="yellow", linewidth=1.5))
        handles.append(Rectangle((0, 0), 1, 1, fill=False, edgecolor="yellow", linewidth=1.5,
                                 label=f"window ({window_px:.0f} px at level 0)"))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, fontsize=7, frameon=False)
    _save(fig, path, dpi=110)
