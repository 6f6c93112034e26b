"""Evaluation metrics for spatial expression prediction.

For ``n`` windows and ``g`` genes:

* ``MSE``, ``MAE``: mean squared / absolute error over all ``n x g`` entries;
* per-gene Pearson correlation over the windows,
  ``r_g = sum((y - ȳ)(ŷ - ŷ̄)) / sqrt(sum((y - ȳ)^2) sum((ŷ - ŷ̄)^2))``;
  undefined (NaN) when truth or prediction is constant for that gene;
* ``PCC@F``, ``PCC@S``, ``PCC@M``: first quartile, median and mean of the
  defined ``r_g`` (the EGN paper's notation); ``n_nan_pcc`` counts the genes
  left out, so a NaN is reported, never hidden;
* the partial correlation of prediction and truth given the spot's log total
  count ``z``: the Pearson r of their residuals after regressing each on
  ``[1, z]`` (``pPCC@M`` is its mean over genes). A model that only predicts
  cellularity scores about zero here, whatever its PCC;
* the margin of a model over a reference model (``colour_ridge``):
  ``ΔPCC@M`` on the same windows, with a percentile bootstrap interval that
  resamples windows within each fold (or slide).

Scopes: ``pooled`` correlates over all test windows of a fold at once (as the
EGN paper, which pools the windows of a fold's test patients); ``slide``
correlates within each test slide and ``per_slide`` averages those (as
leave-one-section-out studies like TCGN report: with one test slide a fold,
the two coincide). Pooling adds between-slide differences (batch, tissue
composition) to the variation a model must explain, so the two differ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .models.catalog import ORACLES

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


def partial_pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray, covariate: np.ndarray) -> np.ndarray:
    """Pearson r of each column of truth and prediction after regressing both on ``[1, covariate]``.

    ``r_{ty·z} = corr(t - a_t - b_t z, ŷ - a_ŷ - b_ŷ z)``; NaN where a residual is
    constant (for instance, a prediction that is a linear function of ``z``).

    Args:
        y_true, y_pred: ``(n, g)``; covariate: ``(n,)``.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    z = np.asarray(covariate, dtype=np.float64).ravel()
    if len(z) != len(t):
        raise ValueError(f"covariate has {len(z)} rows for {len(t)} windows")
    zc = z - z.mean()
    zz = float(zc @ zc)

    def resid(a):
        ac = a - a.mean(axis=0)
        return ac - np.outer(zc, (zc @ ac) / zz) if zz > 0 else ac

    # Residuals are centred; a column that was fully explained by z is rounding noise of
    # the original scale, so judge constancy against that scale, not the residual's own.
    rt, rp = resid(t), resid(p)
    ok_t = (rt**2).sum(axis=0) > 1e-20 * np.maximum((t - t.mean(axis=0)) ** 2, 1e-300).sum(axis=0)
    ok_p = (rp**2).sum(axis=0) > 1e-20 * np.maximum((p - p.mean(axis=0)) ** 2, 1e-300).sum(axis=0)
    r = pearson_per_gene(rt, rp)
    r[~(ok_t & ok_p)] = np.nan
    return r


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


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, slides: np.ndarray, genes: list[str],
             log_total: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics pooled over all windows and per slide, and a per-gene table.

    Args:
        log_total: ``(n,)`` log total count per window; adds the partial
            correlations given it (``pPCC@M``, per-gene ``partial_pcc``).

    Returns:
        ``summary``: one row per scope (``pooled``, then each slide) with
        ``scope``, ``slide``, :func:`summarise`'s columns and ``pPCC@M``;
        ``per_gene``: one row per (scope, gene) with ``pcc``, ``partial_pcc``,
        ``mse``, ``mae``, ``mean_true``, ``std_true``.
    """
    slides = np.asarray(slides).astype(str)
    scopes = [("pooled", "all", np.ones(len(slides), bool))]
    scopes += [("slide", s, slides == s) for s in sorted(np.unique(slides))]
    rows, gene_rows = [], []
    for scope, slide, m in scopes:
        t, p = y_true[m], y_pred[m]
        partial = (partial_pearson_per_gene(t, p, log_total[m]) if log_total is not None
                   else np.full(t.shape[1], np.nan))
        defined = partial[~np.isnan(partial)]
        rows.append({"scope": scope, "slide": slide, **summarise(t, p),
                     "pPCC@M": float(defined.mean()) if defined.size else np.nan})
        gene_rows.append(pd.DataFrame({
            "scope": scope, "slide": slide, "gene": genes,
            "pcc": pearson_per_gene(t, p),
            "partial_pcc": partial,
            "mse": ((p - t) ** 2).mean(axis=0),
            "mae": np.abs(p - t).mean(axis=0),
            "mean_true": t.mean(axis=0),
            "std_true": t.std(axis=0),
        }))
    return pd.DataFrame(rows), pd.concat(gene_rows, ignore_index=True)


def _keys(df: pd.DataFrame) -> list[str]:
    return ["model", "protocol"] if "protocol" in df.columns else ["model"]


def aggregate_folds(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Each model's metrics over the study's test sections (``per_slide``) and over folds (``pooled``).

    Args:
        per_fold: rows of :func:`evaluate`'s summary with ``model``, ``fold``
            (and ``protocol``) columns added.

    Returns:
        One row per (model, protocol, evaluation). ``per_slide`` (the headline) scores each test section on
        its own windows: ``<metric>`` is the mean over every test section of the study, ``<metric>_sd`` the
        sd between sections. ``pooled`` correlates over all test windows of a fold at once: mean and sd over
        folds. Also ``n_folds``, ``n_sections`` and ``n_nan_pcc`` (summed).
    """
    keys = _keys(per_fold)
    metrics = SUMMARY_METRICS + (["pPCC@M"] if "pPCC@M" in per_fold.columns else [])
    pooled = per_fold[per_fold["scope"] == "pooled"].assign(evaluation="pooled")
    slides = per_fold[per_fold["scope"] == "slide"].assign(evaluation="per_slide")
    sections = slides.groupby(keys)["slide"].nunique().rename("n_sections").reset_index()
    rows = []
    for key, g in pd.concat([slides, pooled], ignore_index=True).groupby(keys + ["evaluation"], sort=False):
        row = dict(zip(keys + ["evaluation"], key))
        row["n_folds"] = int(g["fold"].nunique())
        for m in metrics:
            row[m] = float(g[m].mean())
            row[f"{m}_sd"] = float(g[m].std(ddof=1)) if len(g) > 1 else np.nan
        row["n_nan_pcc"] = int(g["n_nan_pcc"].sum())
        rows.append(row)
    out = pd.DataFrame(rows).merge(sections, on=keys, how="left")
    cols = keys + ["evaluation", "n_folds", "n_sections"] + [c for m in metrics for c in (m, f"{m}_sd")] + \
        ["n_nan_pcc"]
    out = out[cols]
    # per section first (the headline), then pooled; protocols and models in the order they came
    rank = {"evaluation": {"per_slide": 0, "pooled": 1}}
    for k in keys:
        rank[k] = {v: i for i, v in enumerate(dict.fromkeys(per_fold[k]))}
    order = sorted(range(len(out)), key=lambda i: tuple(rank[c][out[c].iloc[i]] for c in
                                                        ["evaluation"] + keys[::-1]))
    return out.iloc[order].reset_index(drop=True)


