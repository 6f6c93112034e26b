"""Accuracy tables of the classification branch: per run, mean ± sd over folds × seeds, confusion matrices."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .models.ats import FLOOR, parse_setting

_RUN = re.compile(r"(?P<setting>[^/]+)/seed_(?P<seed>-?\d+)/fold_(?P<fold>\d+)/[^/]+$")


def load_runs(predictions: list[str], histories: list[str] | None = None) -> pd.DataFrame:
    """Every run's predictions with ``setting, seed, fold`` (and the selected epoch) from its path."""
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
        return ({"ats": 0, "uniform": 1, "cnn": 2, "floor": 3}[p["kind"]], p.get("patch_px", 0), p.get("n_patches", 0))

    return sorted(set(settings), key=key)


def floor_margins(runs: pd.DataFrame, floor: str = FLOOR, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each setting's test accuracy minus the floor's, paired over images, with a 95% bootstrap interval.

    An image's score is its test correctness averaged over the setting's seeds (every image is a test image
    once per seed); the margin is the mean over images of ``score - floor score``, and the interval the 2.5 and
    97.5 percentiles of that mean over ``n_boot`` resamples of the images (the same resamples for every
    setting). Returns ``setting, dacc, dacc_lo, dacc_hi`` (fractions), empty when the floor did not run.
    """
    t = runs[runs["split"] == "test"].assign(correct=lambda d: (d["label"] == d["pred"]).astype(float))
    score = t.pivot_table(index="index", columns="setting", values="correct", aggfunc="mean")
    if floor not in score:
        return pd.DataFrame(columns=["setting", "dacc", "dacc_lo", "dacc_hi"])
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, len(score), size=(n_boot, len(score)))
    rows = []
    for setting in _order(score.columns):
        both = score[[setting, floor]].dropna()
        d = (both[setting] - both[floor]).to_numpy()
        means = d[boot % len(d)].mean(1) if len(d) else np.array([np.nan])
        rows.append({"setting": setting, "dacc": float(d.mean()) if len(d) else np.nan,
                     "dacc_lo": float(np.percentile(means, 2.5)), "dacc_hi": float(np.percentile(means, 97.5))})
    return pd.DataFrame(rows)


def accuracy_tables(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(per_run, summary, confusion)``.

    per_run: accuracy of each split, test seconds and pixels per image, per (setting, seed, fold);
    summary: per setting, mean and sd over its runs of train and test accuracy, seconds and pixels per image,
    and (when ``colour_hist`` ran) the margin over it with its interval (:func:`floor_margins`);
    confusion: test predictions pooled over runs, ``setting, true, predicted, count, fraction`` (of the true class).
    """
    runs = runs.assign(correct=runs["label"] == runs["pred"])
    acc = runs.pivot_table(index=["setting", "seed", "fold"], columns="split", values="correct", aggfunc="mean")
    acc.columns = [f"{c}_acc" for c in acc.columns]
    test = runs[runs["split"] == "test"].groupby(["setting", "seed", "fold"])
    per_run = acc.join(test[["seconds_per_image", "pixels_per_image", "selected_epoch"]].first()).reset_index()
    rows = []
    for setting in _order(per_run["setting"]):
        r = per_run[per_run["setting"] == setting]
        p = parse_setting(setting)
        row = {"setting": setting, "kind": p["kind"], "patch_px": p.get("patch_px", ""),
               "n_patches": p.get("n_patches", ""), "runs": len(r)}
        for col in ("train_acc", "test_acc"):
            row[col], row[f"{col}_sd"] = r[col].mean(), r[col].std(ddof=1) if len(r) > 1 else 0.0
        row["seconds_per_image"] = r["seconds_per_image"].mean()
        row["pixels_per_image"] = int(r["pixels_per_image"].mean())
        rows.append(row)
    summary = pd.DataFrame(rows)
    margins = floor_margins(runs)
    if len(margins):
        summary = summary.merge(margins, on="setting", how="left")
    t = runs[runs["split"] == "test"]
    conf = t.groupby(["setting", "label", "pred"]).size().rename("count").reset_index()
    classes = sorted(set(runs["label"]))
    full = pd.MultiIndex.from_product([_order(t["setting"]), classes, classes], names=["setting", "true", "predicted"])
    conf = conf.rename(columns={"label": "true", "pred": "predicted"}).set_index(["setting", "true", "predicted"])
    conf = conf.reindex(full, fill_value=0).reset_index()
    conf["fraction"] = conf["count"] / conf.groupby(["setting", "true"])["count"].transform("sum").clip(lower=1)
    return per_run, summary, conf


def format_accuracy(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as people read it: accuracies as ``mean% ± sd%``."""
    out = summary[["setting", "runs"]].copy()
    for col, name in (("train_acc", "train accuracy"), ("test_acc", "test accuracy")):
        out[name] = [f"{100 * m:.1f}% ± {100 * s:.1f}%" for m, s in zip(summary[col], summary[f"{col}_sd"])]
    if "dacc" in summary:
        out[f"Δ vs {FLOOR} [95% CI]"] = [
            "floor" if s == FLOOR else f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            for s, d, lo, hi in zip(summary["setting"], summary["dacc"], summary["dacc_lo"], summary["dacc_hi"])]
    out["ms / image"] = (1000 * summary["seconds_per_image"]).round(2)
    out["pixels / image"] = summary["pixels_per_image"]
    return out


def accuracy_verdict(summary: pd.DataFrame) -> list[str]:
    """One line: the setting with the best test accuracy, and whether it beats the ``colour_hist`` floor (its
    paired interval above zero)."""
    if summary.empty:
        return []
    methods = summary[summary["setting"] != FLOOR].sort_values("test_acc", ascending=False, kind="stable")
    best = (methods if len(methods) else summary).iloc[0]
    runs = int(best["runs"])
    spread = f" ± {100 * best['test_acc_sd']:.1f}%" if runs > 1 else " (1 run)"
    head = f"best {best['setting']}, test accuracy {100 * best['test_acc']:.1f}%{spread}"
    floor = summary[summary["setting"] == FLOOR]
    if floor.empty or "dacc" not in summary or best["setting"] == FLOOR:
        return [f"{head} (no floor in this table)"]
    f = floor.iloc[0]
    if f["test_acc"] >= best["test_acc"]:
        return [f"{head}: the {FLOOR} floor ({100 * f['test_acc']:.1f}%) is as good or better"]
    lo, hi = best["dacc_lo"], best["dacc_hi"]
    says = "beats the floor" if lo > 0 else "does not beat the floor (the interval reaches 0)"
    return [f"{head}, {100 * best['dacc']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] points over {FLOOR} "
            f"(paired over test images): {says}"]
