"""Cross-validation folds at patient (or section) level, with a validation split.

Every fold holds out a group of test units (patients by default, or sections), or, when the sample sheet
has a ``split`` column, one fold tests exactly the sections it marks ``test``;
its training units are split again into ``train`` and ``val`` for model
selection and early stopping. The validation part is carved at the coarsest
level available: whole patients (or sections) when there are at least two
training units, else whole sections of the one training patient, else a
spatially contiguous band of the one training section.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import ConfigError

log = logging.getLogger(__name__)

FOLD_COLUMNS = ["fold", "split", "patient", "sample", "spot", "obs_name"]


def fold_units(samples: pd.DataFrame, level: str) -> pd.Series:
    """Map each sample to the unit that folds hold out together."""
    if level == "patient":
        return samples.set_index("sample")["patient"].astype(str)
    if level == "sample":
        return pd.Series(samples["sample"].astype(str).to_numpy(), index=samples["sample"])
    raise ConfigError(None, f"folds.level must be 'patient' or 'sample', not {level!r}")


def assign_test_units(units: list[str], k, seed: int) -> list[list[str]]:
    """Group units into test sets: one per unit (``k='loo'``) or ``k`` shuffled groups."""
    units = sorted(set(units))
    if k == "loo":
        return [[u] for u in units]
    k = int(k)
    if k < 2 or k > len(units):
        raise ConfigError(None, f"folds.k = {k} needs between 2 and {len(units)} folds for {len(units)} units")
    order = np.random.default_rng(seed).permutation(len(units))
    return [sorted(units[i] for i in part) for part in np.array_split(order, k)]


def fixed_test_units(samples: pd.DataFrame, level: str) -> list[str] | None:
    """The units the sheet's ``split`` column names as test (one fold), or None for cross-validation.

    A unit (patient, at the default level) with sections on both sides is an error: it would leak."""
    if "split" not in samples or not (samples["split"].fillna("") != "").any():
        return None
    unit = fold_units(samples, level).loc[samples["sample"]].to_numpy()
    split = samples["split"].to_numpy()
    both = sorted(set(unit[split == "test"]) & set(unit[split == "train"]))
    if both:
        raise ConfigError(None, f"sample sheet column 'split': {level}(s) {', '.join(both)} have sections in both "
                                f"train and test; a {level} must be on one side (or set folds.level: sample)")
    return sorted(set(unit[split == "test"]))


def fold_test_groups(samples: pd.DataFrame, folds_cfg: dict) -> list[list[str]]:
    """Each fold's test units: the sheet's fixed test set (one fold), else ``folds.k`` cross-validation."""
    fixed = fixed_test_units(samples, folds_cfg["level"])
    if fixed is not None:
        log.info("the sample sheet's split column fixes the test set: one fold, test %s(s) %s (folds.k unused)",
                 folds_cfg["level"], ",".join(fixed))
        return [fixed]
    units = fold_units(samples, folds_cfg["level"]).unique().tolist()
    if len(units) < 2:
        raise ConfigError(None, f"cross-validation at {folds_cfg['level']} level needs at least two "
                                f"{folds_cfg['level']}s; the study has {len(units)}")
    return assign_test_units(units, folds_cfg["k"], folds_cfg["seed"])


def n_folds(samples: pd.DataFrame, folds_cfg: dict) -> int:
    return len(fold_test_groups(samples, folds_cfg))


def _pick_validation(items: list[str], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Whole units (or sections) for validation: a ``fraction`` of ``items``, at least one, leaving one."""
    n_val = min(len(items) - 1, max(1, int(round(fraction * len(items)))))
    return rng.choice(sorted(items), size=n_val, replace=False)


def fold_plan(samples: pd.DataFrame, folds_cfg: dict) -> list[dict]:
    """Which sections each fold trains, validates and tests on, from the sample sheet alone (as
    :func:`make_folds` will split them): ``{"fold", "train", "val", "test", "band"}``, the first four lists of
    sample ids; ``band`` when validation is a spatial band of the one training section (which then is in
    ``train`` and ``val``)."""
    unit_of = fold_units(samples, folds_cfg["level"])
    units = unit_of.unique().tolist()
    plan = []
    for f, test_units in enumerate(fold_test_groups(samples, folds_cfg), start=1):
        rng = np.random.default_rng(folds_cfg["seed"] * 1000 + f)
        train_units = sorted(set(units) - set(test_units))
        train = sorted(unit_of.index[unit_of.isin(train_units)])
        test = sorted(unit_of.index[unit_of.isin(test_units)])
        val, band = [], False
        if folds_cfg["val_fraction"] > 0:
            if len(train_units) >= 2:
                chosen = set(_pick_validation(train_units, folds_cfg["val_fraction"], rng))
                val = sorted(s for s in train if unit_of[s] in chosen)
            elif len(train) >= 2:
                val = sorted(_pick_validation(train, folds_cfg["val_fraction"], rng))
            else:
                val, band = list(train), True
        plan.append({"fold": f, "train": [s for s in train if band or s not in val], "val": val, "test": test,
                     "band": band})
    return plan


