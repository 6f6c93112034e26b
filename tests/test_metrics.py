"""Metric code against an independent computation (scipy / numpy), constant genes included."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from histexpr.metrics import aggregate_folds, evaluate, pearson_per_gene, summarise, summarise_groups


@pytest.fixture
def random_data():
    rng = np.random.default_rng(42)
    n, g = 60, 12
    truth = rng.normal(size=(n, g))
    pred = 0.5 * truth + rng.normal(size=(n, g))
    truth[:, 3] = 0.7  # constant truth
    pred[:, 5] = -1.0  # constant prediction
    return truth, pred


def reference_pcc(truth, pred):
    out = []
    for j in range(truth.shape[1]):
        if np.ptp(truth[:, j]) == 0 or np.ptp(pred[:, j]) == 0:
            out.append(np.nan)
        else:
            out.append(stats.pearsonr(truth[:, j], pred[:, j]).statistic)
    return np.array(out)


def test_pearson_matches_scipy_and_flags_constant_genes(random_data):
    truth, pred = random_data
    ours, ref = pearson_per_gene(truth, pred), reference_pcc(truth, pred)
    assert np.isnan(ours[3]) and np.isnan(ours[5])
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-10, atol=1e-12)


def test_summary_matches_numpy(random_data):
    truth, pred = random_data
    s = summarise(truth, pred)
    ref = reference_pcc(truth, pred)
    ok = ref[~np.isnan(ref)]
    assert s["n_nan_pcc"] == 2 and s["n_genes"] == 12 and s["n_windows"] == 60
    assert s["MSE"] == pytest.approx(np.mean((truth - pred) ** 2), rel=1e-12)
    assert s["MAE"] == pytest.approx(np.mean(np.abs(truth - pred)), rel=1e-12)
    assert s["PCC@F"] == pytest.approx(np.percentile(ok, 25), rel=1e-10)
    assert s["PCC@S"] == pytest.approx(np.median(ok), rel=1e-10)
    assert s["PCC@M"] == pytest.approx(np.mean(ok), rel=1e-10)


def test_all_genes_undefined_gives_nan_not_zero():
    truth = np.ones((10, 3))
    s = summarise(truth, np.random.default_rng(0).normal(size=(10, 3)))
    assert s["n_nan_pcc"] == 3 and np.isnan(s["PCC@M"]) and np.isnan(s["PCC@F"])


def test_perfect_and_anticorrelated_predictions():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(30, 4))
    assert summarise(truth, 2 * truth + 1)["PCC@M"] == pytest.approx(1.0)
    assert summarise(truth, -truth)["PCC@M"] == pytest.approx(-1.0)


def test_per_slide_metrics_are_each_slide_alone(random_data):
    truth, pred = random_data
    slides = np.repeat(["s1", "s2", "s3"], 20)
    summary, genes = evaluate(truth, pred, slides, [f"g{i}" for i in range(12)])
    assert summary["scope"].tolist() == ["pooled", "slide", "slide", "slide"]
    for s in ("s1", "s2", "s3"):
        row = summary[summary["slide"] == s].iloc[0]
        ref = reference_pcc(truth[slides == s], pred[slides == s])
        assert row["PCC@M"] == pytest.approx(np.nanmean(ref), rel=1e-10)
        assert row["n_windows"] == 20
        got = genes[(genes["slide"] == s)]["pcc"].to_numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-10, equal_nan=True)


def test_aggregation_is_mean_and_sample_sd_over_folds_pooled_and_over_sections_per_section():
    """Pooled: one value a fold. Per section: every test section counts once, whichever fold tests it (folds 1
    and 3 test two sections, fold 2 one), so the mean is over sections, not over fold means."""
    rng = np.random.default_rng(3)
    rows = []
    for model in ("a", "b"):
        for fold in (1, 2, 3):
            vals = dict(zip(["MSE", "MAE", "PCC@F", "PCC@S", "PCC@M"], rng.uniform(size=5)))
            rows.append({"model": model, "fold": fold, "scope": "pooled", "slide": "all", "n_nan_pcc": 1, **vals})
            for s in ((f"x{fold}", f"y{fold}") if fold != 2 else ("z",)):
                rows.append({"model": model, "fold": fold, "scope": "slide", "slide": s, "n_nan_pcc": 0,
                             **dict(zip(vals, rng.uniform(size=5)))})
    df = pd.DataFrame(rows)
    agg = aggregate_folds(df)
    pooled = df[(df.scope == "pooled") & (df.model == "a")]
    row = agg[(agg.model == "a") & (agg.evaluation == "pooled")].iloc[0]
    assert row["PCC@M"] == pytest.approx(pooled["PCC@M"].mean())
    assert row["PCC@M_sd"] == pytest.approx(np.std(pooled["PCC@M"], ddof=1))
    assert row["n_nan_pcc"] == 3 and row["n_folds"] == 3
    per_section = df[(df.scope == "slide") & (df.model == "b")]["MSE"]
    row = agg[(agg.model == "b") & (agg.evaluation == "per_slide")].iloc[0]
    assert row["MSE"] == pytest.approx(per_section.mean()) and row["MSE_sd"] == pytest.approx(per_section.std(ddof=1))
    assert row["n_sections"] == 5 and row["n_folds"] == 3
    assert row["MSE"] != pytest.approx(df[(df.scope == "slide") & (df.model == "b")].groupby("fold")["MSE"].mean().mean())
    assert agg["evaluation"].tolist()[:2] == ["per_slide", "per_slide"]  # the headline first


def test_group_summary_averages_gene_pcc_per_fold():
    per_gene = pd.DataFrame({"model": "m", "fold": [1, 1, 1, 2, 2, 2], "gene": ["a", "b", "c"] * 2,
                             "pcc": [0.2, 0.4, 0.0, 0.6, 0.8, 0.1]})
    groups = pd.DataFrame({"gene": ["a", "b", "c"], "group": ["image", "image", "noise"]})
    out = summarise_groups(per_gene, groups).set_index("group")
    assert out.loc["image", "PCC@M"] == pytest.approx((0.3 + 0.7) / 2)
    assert out.loc["image", "PCC@M_sd"] == pytest.approx(np.std([0.3, 0.7], ddof=1))
    assert out.loc["noise", "n_genes"] == 1 and out.loc["noise", "PCC@M"] == pytest.approx(0.05)


def test_group_verdicts_say_per_group_who_wins_and_when_nothing_predicts():
    from histexpr.metrics import group_verdicts

    rows = []
    for group, n, scores in (("colour", 24, {"colour_ridge": 0.40, "vit": 0.33}),
                             ("morphology", 12, {"colour_ridge": 0.02, "vit": 0.21}),
                             ("noise", 24, {"colour_ridge": 0.004, "vit": 0.012})):
        for model, pcc in scores.items():
            d = {"vit": pcc - scores["colour_ridge"]}.get(model, np.nan)
            rows.append({"model": model, "protocol": "raw", "group": group, "n_genes": n, "PCC@M": pcc,
                         "PCC@M_sd": 0.01, "dPCC@M": d, "dPCC@M_lo": d - 0.05 if d == d else np.nan,
                         "dPCC@M_hi": d + 0.05 if d == d else np.nan, "margin_over": "colour_ridge"})
        rows.append({"model": "depth_oracle", "protocol": "raw", "group": group, "n_genes": n, "PCC@M": 0.9,
                     "PCC@M_sd": 0.01, "dPCC@M": 0.5, "dPCC@M_lo": 0.4, "dPCC@M_hi": 0.6, "margin_over": "colour_ridge"})
    lines = group_verdicts(pd.DataFrame(rows))
    assert lines == [
        "colour genes (24): best colour_ridge, PCC@M 0.400 ± 0.010: the floor itself; no model beats colour_ridge",
        "morphology genes (12): best vit, PCC@M 0.210 ± 0.010, +0.190 [+0.140, +0.240] over colour_ridge: "
        "beats the floor",
        "noise genes (24): best vit, PCC@M 0.012 ± 0.010: no model predicts them (every |PCC@M| < 0.05)"]
