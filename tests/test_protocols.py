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


def _two_depth_sections(rng, n_sections=2, n=120, g=15):
    """Sections whose mean expression differs (one shallow, one deep): a model that follows the section's mean
    wins when the sections are pooled, and loses inside each section to a floor that follows each spot."""
    preds, slides, truth, model, floor = {}, [], [], [], []
    for s in range(n_sections):
        offset = 2.0 * s
        t = rng.normal(size=(n, g)) + offset
        truth.append(t)
        model.append(offset + 0.3 * (t - offset) + rng.normal(size=(n, g)))  # the section's level, little more
        floor.append(t + 1.2 * rng.normal(size=(n, g)) - offset)  # each spot, but blind to the section's level
        slides += [f"S{s}"] * n
    names = np.array([f"w{i}" for i in range(len(slides))])
    slides = np.array(slides)
    t, p, q = np.vstack(truth), np.vstack(model), np.vstack(floor)
    preds[("offset", "raw", 1)] = (names, t, p, slides)
    preds[("ref", "raw", 1)] = (names, t, q, slides)
    return preds


def test_per_section_margin_is_the_mean_of_section_margins_and_says_what_it_resampled():
    from histexpr.metrics import verdicts

    preds = _two_depth_sections(np.random.default_rng(5))
    m, sections = margins_over_reference(preds, "ref", n_boot=200, seed=0, with_sections=True)
    m = m.set_index(["model", "evaluation"])
    per = m.loc[("offset", "per_slide")]
    assert per["dPCC@M"] == pytest.approx(sections["dPCC@M"].mean())
    assert per["resampled"] == "windows within sections" and per["n_units"] == 2
    assert per["dPCC@M_hi"] < 0 < m.loc[("offset", "pooled"), "dPCC@M_lo"]  # pooled and per section disagree
    t, p = preds[("offset", "raw", 1)][1:3]
    s0 = preds[("offset", "raw", 1)][3] == "S0"
    assert sections.set_index("section").loc["S0", "PCC@M"] == pytest.approx(pearson_per_gene(t[s0], p[s0]).mean())
    # the verdict is per section, and says that pooling would read otherwise
    rows = []
    for model, pt in (("offset", preds[("offset", "raw", 1)][2]), ("ref", preds[("ref", "raw", 1)][2])):
        for ev, units in (("per_slide", [s0, ~s0]), ("pooled", [np.ones(len(t), bool)])):
            vals = [pearson_per_gene(t[u], pt[u]).mean() for u in units]
            row = {"model": model, "protocol": "raw", "evaluation": ev, "PCC@M": np.mean(vals),
                   "PCC@M_sd": np.std(vals, ddof=1) if len(vals) > 1 else np.nan, "n_sections": 2,
                   "margin_over": "ref"}
            if model != "ref":
                row.update(m.loc[(model, ev), ["dPCC@M", "dPCC@M_lo", "dPCC@M_hi", "resampled", "n_units"]])
                row["n_sections_ahead"] = int((sections["dPCC@M"] > 0).sum()) if ev == "per_slide" else np.nan
            rows.append(row)
    lines = verdicts(pd.DataFrame(rows))
    assert lines[0].startswith("raw: best ref, PCC@M") and "(2 test sections)" in lines[0]
    assert "the floor itself" in lines[0]
    assert "(pooled over sections, offset would lead by +" in lines[1]


def test_with_enough_sections_the_interval_resamples_sections():
    """Eight sections on which the model is alternately much better and much worse than the floor: resampling
    sections gives an interval that reaches 0 (a new section could go either way); resampling windows within
    these sections gives a narrow one (it speaks for these sections only)."""
    rng = np.random.default_rng(6)
    n, g, preds = 40, 15, {}
    t = rng.normal(size=(8 * n, g))
    sd = np.repeat(np.where(np.arange(8) % 2 == 0, 0.5, 3.0), n)[:, None]
    slides = np.repeat([f"S{i}" for i in range(8)], n)
    names = np.array([f"w{i}" for i in range(8 * n)])
    preds[("model", "raw", 1)] = (names, t, t + sd * rng.normal(size=t.shape), slides)
    preds[("ref", "raw", 1)] = (names, t, t + 1.2 * rng.normal(size=t.shape), slides)
    m, sections = margins_over_reference(preds, "ref", n_boot=400, seed=0, with_sections=True, min_sections=6)
    row = m.set_index(["model", "evaluation"]).loc[("model", "per_slide")]
    assert row["resampled"] == "sections" and row["n_units"] == 8
    d = sections["dPCC@M"].to_numpy()
    assert (d[::2] > 0.1).all() and (d[1::2] < -0.1).all()
    assert d.min() <= row["dPCC@M_lo"] < 0 < row["dPCC@M_hi"] <= d.max()
    w = margins_over_reference(preds, "ref", n_boot=400, seed=0, min_sections=99)
    w = w.set_index(["model", "evaluation"]).loc[("model", "per_slide")]
    assert w["resampled"] == "windows within sections" and w["dPCC@M"] == pytest.approx(row["dPCC@M"])
    assert row["dPCC@M_hi"] - row["dPCC@M_lo"] > 3 * (w["dPCC@M_hi"] - w["dPCC@M_lo"])
