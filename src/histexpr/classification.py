"""Accuracy tables of the classification branch: per run, mean ± sd over folds × seeds, confusion matrices."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .models.ats import FLOOR, parse_setting, uniform_partner

_RUN = re.compile(r"(?P<setting>[^/]+)/seed_(?P<seed>-?\d+)/fold_(?P<fold>\d+)/[^/]+$")


def load_runs(predictions: list[str], histories: list[str] | None = None) -> pd.DataFrame:
    """Every run's predictions with ``setting, seed, fold`` (and the selected epoch) from its path
    (:func:`accuracy_tables` fills ``draw`` and ``timer`` where older predictions lack them)."""
    parts = []
    selected = {}
    for h in histories or []:
        m = _RUN.search(Path(h).as_posix())
        hist = pd.read_csv(h, sep="\t")
        selected[(m["setting"], int(m["seed"]), int(m["fold"]))] = int(hist.loc[hist["selected"], "epoch"].max())
    for p in predictions:
        m = _RUN.search(Path(p).as_posix())
        if m is None:
            raise ValueError(f"{p}: not a <setting>/seed_<s>/fold_<k>/ predictions file")
        key = (m["setting"], int(m["seed"]), int(m["fold"]))
        df = pd.read_csv(p, sep="\t", keep_default_na=False)
        parts.append(df.assign(setting=key[0], seed=key[1], fold=key[2], selected_epoch=selected.get(key, np.nan)))
    return pd.concat(parts, ignore_index=True)


def _order(settings) -> list[str]:
    def key(s):
        p = parse_setting(s)
        return ({"ats": 0, "uniform": 1, "cnn": 2, "floor": 3}[p["kind"]], p.get("patch_px", 0), p.get("n_patches", 0),
                p.get("estimator") or "")

    return sorted(set(settings), key=key)


def _test(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["split"] == "test"].assign(correct=lambda d: (d["label"] == d["pred"]).astype(float))


def paired_differences(runs: pd.DataFrame, partners: dict[str, str], n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Test accuracy of each setting minus its partner's (``partners``: setting → partner), paired over images
    and training seeds, with a 95% bootstrap interval.

    A (seed, image) score is the image's test correctness averaged over draws; ``d[s, i]`` is the setting's
    score minus the partner's at the same seed and image (seeds both ran; a partner that ran other seeds is
    averaged over its seeds). The difference is the mean of ``d``, and the interval the 2.5 and 97.5
    percentiles over ``n_boot`` resamples of the images and, independently, the seeds (with one seed, of the
    images only: it then says nothing of run-to-run variation). Returns ``setting, partner, d, d_lo, d_hi,
    seeds, images`` (fractions).
    """
    t = _test(runs)
    score = t.pivot_table(index=["setting", "seed"], columns="index", values="correct", aggfunc="mean")
    rows = []
    for setting, partner in partners.items():
        if setting not in score.index.get_level_values(0) or partner not in score.index.get_level_values(0):
            continue
        a, b = score.loc[setting], score.loc[partner]
        images = a.columns[a.notna().all() & b.notna().all()]
        seeds = a.index.intersection(b.index)
        if len(seeds):
            d = (a.loc[seeds, images] - b.loc[seeds, images]).to_numpy()
        else:
            d = (a[images] - b[images].mean()).to_numpy()
        rng = np.random.default_rng(seed)
        n_s, n_i = d.shape
        if n_i == 0:
            continue
        img = rng.integers(0, n_i, size=(n_boot, n_i))
        per_seed = np.stack([row[img].mean(1) for row in d])  # (S, n_boot): each seed's mean over resampled images
        pick = rng.integers(0, n_s, size=(n_boot, n_s)) if n_s > 1 else np.zeros((n_boot, 1), int)
        means = per_seed[pick, np.arange(n_boot)[:, None]].mean(1)
        rows.append({"setting": setting, "partner": partner, "d": float(d.mean()),
                     "d_lo": float(np.percentile(means, 2.5)), "d_hi": float(np.percentile(means, 97.5)),
                     "seeds": n_s, "images": n_i})
    return pd.DataFrame(rows, columns=["setting", "partner", "d", "d_lo", "d_hi", "seeds", "images"])


