"""Target protocols and the library-size shortcut, on the real HER2ST subset.

A "model" that knows nothing but each spot's total count scores well under
EGN's ``raw`` protocol and about zero under ``library_size`` (once spot QC
drops the few shallow, mostly-zero spots) and in the partial correlations given
the log total count.
"""

import numpy as np
import pandas as pd
import pytest

from histexpr.data.expression import build_fold_expression, low_count_spots
from histexpr.data.folds import make_folds
from histexpr.io import build_her2st_sheet, read_sample
from histexpr.metrics import evaluate, margins_over_reference, partial_pearson_per_gene, pearson_per_gene


def load_counts(root, min_counts=0):
    """Every section's counts after the tile rule's spot QC (``expression.min_counts``), and LOSO folds."""
    sheet = build_her2st_sheet(root)
    adatas = {}
    for _, row in sheet.iterrows():
        a, _ = read_sample(row)
        a = a[~low_count_spots(a, min_counts)].copy()
        a.obs_names = [f"{row['sample']}_{s}" for s in a.obs["spot"]]
        a.obs["sample"], a.obs["patient"] = row["sample"], row["patient"]
        adatas[row["sample"]] = a
    spots = pd.concat([a.obs.assign(obs_name=a.obs_names) for a in adatas.values()], ignore_index=True)
    folds = make_folds(sheet, spots, {"level": "sample", "k": "loo", "val_fraction": 0.2, "seed": 0})
    return adatas, folds


@pytest.fixture(scope="module")
def her2st_counts(her2st_root):
    return load_counts(her2st_root)


@pytest.fixture(scope="module")
def her2st_qc_counts(her2st_root):
    return load_counts(her2st_root, min_counts=2000)


def total_count_model(her2st_counts, protocol, noise=0.0):
    """Per test section: (summary, per-gene table) of a prediction = log total count (+ noise)."""
    adatas, folds = her2st_counts
    out = {}
    for fold, table in folds.groupby("fold"):
        e = build_fold_expression(adatas, table, {"top_n": 250, "log1p": True, "target_sum": 1e4}, protocol=protocol)
        test = (e.obs["split"] == "test").to_numpy()
        z = np.log1p(e.obs["library_size"].to_numpy())[test]
        rng = np.random.default_rng(fold)
        pred = np.repeat((z + noise * z.std() * rng.normal(size=len(z)))[:, None], e.n_vars, axis=1)
        summary, genes = evaluate(np.asarray(e.X)[test], pred, e.obs["sample"].to_numpy()[test],
                                  e.var_names.tolist(), log_total=z)
        out[e.obs["sample"][test].iloc[0]] = (summary.iloc[0], genes[genes.scope == "pooled"])
    return out


def test_total_count_predictor_scores_under_raw_and_not_under_library_size(her2st_counts, her2st_qc_counts):
    raw = total_count_model(her2st_counts, "raw")
    lib = total_count_model(her2st_counts, "library_size")
    qc_raw = total_count_model(her2st_qc_counts, "raw")
    qc_lib = total_count_model(her2st_qc_counts, "library_size")
    table = pd.DataFrame({s: {"raw": raw[s][0]["PCC@M"], "library_size": lib[s][0]["PCC@M"],
                              "raw, min_counts 2000": qc_raw[s][0]["PCC@M"],
                              "library_size, min_counts 2000": qc_lib[s][0]["PCC@M"],
                              "spots dropped by QC": raw[s][0]["n_windows"] - qc_raw[s][0]["n_windows"]}
                          for s in raw}).T
    print("\nPCC@M of 'predict the log total count', leave-one-section-out:\n", table.round(3).to_string())
    assert (table.loc[["C2", "C3", "C4", "C5"], "raw"] > 0.4).all()  # the shortcut scores under raw ...
    assert table["raw"].mean() > 0.5
    # ... and far less once the library size is divided out. Without spot QC not zero: log1p of counts
    # per 10k keeps a depth effect through zeros (a shallow spot has more zero genes) ...
    assert (table["library_size"] < 0.6 * table["raw"]).all()
    assert table["raw"].mean() - table["library_size"].mean() > 0.3
    # ... carried by a few shallow spots: the QC option (expression.min_counts: 2000, 3-11% of a section's
    # spots) leaves the shortcut as strong as before under raw and about zero under library_size.
    assert (table["spots dropped by QC"] < 0.12 * pd.Series({s: raw[s][0]["n_windows"] for s in raw})).all()
    assert (table.loc[["C2", "C3", "C4", "C5"], "raw, min_counts 2000"] > 0.4).all()
    assert (table["library_size, min_counts 2000"].abs() < 0.15).all()
    # The prediction is a function of the covariate alone: its partial correlation is undefined (NaN),
    # reported as such, never as a score.
    for s in raw:
        assert raw[s][1]["partial_pcc"].isna().all() and np.isnan(raw[s][0]["pPCC@M"])


