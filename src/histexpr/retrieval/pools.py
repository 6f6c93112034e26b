"""What each fold's exemplar pool is made of, and whether every window that needs exemplars can have them.

The pool is a fold's ``train`` windows. A query may take an exemplar only from a window outside its own
exclusion group (its patient, its section, or itself: ``exemplars.exclude``). So with one training patient and
``exclude: patient``, no training window has an eligible exemplar, and a model that reads exemplars would
train on none and test on k. :func:`check_pools` finds this from the sample sheet, before anything runs;
:func:`pool_report` describes the pool a fold actually got.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ConfigError

# Models that read exemplars while they train (for their training and validation windows).
TRAIN_ON_EXEMPLARS = ("egn", "egn_no_projector", "retro", "vitexp")
DOMINANT_SHARE = 0.5  # warn when one section supplies more than this share of a test section's exemplars


def _group(sample: str, samples: pd.DataFrame, exclude: str) -> str:
    if exclude == "patient":
        return str(samples.set_index("sample").loc[sample, "patient"])
    return sample  # "sample"; "none" excludes only the window itself, checked by window count


def check_pools(samples: pd.DataFrame, plan: list[dict], exclude: str, models: list[str], source: str) -> None:
    """Refuse a study in which a model that reads exemplars would train or validate on windows with none.

    Args:
        samples: the sample sheet (``sample``, ``patient``).
        plan: :func:`histexpr.data.folds.fold_plan`.
        exclude: ``exemplars.exclude``.
        models: the runs' base model names.
        source: the config, named in the error.
    """
    readers = sorted({m for m in models if m in TRAIN_ON_EXEMPLARS})
    if not readers or exclude == "none":
        return
    for f in plan:
        pool_groups = {_group(s, samples, exclude) for s in f["train"]}
        for split in ("train", "val"):
            lacking = [s for s in f[split] if not pool_groups - {_group(s, samples, exclude)}]
            if not lacking:
                continue
            noun = "patient" if exclude == "patient" else "section"
            where = f"{noun} {_group(lacking[0], samples, exclude)}"
            only = ", ".join(sorted(pool_groups))
            fix = ("exemplars.exclude: sample (exemplars from the patient's other sections), or more patients"
                   if exclude == "patient" and len(f["train"]) > 1 else
                   "more patients or sections in training (a single training section has no exemplar outside "
                   "itself)")
            raise ConfigError(source, f"fold {f['fold']}: the {split} windows of {where} have no eligible exemplar: "
                                      f"the pool (the fold's training windows: sections {', '.join(f['train'])}) "
                                      f"holds only {noun} {only}, which exemplars.exclude: {exclude} rules out; "
                                      f"{', '.join(readers)} would {'train' if split == 'train' else 'validate'} "
                                      f"without exemplars and test with them. Fix: {fix}")


def pool_report(obs: pd.DataFrame, pool_rows: np.ndarray, rows: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pool's make-up and where each test section's exemplars come from.

    Args:
        obs: the fold's obs (``split``, ``patient``, ``sample``).
        pool_rows: obs row numbers of the pool.
        rows: ``(n_obs, k)`` obs row number of each query's exemplars, -1 where missing.

    Returns:
        ``pool``: one row per pool section (``patient``, ``sample``, ``windows``, ``share``), largest first;
        ``sources``: one row per test section (``sample``, ``queries``, ``exemplars``, ``top_source``,
        ``top_share``, ``no_exemplar``).
    """
    pool = (obs.iloc[pool_rows].groupby(["patient", "sample"], observed=True).size().rename("windows")
            .reset_index().sort_values("windows", ascending=False, kind="stable"))
    pool["share"] = pool["windows"] / max(1, len(pool_rows))
    samples = obs["sample"].astype(str).to_numpy()
    test = obs["split"].to_numpy() == "test"
    out = []
    for sample in sorted(set(samples[test])):
        q = test & (samples == sample)
        ex = rows[q].ravel()
        ex = ex[ex >= 0]
        src = pd.Series(samples[ex]).value_counts()
        out.append({"sample": sample, "queries": int(q.sum()), "exemplars": int(len(ex)),
                    "top_source": src.index[0] if len(src) else "",
                    "top_share": float(src.iloc[0] / len(ex)) if len(ex) else 0.0,
                    "no_exemplar": int(((rows[q] >= 0).sum(axis=1) == 0).sum())})
    return pool.reset_index(drop=True), pd.DataFrame(out, columns=["sample", "queries", "exemplars", "top_source",
                                                                   "top_share", "no_exemplar"])


def describe_pool(pool: pd.DataFrame) -> str:
    """``3 sections of 1 patient (C: C3 180, C4 184, C5 181); largest share C4 34%``."""
    pool = pool.astype({"patient": str, "sample": str})
    parts = [f"{p}: " + ", ".join(f"{s} {w}" for s, w in zip(g["sample"], g["windows"]))
             for p, g in pool.sort_values(["patient", "sample"]).groupby("patient", sort=False)]
    n_s, n_p = len(pool), pool["patient"].nunique()
    top = pool.iloc[0] if len(pool) else None
    largest = f"; largest share {top['sample']} {100 * top['share']:.0f}%" if top is not None else ""
    return (f"{int(pool['windows'].sum())} windows from {n_s} section{'s' * (n_s != 1)} of {n_p} "
            f"patient{'s' * (n_p != 1)} ({'; '.join(parts)}){largest}")