def floor_margins(runs: pd.DataFrame, floor: str = FLOOR, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each setting's test accuracy minus the floor's (:func:`paired_differences`: paired over images and
    seeds). Returns ``setting, dacc, dacc_lo, dacc_hi`` (fractions), empty when the floor did not run."""
    settings = _order(runs["setting"])
    if floor not in settings:
        return pd.DataFrame(columns=["setting", "dacc", "dacc_lo", "dacc_hi"])
    d = paired_differences(runs, {s: floor for s in settings}, n_boot, seed)
    return d.rename(columns={"d": "dacc", "d_lo": "dacc_lo", "d_hi": "dacc_hi"})[["setting", "dacc", "dacc_lo", "dacc_hi"]]


def uniform_margins(runs: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each attention setting's test accuracy minus uniform sampling's at the same ``P`` and ``N``
    (:func:`paired_differences`). Returns ``setting, duni, duni_lo, duni_hi``."""
    partners = {s: uniform_partner(s) for s in _order(runs["setting"]) if uniform_partner(s)}
    d = paired_differences(runs, partners, n_boot, seed)
    return d.rename(columns={"d": "duni", "d_lo": "duni_lo", "d_hi": "duni_hi"})[["setting", "duni", "duni_lo", "duni_hi"]]


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def accuracy_tables(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(per_run, summary, confusion)``.

    per_run: per (setting, seed, fold), the accuracy of each split (test: over images and draws), the sd of the
    test accuracy over draws, test seconds and pixels per image;
    summary: per setting, ``test_acc`` — the mean over every stored test prediction (images × draws × seeds) —
    and its spread three ways: ``sd_draws`` (over the R draws, each draw's accuracy over all test images of a
    seed; the mean over seeds), ``sd_seeds`` (over training seeds, each seed's accuracy over all its test
    predictions) and ``sd_folds``; NaN where there is one draw, seed or fold. Then the margins over the floor
    (:func:`floor_margins`) and, for attention, over uniform sampling (:func:`uniform_margins`), and the
    attention's concentration on test images (medians over images, seeds and folds of the largest cell over
    the mean and of the entropy over log K);
    confusion: test predictions pooled over runs, ``setting, true, predicted, count, fraction`` (of the true
    class); ``count`` averages over draws (an image tested once per seed counts once per seed).
    """
    runs = runs.assign(correct=(runs["label"] == runs["pred"]).astype(float),
                       **{c: runs[c] if c in runs else d for c, d in (("draw", 0), ("timer", "wall"))})
    acc = runs.pivot_table(index=["setting", "seed", "fold"], columns="split", values="correct", aggfunc="mean")
    acc.columns = [f"{c}_acc" for c in acc.columns]
    t = runs[runs["split"] == "test"]
    by_run = t.groupby(["setting", "seed", "fold"])
    draw_sd = t.groupby(["setting", "seed", "fold", "draw"])["correct"].mean().groupby(["setting", "seed", "fold"]).agg(_sd)
    per_run = acc.join(draw_sd.rename("test_acc_sd_draws")).join(
        by_run[["seconds_per_image", "timer", "pixels_per_image", "selected_epoch"]].first()).reset_index()
    per_run = per_run.join(by_run["draw"].nunique().rename("draws"), on=["setting", "seed", "fold"])
    rows = []
    for setting in _order(per_run["setting"]):
        r, ts = per_run[per_run["setting"] == setting], t[t["setting"] == setting]
        p = parse_setting(setting)
        row = {"setting": setting, "kind": p["kind"], "patch_px": p.get("patch_px", ""),
               "n_patches": p.get("n_patches", ""), "estimator": p.get("estimator") or "",
               "runs": len(r), "seeds": r["seed"].nunique(), "folds": r["fold"].nunique(), "draws": int(r["draws"].max()),
               "train_acc": r["train_acc"].mean() if "train_acc" in r else np.nan,
               "train_acc_sd": _sd(r["train_acc"]) if "train_acc" in r else np.nan,
               "test_acc": ts["correct"].mean()}
        per_draw = ts.groupby(["seed", "draw"])["correct"].mean()
        row["sd_draws"] = float(per_draw.groupby("seed").agg(_sd).mean()) if row["draws"] > 1 else np.nan
        row["sd_seeds"] = _sd(ts.groupby("seed")["correct"].mean())
        row["sd_folds"] = _sd(ts.groupby("fold")["correct"].mean())
        row["seconds_per_image"] = r["seconds_per_image"].mean()
        row["timer"] = "+".join(sorted(set(r["timer"].astype(str))))
        row["pixels_per_image"] = int(r["pixels_per_image"].mean())
        for col in ("attention_max_over_mean", "attention_entropy_ratio"):
            values = pd.to_numeric(ts.loc[ts["draw"] == 0, col], errors="coerce").dropna() if col in ts else ()
            row[col] = float(np.median(values)) if len(values) else np.nan
        rows.append(row)
    summary = pd.DataFrame(rows)
    for margins in (floor_margins(runs), uniform_margins(runs)):
        if len(margins):
            summary = summary.merge(margins, on="setting", how="left")
    weight = 1.0 / t.groupby(["setting", "seed", "fold"])["draw"].transform("nunique")
    conf = t.assign(w=weight).groupby(["setting", "label", "pred"])["w"].sum().rename("count").reset_index()
    classes = sorted(set(runs["label"]))
    full = pd.MultiIndex.from_product([_order(t["setting"]), classes, classes], names=["setting", "true", "predicted"])
    conf = conf.rename(columns={"label": "true", "pred": "predicted"}).set_index(["setting", "true", "predicted"])
    conf = conf.reindex(full, fill_value=0.0).reset_index()
    conf["count"] = conf["count"].round(6)
    conf["fraction"] = conf["count"] / conf.groupby(["setting", "true"])["count"].transform("sum").clip(lower=1e-12)
    return per_run, summary, conf


def _interval(d, lo, hi) -> str:
    if d is None or pd.isna(d):
        return ""
    return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]".replace("-", "−")


def _spread(v, undefined: str) -> str:
    return undefined if pd.isna(v) else f"{100 * v:.1f}"


def format_accuracy(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as people read it: accuracies in %, the three spreads in points ('1 draw' / '1 run' / '1
    fold' where undefined), the paired margins with their intervals, the attention's concentration."""
    out = summary[["setting"]].copy()
    out["runs"] = [f"{s} seed{'s' * (s > 1)} × {f} fold{'s' * (f > 1)}" if "seeds" in summary else str(r)
                   for s, f, r in zip(summary.get("seeds", summary["runs"]), summary.get("folds", summary["runs"]),
                                      summary["runs"])]
    out["train accuracy"] = [f"{100 * m:.1f}%" for m in summary["train_acc"]]
    out["test accuracy"] = [f"{100 * m:.1f}%" for m in summary["test_acc"]]
    if "sd_draws" in summary:
        out["sd over draws"] = [_spread(v, "1 draw") for v in summary["sd_draws"]]
        out["sd over seeds"] = [_spread(v, "1 run") for v in summary["sd_seeds"]]
        out["sd over folds"] = [_spread(v, "1 fold") for v in summary["sd_folds"]]
    if "duni" in summary:
        out["Δ vs uniform [95% CI]"] = [_interval(d, lo, hi) for d, lo, hi in
                                        zip(summary["duni"], summary["duni_lo"], summary["duni_hi"])]
    if "dacc" in summary:
        out[f"Δ vs {FLOOR} [95% CI]"] = [
            "floor" if s == FLOOR else _interval(d, lo, hi)
            for s, d, lo, hi in zip(summary["setting"], summary["dacc"], summary["dacc_lo"], summary["dacc_hi"])]
    if "attention_max_over_mean" in summary:
        out["attention max / mean"] = ["" if pd.isna(v) else f"{v:.1f}×" for v in summary["attention_max_over_mean"]]
        out["entropy / uniform"] = ["" if pd.isna(v) else f"{v:.2f}" for v in summary["attention_entropy_ratio"]]
    timer = "CPU" if "timer" in summary and set(summary["timer"].astype(str)) == {"cpu"} else "wall"
    out[f"{timer} ms / image"] = (1000 * summary["seconds_per_image"]).round(2)
    out["pixels / image"] = summary["pixels_per_image"]
    return out


def accuracy_verdict(summary: pd.DataFrame) -> list[str]:
    """The setting with the best test accuracy and whether it beats the ``colour_hist`` floor (its paired
    interval above zero); then, when attention and uniform sampling both ran, how many attention settings beat
    uniform sampling at the same ``P`` and ``N``."""
    if summary.empty:
        return []
    methods = summary[summary["setting"] != FLOOR].sort_values("test_acc", ascending=False, kind="stable")
    best = (methods if len(methods) else summary).iloc[0]
    seeds, draws = int(best.get("seeds", best["runs"])), int(best.get("draws", 1))
    sd = best.get("sd_seeds", np.nan)
    spread = f" ± {100 * sd:.1f} over {seeds} seeds" if seeds > 1 and not pd.isna(sd) else " (1 run)"
    head = f"best {best['setting']}, test accuracy {100 * best['test_acc']:.1f}%{spread}"
    if draws > 1:
        head += f", {draws} patch draws per image"
    floor = summary[summary["setting"] == FLOOR]
    if floor.empty or "dacc" not in summary or best["setting"] == FLOOR:
        lines = [f"{head} (no floor in this table)"]
    elif floor.iloc[0]["test_acc"] >= best["test_acc"]:
        lines = [f"{head}: the {FLOOR} floor ({100 * floor.iloc[0]['test_acc']:.1f}%) is as good or better"]
    else:
        lo = best["dacc_lo"]
        says = "beats the floor" if lo > 0 else "does not beat the floor (the interval reaches 0)"
        lines = [f"{head}, {_interval(best['dacc'], lo, best['dacc_hi'])} points over {FLOOR} "
                 f"(paired over test images and seeds): {says}"]
    if "duni" in summary and summary["duni"].notna().any():
        att = summary[summary["duni"].notna()]
        won, lost = int((att["duni_lo"] > 0).sum()), int((att["duni_hi"] < 0).sum())
        top = att.sort_values("duni", ascending=False, kind="stable").iloc[0]
        runs = "paired over test images and seeds" if int(top.get("seeds", 1)) > 1 else \
            "paired over test images; 1 run, so run-to-run variation is not in the interval"
        lines.append(f"attention vs uniform sampling at the same P and N ({runs}): {won} of {len(att)} settings "
                     f"beat uniform, {lost} lose; largest difference {top['setting']} "
                     f"{_interval(top['duni'], top['duni_lo'], top['duni_hi'])} points")
    return lines
