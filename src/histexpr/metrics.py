"""Evaluation metrics for spatial expression prediction.

For ``n`` windows and ``g`` genes:

* ``MSE``, ``MAE``: mean squared / absolute error over all ``n x g`` entries;
* per-gene Pearson correlation over the windows,
  ``r_g = sum((y - ȳ)(ŷ - ŷ̄)) / sqrt(sum((y - ȳ)^2) sum((ŷ - ŷ̄)^2))``;
  undefined (NaN) when truth or prediction is constant for that gene;
* ``PCC@F``, ``PCC@S``, ``PCC@M``: first quartile, median and mean of the
  defined ``r_g`` (the EGN paper's notation); ``n_nan_pcc`` counts the genes
  left out, so a NaN is reported, never hidden.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY_METRICS = ["MSE", "MAE", "PCC@F", "PCC@S", "PCC@M"]


def pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson r of each column; NaN where either column is constant or ``n < 2``.

    Args:
        y_true, y_pred: ``(n, g)`` arrays.
    Returns:
        ``(g,)`` float64 array.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"shapes differ or are not 2-D: {t.shape} vs {p.shape}")
    if t.shape[0] < 2:
        return np.full(t.shape[1], np.nan)
    tc = t - t.mean(axis=0)
    pc = p - p.mean(axis=0)
    ss_t = (tc * tc).sum(axis=0)
    ss_p = (pc * pc).sum(axis=0)
    # Relative tolerance: a column is constant if its spread is rounding noise.
    scale_t = np.maximum(np.abs(t).max(axis=0), 1e-300) ** 2 * t.shape[0]
    scale_p = np.maximum(np.abs(p).max(axis=0), 1e-300) ** 2 * p.shape[0]
    defined = (ss_t > 1e-24 * scale_t) & (ss_p > 1e-24 * scale_p)
    r = np.full(t.shape[1], np.nan)
    r[defined] = (tc * pc).sum(axis=0)[defined] / np.sqrt(ss_t[defined] * ss_p[defined])
    return np.clip(r, -1.0, 1.0)


def summarise(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MSE, MAE, PCC@F/@S/@M and counts for one set of windows."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    r = pearson_per_gene(t, p)
    ok = r[~np.isnan(r)]
    err = p - t
    return {
        "n_windows": int(t.shape[0]),
        "n_genes": int(t.shape[1]),
        "n_nan_pcc": int(np.isnan(r).sum()),
        "MSE": float(np.mean(err**2)) if err.size else np.nan,
        "MAE": float(np.mean(np.abs(err))) if err.size else np.nan,
        "PCC@F": float(np.quantile(ok, 0.25)) if ok.size else np.nan,
        "PCC@S": float(np.median(ok)) if ok.size else np.nan,
        "PCC@M": float(np.mean(ok)) if ok.size else np.nan,
    }


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, slides: np.ndarray, genes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics pooled over all windows and per slide, and a per-gene table.

    Returns:
        ``summary``: one row per scope (``pooled``, then each slide) with
        ``scope``, ``slide`` and :func:`summarise`'s columns;
        ``per_gene``: one row per (scope, gene) with ``pcc``, ``mse``, ``mae``,
        ``mean_true``, ``std_true``.
    """
    slides = np.asarray(slides).astype(str)
    scopes = [("pooled", "all", np.ones(len(slides), bool))]
    scopes += [("slide", s, slides == s) for s in sorted(np.unique(slides))]
    rows, gene_rows = [], []
    for scope, slide, m in scopes:
        t, p = y_true[m], y_pred[m]
        rows.append({"scope": scope, "slide": slide, **summarise(t, p)})
        gene_rows.append(pd.DataFrame({
            "scope": scope, "slide": slide, "gene": genes,
            "pcc": pearson_per_gene(t, p),
            "mse": ((p - t) ** 2).mean(axis=0),
            "mae": np.abs(p - t).mean(axis=0),
            "mean_true": t.mean(axis=0),
            "std_true": t.std(axis=0),
        }))
    return pd.DataFrame(rows), pd.concat(gene_rows, ignore_index=True)


def aggregate_folds(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample SD over folds of each model's metrics.

    Args:
        per_fold: rows of :func:`evaluate`'s summary with ``model`` and ``fold``
            columns added.

    Returns:
        One row per (model, evaluation): ``pooled`` uses the metrics pooled over
        each fold's test windows; ``per_slide`` first averages the metrics of
        each test slide within a fold. Columns ``<metric>`` (mean over folds),
        ``<metric>_sd``, ``n_folds`` and ``n_nan_pcc`` (summed over folds).
    """
    pooled = per_fold[per_fold["scope"] == "pooled"].assign(evaluation="pooled")
    slides = per_fold[per_fold["scope"] == "slide"]
    per_slide = (slides.groupby(["model", "fold"], as_index=False)
                 .agg({**{m: "mean" for m in SUMMARY_METRICS}, "n_nan_pcc": "sum"})
                 .assign(evaluation="per_slide"))
    both = pd.concat([pooled, per_slide], ignore_index=True)
    rows = []
    for (model, ev), g in both.groupby(["model", "evaluation"], sort=False):
        row = {"model": model, "evaluation": ev, "n_folds": int(g["fold"].nunique())}
        for m in SUMMARY_METRICS:
            row[m] = float(g[m].mean())
            row[f"{m}_sd"] = float(g[m].std(ddof=1)) if len(g) > 1 else np.nan
        row["n_nan_pcc"] = int(g["n_nan_pcc"].sum())
        rows.append(row)
    cols = ["model", "evaluation", "n_folds"] + [c for m in SUMMARY_METRICS for c in (m, f"{m}_sd")] + ["n_nan_pcc"]
    return pd.DataFrame(rows)[cols]


def format_table(agg: pd.DataFrame, digits: int = 3) -> str:
    """Human-readable ``mean ± sd`` table of :func:`aggregate_folds`'s output."""
    out = agg[["model", "evaluation", "n_folds"]].copy()
    for m in SUMMARY_METRICS:
        out[m] = [f"{a:.{digits}f} ± {b:.{digits}f}" if b == b else f"{a:.{digits}f}"
                  for a, b in zip(agg[m], agg[f"{m}_sd"])]
    out["NaN PCC"] = agg["n_nan_pcc"]
    return out.to_string(index=False)


def summarise_groups(per_gene: pd.DataFrame, groups: pd.DataFrame | None) -> pd.DataFrame:
    """PCC summarised over gene groups (e.g. marker sets), mean ± SD over folds.

    Args:
        per_gene: pooled per-gene rows (``model``, ``fold``, ``gene``, ``pcc``).
        groups: ``gene``, ``group`` table, or None for a single group ``all``.

    Returns:
        One row per (model, group): ``n_genes``, ``PCC@M`` / ``PCC@S`` (mean
        over folds of the group's mean / median gene PCC), ``PCC@M_sd``,
        ``n_folds``.
    """
    if groups is None:
        groups = pd.DataFrame({"gene": per_gene["gene"].unique(), "group": "all"})
    merged = per_gene.merge(groups[["gene", "group"]], on="gene", how="inner")
    per_fold = (merged.groupby(["model", "group", "fold"], sort=False)
                .agg(m=("pcc", "mean"), s=("pcc", "median"), n=("gene", "nunique")).reset_index())
    out = (per_fold.groupby(["model", "group"], sort=False)
           .agg(n_genes=("n", "max"), **{"PCC@M": ("m", "mean"), "PCC@M_sd": ("m", "std"), "PCC@S": ("s", "mean")},
                n_folds=("fold", "nunique"))
           .reset_index())
    return out