def _carve_validation(spots: pd.DataFrame, train_units: list[str], unit_of: pd.Series,
                      fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Boolean mask over ``spots`` (the training part) marking validation spots."""
    if fraction <= 0:
        return np.zeros(len(spots), bool), "none"
    unit = spots["sample"].map(unit_of).to_numpy()
    if len(train_units) >= 2:
        val_units = _pick_validation(train_units, fraction, rng)
        return np.isin(unit, val_units), "units " + ",".join(sorted(map(str, val_units)))
    samples = sorted(spots["sample"].unique())
    if len(samples) >= 2:
        val_samples = _pick_validation(samples, fraction, rng)
        return spots["sample"].isin(val_samples).to_numpy(), "sections " + ",".join(sorted(val_samples))
    y = spots["array_y"].to_numpy()
    cut = np.quantile(y, 1.0 - fraction)
    mask = y >= cut
    if mask.all() or not mask.any():
        mask = np.zeros(len(y), bool)
        mask[np.argsort(y)[-max(1, int(round(fraction * len(y)))):]] = True
    return mask, f"spatial band of section {samples[0]} (array_y >= {cut:g})"


def make_folds(samples: pd.DataFrame, spots: pd.DataFrame, folds_cfg: dict) -> pd.DataFrame:
    """Build the spot-level fold table.

    Args:
        samples: the sample sheet (``sample``, ``patient``).
        spots: one row per tiled spot: ``sample``, ``patient``, ``spot``,
            ``obs_name``, ``array_y``.
        folds_cfg: ``level``, ``k``, ``val_fraction``, ``seed``.

    Returns:
        One row per (fold, spot): ``fold`` (1-based), ``split``
        (``train``/``val``/``test``), ``patient``, ``sample``, ``spot``,
        ``obs_name``.
    """
    unit_of = fold_units(samples, folds_cfg["level"])
    units = unit_of.unique().tolist()
    groups = fold_test_groups(samples, folds_cfg)
    tables = []
    for f, test_units in enumerate(groups, start=1):
        unit = spots["sample"].map(unit_of)
        is_test = unit.isin(test_units).to_numpy()
        train_units = sorted(set(units) - set(test_units))
        rng = np.random.default_rng(folds_cfg["seed"] * 1000 + f)
        train_part = spots[~is_test]
        val_mask, how = _carve_validation(train_part, train_units, unit_of, folds_cfg["val_fraction"], rng)
        split = np.full(len(spots), "test", dtype=object)
        split_train = np.where(val_mask, "val", "train")
        split[~is_test] = split_train
        log.info("fold %d: test %s %s; validation from %s; spots train/val/test = %d/%d/%d", f,
                 folds_cfg["level"], ",".join(test_units), how, (split == "train").sum(),
                 (split == "val").sum(), (split == "test").sum())
        tables.append(pd.DataFrame({"fold": f, "split": split, "patient": spots["patient"].to_numpy(),
                                    "sample": spots["sample"].to_numpy(), "spot": spots["spot"].to_numpy(),
                                    "obs_name": spots["obs_name"].to_numpy()}))
    return pd.concat(tables, ignore_index=True)[FOLD_COLUMNS]


FINAL_FOLD = 0


def final_fold(samples: pd.DataFrame, spots: pd.DataFrame, folds_cfg: dict) -> pd.DataFrame:
    """Fold 0: every unit in training, no test; the model ``predict`` applies to new slides.

    Validation (for early stopping and model selection) takes whole units, as in :func:`make_folds`, while
    at least two units stay in training; with fewer units it is a spatial band of every section, so every
    patient and section still trains. Fold 0 is never evaluated: the cross-validation folds say how well
    it does. Returns rows in :func:`make_folds`'s layout with ``fold`` 0 and ``split`` train/val.
    """
    unit_of = fold_units(samples, folds_cfg["level"])
    units = sorted(set(spots["sample"].map(unit_of)))
    fraction = folds_cfg["val_fraction"]
    rng = np.random.default_rng(folds_cfg["seed"] * 1000 + FINAL_FOLD)
    n_val = max(1, int(round(fraction * len(units))))
    if fraction <= 0 or len(units) - n_val >= 2:
        val_mask, how = _carve_validation(spots, units, unit_of, fraction, rng)
    else:
        val_mask = np.zeros(len(spots), bool)
        for _, rows in spots.groupby("sample").indices.items():
            val_mask[rows] = _carve_validation(spots.iloc[rows], [], unit_of, fraction, rng)[0]
        how = "a spatial band of every section (whole units would leave fewer than two to train)"
    split = np.where(val_mask, "val", "train").astype(object)
    log.info("fold 0 (all %ss, for predict): validation from %s; spots train/val = %d/%d", folds_cfg["level"], how,
             (split == "train").sum(), (split == "val").sum())
    return pd.DataFrame({"fold": FINAL_FOLD, "split": split, "patient": spots["patient"].to_numpy(),
                         "sample": spots["sample"].to_numpy(), "spot": spots["spot"].to_numpy(),
                         "obs_name": spots["obs_name"].to_numpy()})[FOLD_COLUMNS]