def _bootstrap_pcc_mean(weights: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """PCC@M of each bootstrap replicate, given per-window multiplicities ``weights`` ``(B, n)``."""
    n = weights.sum(axis=1, keepdims=True)
    st, sp_ = weights @ t, weights @ p
    cov = weights @ (t * p) - st * sp_ / n
    vt = weights @ (t * t) - st * st / n
    vp = weights @ (p * p) - sp_ * sp_ / n
    scale_t = np.maximum(np.abs(t).max(axis=0), 1e-300) ** 2 * n
    scale_p = np.maximum(np.abs(p).max(axis=0), 1e-300) ** 2 * n
    ok = (vt > 1e-12 * scale_t) & (vp > 1e-12 * scale_p)
    r = np.where(ok, cov / np.sqrt(np.where(ok, vt * vp, 1.0)), np.nan)
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.clip(r, -1, 1), axis=1)


def paired_bootstrap_delta(t: np.ndarray, p: np.ndarray, q: np.ndarray, n_boot: int,
                           rng: np.random.Generator, chunk: int = 100) -> np.ndarray:
    """Bootstrap replicates of ``PCC@M(p) - PCC@M(q)`` on the same resampled windows.

    Args:
        t: ``(n, g)`` truth; p, q: ``(n, g)`` predictions of the model and the reference.
    Returns:
        ``(n_boot,)`` replicates (windows drawn with replacement, ``n`` a replicate).
    """
    t, p, q = (np.asarray(a, dtype=np.float64) for a in (t, p, q))
    n = len(t)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + b] = _bootstrap_pcc_mean(weights, t, p) - _bootstrap_pcc_mean(weights, t, q)
    return out