def test_an_imperfect_cellularity_estimate_has_no_partial_correlation(her2st_counts):
    raw = total_count_model(her2st_counts, "raw", noise=0.3)
    pcc = pd.Series({s: v[0]["PCC@M"] for s, v in raw.items()})
    partial = pd.Series({s: v[0]["pPCC@M"] for s, v in raw.items()})
    print("\nlog total count + noise: PCC@M", pcc.round(3).to_dict(), "partial", partial.round(3).to_dict())
    n = pd.Series({s: v[0]["n_windows"] for s, v in raw.items()})
    assert pcc.mean() > 0.3
    # one noise draw per spot, shared by all genes: each section's partial r is one draw with SE ~ 1/sqrt(n)
    assert (partial.abs() < 2.5 / np.sqrt(n)).all()
    assert abs(partial.mean()) < 0.05


def test_partial_correlation_matches_residual_regression():
    rng = np.random.default_rng(0)
    n, g = 200, 6
    z = rng.normal(size=n)
    t = 0.7 * z[:, None] + rng.normal(size=(n, g))
    p = 0.5 * t + 0.9 * z[:, None] + rng.normal(size=(n, g))
    got = partial_pearson_per_gene(t, p, z)
    design = np.column_stack([np.ones(n), z])
    res = lambda a: a - design @ np.linalg.lstsq(design, a, rcond=None)[0]  # noqa: E731
    np.testing.assert_allclose(got, [np.corrcoef(res(t[:, j]), res(p[:, j]))[0, 1] for j in range(g)], atol=1e-12)
    # the textbook formula r_tp.z = (r_tp - r_tz r_pz) / sqrt((1 - r_tz²)(1 - r_pz²))
    r = lambda a, b: np.corrcoef(a, b)[0, 1]  # noqa: E731
    j = 2
    formula = (r(t[:, j], p[:, j]) - r(t[:, j], z) * r(p[:, j], z)) / np.sqrt((1 - r(t[:, j], z) ** 2) *
                                                                             (1 - r(p[:, j], z) ** 2))
    assert got[j] == pytest.approx(formula, abs=1e-12)


def test_bootstrap_margin_is_paired_and_covers_the_point_estimate():
    rng = np.random.default_rng(1)
    preds = {}
    for fold in (1, 2):
        n, g = 150, 20
        t = rng.normal(size=(n, g))
        good = t + rng.normal(size=(n, g))
        weak = t + 3 * rng.normal(size=(n, g))
        names = np.array([f"f{fold}_{i}" for i in range(n)])
        slides = np.where(np.arange(n) < 70, f"s{fold}a", f"s{fold}b")
        preds[("good", "raw", fold)] = (names, t, good, slides)
        preds[("ref", "raw", fold)] = (names, t, weak, slides)
        preds[("same", "raw", fold)] = (names, t, weak.copy(), slides)
    m = margins_over_reference(preds, "ref", n_boot=300, seed=0).set_index(["model", "evaluation"])
    point = np.mean([pearson_per_gene(preds[("good", "raw", f)][1], preds[("good", "raw", f)][2]).mean()
                     - pearson_per_gene(preds[("ref", "raw", f)][1], preds[("ref", "raw", f)][2]).mean()
                     for f in (1, 2)])
    good = m.loc[("good", "pooled")]
    assert good["dPCC@M"] == pytest.approx(point)
    assert 0 < good["dPCC@M_lo"] < point < good["dPCC@M_hi"]
    same = m.loc[("same", "pooled")]  # identical predictions: every paired replicate is exactly zero
    assert same["dPCC@M"] == same["dPCC@M_lo"] == same["dPCC@M_hi"] == 0
    assert m.loc[("good", "per_slide"), "dPCC@M_lo"] > 0
    # seeded: the same table again
    again = margins_over_reference(preds, "ref", n_boot=300, seed=0).set_index(["model", "evaluation"])
    pd.testing.assert_frame_equal(m, again)
    # different windows for the model and the reference are refused
    broken = dict(preds)
    names, t, p, s = preds[("good", "raw", 1)]
    broken[("good", "raw", 1)] = (names[::-1], t, p, s)
    with pytest.raises(ValueError, match="same windows"):
        margins_over_reference(broken, "ref", n_boot=10)