SECTION_BOOTSTRAP_MIN = 6  # sections a study needs before the per-section interval resamples sections


def _units(evaluation: str, slides: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if evaluation == "pooled":
        return [("all", np.ones(len(slides), bool))]
    return [(s, slides == s) for s in sorted(np.unique(slides))]


def margins_over_reference(predictions: dict, reference: str, n_boot: int = 1000, seed: int = 0,
                           level: float = 0.95, evaluations=("per_slide", "pooled"),
                           min_sections: int = SECTION_BOOTSTRAP_MIN,
                           with_sections: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Each model's ΔPCC@M over ``reference`` with a paired bootstrap interval.

    ``per_slide`` (per section): ΔPCC@M of each test section on its own windows, averaged over every test
    section of the study. With at least ``min_sections`` sections the interval resamples sections (the unit
    a new study would add); with fewer it resamples windows within each section (it then speaks for these
    sections only). ``pooled``: ΔPCC@M over all of a fold's test windows at once, averaged over folds; windows
    resampled within each fold. The same draws serve the model and the reference, and every model.

    Args:
        predictions: ``{(model, protocol, fold): (obs_names, truth, prediction, slides)}``.
        reference: the model every other is compared with (e.g. ``colour_ridge``).
        n_boot: bootstrap replicates; level: interval coverage.
        with_sections: also return the per-section rows.

    Returns:
        One row per (model, protocol, evaluation) with ``dPCC@M``, ``dPCC@M_lo``, ``dPCC@M_hi`` (percentile
        interval), ``resampled`` (``sections``, ``windows within sections`` or ``windows within folds``),
        ``n_units`` (what was resampled: sections, or folds) and ``n_boot``. With ``with_sections``, also one
        row per (model, protocol, fold, section): ``n_windows``, ``PCC@M``, ``PCC@M_reference``, ``dPCC@M``
        and its interval over the section's windows.
    """
    rows, section_rows = [], []
    alpha = (1 - level) / 2
    models = sorted({k[0] for k in predictions} - {reference})
    protocols = sorted({k[1] for k in predictions})
    for protocol in protocols:
        folds = sorted({k[2] for k in predictions if k[1] == protocol})
        for model in models:
            if not all((model, protocol, f) in predictions and (reference, protocol, f) in predictions
                       for f in folds):
                continue
            for evaluation in evaluations:
                point, reps, fold_of = [], [], []
                for f in folds:
                    names, t, p, slides = predictions[(model, protocol, f)]
                    rnames, rt, q, _ = predictions[(reference, protocol, f)]
                    if list(names) != list(rnames) or not np.allclose(t, rt, equal_nan=True):
                        raise ValueError(f"{model} and {reference} ({protocol}, fold {f}) were not evaluated on the "
                                         "same windows and targets; rerun both")
                    for u, (section, m) in enumerate(_units(evaluation, slides)):
                        # Same stream for every model: the draws depend on the unit, not on the model.
                        rng = np.random.default_rng([seed, f, u, 0 if evaluation == "pooled" else 1])
                        mine, ref = summarise(t[m], p[m])["PCC@M"], summarise(t[m], q[m])["PCC@M"]
                        point.append(mine - ref)
                        reps.append(paired_bootstrap_delta(t[m], p[m], q[m], n_boot, rng))
                        fold_of.append(f)
                        if evaluation == "per_slide" and with_sections:
                            section_rows.append({
                                "model": model, "protocol": protocol, "fold": f, "section": section,
                                "n_windows": int(m.sum()), "PCC@M": mine, "PCC@M_reference": ref,
                                "dPCC@M": mine - ref, "dPCC@M_lo": float(np.nanquantile(reps[-1], alpha)),
                                "dPCC@M_hi": float(np.nanquantile(reps[-1], 1 - alpha))})
                point, reps = np.asarray(point), np.asarray(reps)
                if evaluation == "pooled":
                    resampled, n_units, boot = "windows within folds", len(folds), reps.mean(axis=0)
                elif len(point) >= min_sections:
                    # Sections resampled with replacement; the draws depend on the number of sections only.
                    idx = np.random.default_rng([seed, len(point), 2]).integers(0, len(point), (n_boot, len(point)))
                    resampled, n_units, boot = "sections", len(point), point[idx].mean(axis=1)
                else:
                    resampled, n_units, boot = "windows within sections", len(point), reps.mean(axis=0)
                rows.append({"model": model, "protocol": protocol, "evaluation": evaluation,
                             "dPCC@M": float(point.mean()),
                             "dPCC@M_lo": float(np.nanquantile(boot, alpha)),
                             "dPCC@M_hi": float(np.nanquantile(boot, 1 - alpha)),
                             "resampled": resampled, "n_units": n_units, "n_boot": n_boot})
    table = pd.DataFrame(rows, columns=["model", "protocol", "evaluation", "dPCC@M", "dPCC@M_lo", "dPCC@M_hi",
                                        "resampled", "n_units", "n_boot"])
    if not with_sections:
        return table
    return table, pd.DataFrame(section_rows, columns=["model", "protocol", "fold", "section", "n_windows", "PCC@M",
                                                      "PCC@M_reference", "dPCC@M", "dPCC@M_lo", "dPCC@M_hi"])


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd == sd else f"{mean:.{digits}f}"


def _margin(d: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" if d == d else ""


MARGIN = "ΔPCC@M [95% CI]"


def _methods_first(rows: pd.DataFrame) -> pd.DataFrame:
    """Models by PCC@M, best first, then the oracles (they read test data: never ranked among the methods)."""
    rows = rows.sort_values("PCC@M", ascending=False, kind="stable")
    return pd.concat([rows[~rows["model"].isin(ORACLES)], rows[rows["model"].isin(ORACLES)]])


EVALUATION_NAMES = {"per_slide": "per section", "pooled": "pooled over each fold's sections"}


def display_blocks(agg: pd.DataFrame, digits: int = 3) -> list[tuple[str, str, pd.DataFrame]]:
    """:func:`aggregate_folds`'s table (with margins) as ``(protocol, evaluation, block)`` blocks to read:
    per section first (the headline), then pooled; models by PCC@M, best first; the main numbers as
    ``mean ± sd``; the margin over the reference with its interval; oracle rows last. Narrow enough for a
    terminal (PCC@S/F, MSE and MAE as means; every sd is in metrics.tsv)."""
    out = []
    protocols = list(dict.fromkeys(agg["protocol"])) if "protocol" in agg else [None]
    for protocol in protocols:
        for evaluation in ("per_slide", "pooled"):
            rows = agg[(agg["evaluation"] == evaluation) & ((agg["protocol"] == protocol) if protocol else True)]
            if rows.empty:
                continue
            rows = _methods_first(rows)
            block = pd.DataFrame({"model": [f"{m} (oracle)" if m in ORACLES else m for m in rows["model"]]})
            block["PCC@M"] = [_pm(a, b, digits) for a, b in zip(rows["PCC@M"], rows["PCC@M_sd"])]
            if "pPCC@M" in rows:
                block["pPCC@M"] = [_pm(a, b, digits) for a, b in zip(rows["pPCC@M"], rows["pPCC@M_sd"])]
            if "dPCC@M" in rows:
                block[MARGIN] = ["(the floor)" if m == ref else _margin(d, lo, hi, digits) for m, ref, d, lo, hi in
                                 zip(rows["model"], rows["margin_over"], rows["dPCC@M"], rows["dPCC@M_lo"],
                                     rows["dPCC@M_hi"])]
            if "n_sections_ahead" in rows and evaluation == "per_slide":
                block["ahead"] = ["" if v != v else f"{int(v)}/{int(n)}"
                                  for v, n in zip(rows["n_sections_ahead"], rows["n_sections"])]
            for m in ("PCC@S", "PCC@F"):
                block[m] = [f"{v:.{digits}f}" for v in rows[m]]
            for m in ("MSE", "MAE"):
                block[m] = [f"{v:.4f}" for v in rows[m]]
            if evaluation == "per_slide" and "n_sections" in rows:
                block["sections"] = rows["n_sections"].to_numpy()
            else:
                block["folds"] = rows["n_folds"].to_numpy()
            if rows["n_nan_pcc"].sum():
                block["NaN PCC"] = rows["n_nan_pcc"].to_numpy()
            out.append((protocol or "", evaluation, block))
    return out


def _resampled(row) -> str:
    what, n = row.get("resampled"), row.get("n_units")
    if not isinstance(what, str):
        return ""
    if what == "sections":
        return f"{int(n)} sections resampled"
    return f"windows resampled within {'each of ' + str(int(n)) + ' sections' if 'sections' in what else 'folds'}"


def verdicts(agg: pd.DataFrame, evaluation: str = "per_slide", digits: int = 3) -> list[str]:
    """One line per protocol: the best model by PCC@M over test sections (each section scored on its own
    windows, then averaged), its margin over the floor with the interval and what it resampled, and whether it
    beats the floor (the interval above zero). A second line where pooling the sections would say otherwise."""
    lines = []
    if evaluation not in set(agg["evaluation"]):
        evaluation = "pooled"  # tables written before per-section rows existed
    part = agg[agg["evaluation"] == evaluation]
    for protocol in dict.fromkeys(part["protocol"]) if "protocol" in part else [None]:
        rows = part[part["protocol"] == protocol] if protocol else part
        if rows.empty:
            continue
        ranked = rows.sort_values("PCC@M", ascending=False, kind="stable")
        methods = ranked[~ranked["model"].isin(ORACLES)]
        if methods.empty:
            continue
        best = methods.iloc[0]
        over = ""
        if evaluation == "per_slide" and "n_sections" in best and best["n_sections"] == best["n_sections"]:
            n = int(best["n_sections"])
            over = f" ({n} test section{'s' if n != 1 else ''})"
        head = f"{protocol or 'all'}: best {best['model']}, PCC@M {_pm(best['PCC@M'], best['PCC@M_sd'], digits)}{over}"
        ref = best.get("margin_over") if "margin_over" in rows else None
        beats = None
        if not isinstance(ref, str) or not ref:
            lines.append(f"{head} (no floor in this table)")
        elif best["model"] == ref:
            lines.append(f"{head}: the floor itself; no model beats {ref}")
            beats = False
        else:
            lo = best["dPCC@M_lo"]
            beats = lo > 0 if lo == lo else None
            says = ("beats the floor" if lo > 0 else "does not beat the floor (the interval reaches 0)"
                    if lo == lo else "margin not computed")
            how = _resampled(best)
            ahead = ""
            if "n_sections_ahead" in best and best["n_sections_ahead"] == best["n_sections_ahead"]:
                ahead = f", ahead on {int(best['n_sections_ahead'])} of {int(best['n_sections'])} sections"
            lines.append(f"{head}, {_margin(best['dPCC@M'], lo, best['dPCC@M_hi'], digits)} over {ref}"
                         f"{' (' + how + ')' if how else ''}{ahead}: {says}")
        pad = " " * len(protocol or "all")
        if evaluation == "per_slide" and beats is not None:
            pooled = agg[(agg["evaluation"] == "pooled") & ((agg["protocol"] == protocol) if protocol else True)]
            pm = pooled[~pooled["model"].isin(ORACLES)].sort_values("PCC@M", ascending=False, kind="stable")
            if len(pm) and "dPCC@M_lo" in pm:
                pb = pm.iloc[0]
                p_beats = pb["model"] != ref and pb["dPCC@M_lo"] > 0
                if pb["model"] != best["model"] or p_beats != beats:
                    lines.append(f"{pad}  (pooled over sections, {pb['model']} would lead"
                                 + (f" by {_margin(pb['dPCC@M'], pb['dPCC@M_lo'], pb['dPCC@M_hi'], digits)}"
                                    if pb["model"] != ref else "")
                                 + "; pooling also scores how sections differ)")
        for _, o in ranked[ranked["model"].isin(ORACLES)].iterrows():
            lines.append(f"{pad}  ({o['model']}, which reads each test spot's total count: "
                         f"PCC@M {_pm(o['PCC@M'], o['PCC@M_sd'], digits)})")
    return lines


PREDICTS_NOTHING = 0.05  # a group whose every method scores |PCC@M| below this is "not predicted"


def group_verdicts(by_group: pd.DataFrame, digits: int = 3) -> list[str]:
    """One line per protocol and gene group of ``metrics_by_group.tsv``: the best method on the group's genes,
    its margin over the floor on those genes with its interval, and whether it beats the floor; a group no
    method predicts (every |PCC@M| < 0.05) says so. Pooled over each fold's sections, as that table is."""
    lines = []
    g = by_group[~by_group["model"].isin(ORACLES)]
    multi = "protocol" in g and g["protocol"].nunique() > 1
    for protocol in dict.fromkeys(g["protocol"]) if "protocol" in g else [None]:
        part = g[g["protocol"] == protocol] if protocol else g
        for group in dict.fromkeys(part["group"]):
            rows = part[part["group"] == group].sort_values("PCC@M", ascending=False, kind="stable")
            best = rows.iloc[0]
            head = (f"{protocol + ', ' if multi else ''}{group} genes ({int(best['n_genes'])}): best {best['model']}, "
                    f"PCC@M {_pm(best['PCC@M'], best['PCC@M_sd'], digits)}")
            ref = best.get("margin_over") if "margin_over" in rows else None
            if (rows["PCC@M"].abs() < PREDICTS_NOTHING).all():
                lines.append(f"{head}: no model predicts them (every |PCC@M| < {PREDICTS_NOTHING})")
            elif not isinstance(ref, str) or not ref:
                lines.append(head)
            elif best["model"] == ref:
                lines.append(f"{head}: the floor itself; no model beats {ref}")
            else:
                lo = best["dPCC@M_lo"]
                says = "beats the floor" if lo > 0 else "does not beat the floor (the interval reaches 0)"
                lines.append(f"{head}, {_margin(best['dPCC@M'], lo, best['dPCC@M_hi'], digits)} over {ref}: {says}")
    return lines


def display_sections(by_section: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The per-section table (``metrics_by_section.tsv``) to read: per protocol, fold and section, the models
    by PCC@M with their margin over the floor on that section's windows."""
    g = by_section.copy()
    g = g.assign(_o=g["model"].isin(ORACLES))
    g = g.sort_values(["protocol", "fold", "section", "_o", "PCC@M"], ascending=[True, True, True, True, False],
                      kind="stable")
    out = g[["protocol", "fold", "section", "model", "n_windows"]].rename(columns={"n_windows": "windows"})
    out["model"] = [f"{m} (oracle)" if m in ORACLES else m for m in out["model"]]
    out["PCC@M"] = [f"{v:.{digits}f}" for v in g["PCC@M"]]
    if "dPCC@M" in g:
        out[MARGIN] = ["(the floor)" if m == ref else _margin(d, lo, hi, digits) for m, ref, d, lo, hi in
                       zip(g["model"], g["margin_over"], g["dPCC@M"], g["dPCC@M_lo"], g["dPCC@M_hi"])]
    return out.reset_index(drop=True)


def display_groups(by_group: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`summarise_groups`'s table (with margins) to read: per protocol and group, best PCC@M first."""
    g = by_group.copy()
    if "protocol" not in g:
        g["protocol"] = ""
    order = {k: {v: i for i, v in enumerate(dict.fromkeys(g[k]))} for k in ("protocol", "group")}
    g = g.assign(_p=g["protocol"].map(order["protocol"]), _g=g["group"].map(order["group"]))
    g = g.assign(_o=g["model"].isin(ORACLES))
    g = g.sort_values(["_p", "_g", "_o", "PCC@M"], ascending=[True, True, True, False], kind="stable")
    out = g[["protocol", "group", "model", "n_genes"]].rename(columns={"n_genes": "genes"})
    out["model"] = [f"{m} (oracle)" if m in ORACLES else m for m in out["model"]]
    out["PCC@M"] = [_pm(a, b, digits) for a, b in zip(g["PCC@M"], g["PCC@M_sd"])]
    if "dPCC@M" in g:
        out[MARGIN] = ["(the floor)" if m == ref else _margin(d, lo, hi, digits) for m, ref, d, lo, hi in
                       zip(g["model"], g["margin_over"], g["dPCC@M"], g["dPCC@M_lo"], g["dPCC@M_hi"])]
    out["PCC@S"] = [f"{v:.{digits}f}" for v in g["PCC@S"]]
    out["folds"] = g["n_folds"].to_numpy()
    return out.reset_index(drop=True)


def format_table(agg: pd.DataFrame, digits: int = 3) -> str:
    """The study's table as text: a verdict line per protocol, then a block per protocol and evaluation."""
    parts = verdicts(agg, digits=digits)
    for protocol, evaluation, block in display_blocks(agg, digits):
        name = EVALUATION_NAMES.get(evaluation, evaluation)
        parts.append(f"\n{protocol} targets, {name}:" if protocol else f"\n{name}:")
        parts.append(block.to_string(index=False))
    return "\n".join(parts)


def summarise_groups(per_gene: pd.DataFrame, groups: pd.DataFrame | None) -> pd.DataFrame:
    """PCC summarised over gene groups (e.g. marker sets), mean ± SD over folds.

    Args:
        per_gene: pooled per-gene rows (``model``, ``fold``, ``gene``, ``pcc``).
        groups: ``gene``, ``group`` table, or None for a single group ``all``.

    Returns:
        One row per (model[, protocol], group): ``n_genes``, ``PCC@M`` / ``PCC@S`` (mean
        over folds of the group's mean / median gene PCC), ``PCC@M_sd``,
        ``n_folds``.
    """
    if groups is None:
        groups = pd.DataFrame({"gene": per_gene["gene"].unique(), "group": "all"})
    keys = _keys(per_gene)
    merged = per_gene.merge(groups[["gene", "group"]], on="gene", how="inner")
    per_fold = (merged.groupby(keys + ["group", "fold"], sort=False)
                .agg(m=("pcc", "mean"), s=("pcc", "median"), n=("gene", "nunique")).reset_index())
    out = (per_fold.groupby(keys + ["group"], sort=False)
           .agg(n_genes=("n", "max"), **{"PCC@M": ("m", "mean"), "PCC@M_sd": ("m", "std"), "PCC@S": ("s", "mean")},
                n_folds=("fold", "nunique"))
           .reset_index())
    return out


def gene_table(per_gene: pd.DataFrame) -> pd.DataFrame:
    """Per (model, protocol, gene): PCC, its PCC under the other protocol and its partial PCC, over folds.

    Args:
        per_gene: pooled per-gene rows of :func:`evaluate` with ``model``,
            ``protocol``, ``fold``.
    Returns:
        ``model``, ``protocol``, ``gene``, ``pcc`` (mean over folds), ``pcc_sd``,
        ``partial_pcc`` (given the spot's log total count), ``mse``,
        ``n_folds``, ``n_folds_nan``, and with two protocols
        ``other_protocol`` and ``pcc_other_protocol``.
    """
    keys = _keys(per_gene)
    out = (per_gene.groupby(keys + ["gene"], sort=False)
           .agg(pcc=("pcc", "mean"), pcc_sd=("pcc", "std"), partial_pcc=("partial_pcc", "mean"),
                mse=("mse", "mean"), n_folds=("fold", "nunique"),
                n_folds_nan=("pcc", lambda s: int(s.isna().sum())))
           .reset_index())
    if "protocol" in keys and out["protocol"].nunique() == 2:
        a, b = sorted(out["protocol"].unique())
        other = out[["model", "protocol", "gene", "pcc"]].rename(
            columns={"protocol": "other_protocol", "pcc": "pcc_other_protocol"})
        out["other_protocol"] = out["protocol"].map({a: b, b: a})
        out = out.merge(other, on=["model", "other_protocol", "gene"], how="left")
    return out


def load_predictions(paths, with_genes: bool = False):
    """``{(model, protocol, fold): (obs_names, truth, prediction, slides)}`` from ``predictions.h5ad`` files;
    with ``with_genes``, also ``{key: gene names}``."""
    import anndata as ad

    out, genes = {}, {}
    for path in paths:
        a = ad.read_h5ad(path)
        key = (str(a.uns["model"]), str(a.uns.get("protocol", "raw")), int(a.uns["fold"]))
        out[key] = (a.obs_names.to_numpy(), np.asarray(a.layers["truth"], dtype=np.float64),
                    np.asarray(a.X, dtype=np.float64), a.obs["sample"].astype(str).to_numpy())
        genes[key] = a.var_names.to_numpy()
    return (out, genes) if with_genes else out


def model_notes(paths) -> pd.DataFrame:
    """``model, protocol, note``: what a fitted model said a reader of its row should know (``uns["note"]`` of
    its ``predictions.h5ad``; e.g. a probe whose PCA keeps every direction, so it is ridge), one row per
    model and protocol, the folds' distinct notes joined by ``; ``."""
    import anndata as ad

    rows = []
    for path in paths:
        uns = ad.read_h5ad(path, backed="r").uns
        if uns.get("note"):
            rows.append((str(uns["model"]), str(uns.get("protocol", "raw")), str(uns["note"])))
    notes = pd.DataFrame(rows, columns=["model", "protocol", "note"])
    return notes.groupby(["model", "protocol"], sort=False)["note"].agg(
        lambda n: "; ".join(dict.fromkeys(n))).reset_index()


def group_margins(predictions: dict, genes: dict, groups: pd.DataFrame, reference: str, n_boot: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """Each model's pooled ΔPCC@M over ``reference`` on each gene group's genes (``groups``: ``gene``,
    ``group``), with the same paired bootstrap over windows as :func:`margins_over_reference`."""
    parts = []
    for group, names in groups.groupby("group", sort=False)["gene"]:
        sub = {key: (obs, t[:, m], p[:, m], slides) for key, (obs, t, p, slides) in predictions.items()
               if (m := np.isin(genes[key], names.to_numpy())).any()}
        if len(sub) < len(predictions):
            continue  # a fold measures none of the group's genes
        mg = margins_over_reference(sub, reference, n_boot, seed, evaluations=("pooled",))
        parts.append(mg.drop(columns=["evaluation", "n_boot"]).assign(group=group))
    cols = ["model", "protocol", "group", "dPCC@M", "dPCC@M_lo", "dPCC@M_hi"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


ABLATIONS = ["egn_pretrained_e_linear", "egn_backbone_only", "egn_no_eb_block", "egn_no_projector", "egn"]


def ablation_table(table: pd.DataFrame) -> pd.DataFrame:
    """EGN's Table 4: the rows of EGN and its ablations, in the paper's order, with a ``setting`` column."""
    from .plots import PAPER_NAMES

    rows = table[table["model"].isin(ABLATIONS)].copy()
    rows.insert(1, "setting", rows["model"].map(PAPER_NAMES))
    order = {"model": {m: i for i, m in enumerate(ABLATIONS)}, "evaluation": {"pooled": 0, "per_slide": 1},
             "protocol": {p: i for i, p in enumerate(dict.fromkeys(rows["protocol"]))}}
    return rows.sort_values(["evaluation", "protocol", "model"], key=lambda c: c.map(order[c.name])).reset_index(drop=True)


def sweep_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of sweep runs (``<model>-<param>-<value>``) with ``base_model``, ``param`` and ``value`` columns."""
    from .models.catalog import split_run

    parts = [(i, *split_run(m)) for i, m in zip(table.index, table["model"]) if "-" in m]
    if not parts:
        return pd.DataFrame(columns=["base_model", "param", "value", *table.columns])
    rows = table.loc[[p[0] for p in parts]].copy()
    rows.insert(0, "value", [next(iter(p[2].values())) for p in parts])
    rows.insert(0, "param", [next(iter(p[2])) for p in parts])
    rows.insert(0, "base_model", [p[1] for p in parts])
    return rows.sort_values(["param", "evaluation", "protocol", "value"]).reset_index(drop=True)


SPOT_SWEEP_COLUMNS = ["spot_um", "protocol", "section", "model", "fold", "n_windows", "PCC@M", "PCC@M_reference",
                      "dPCC@M", "dPCC@M_lo", "dPCC@M_hi", "margin_over"]


def spot_sweep_table(by_section: dict[float, pd.DataFrame]) -> pd.DataFrame:
    """One table of a spot-size sweep: every point's ``metrics_by_section.tsv`` (one study per pseudo-spot side)
    with a ``spot_um`` column, one row per (spot size, protocol, section, model).

    Args:
        by_section: ``{spot_um: that point's per-section table}``; each must hold the same sections.
    Raises:
        ValueError: when the points' sections differ (a section lost at one size would bias its mean).
    """
    sections = {s: frozenset(t["section"]) for s, t in by_section.items()}
    if len(set(sections.values())) > 1:
        first = next(iter(sections.values()))
        odd = {s: sorted(v ^ first) for s, v in sections.items() if v != first}
        raise ValueError(f"the spot sizes' tables hold different test sections: {odd}")
    parts = []
    for spot, table in sorted(by_section.items()):
        part = table.copy()
        part.insert(0, "spot_um", float(spot))
        parts.append(part[[c for c in SPOT_SWEEP_COLUMNS if c in part]])
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["protocol", "section", "model", "spot_um"], kind="stable").reset_index(drop=True)
