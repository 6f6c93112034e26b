"""Gene selection and min-max are fitted on the fold's training spots only."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from histexpr.data.expression import build_fold_expression


def make_samples(seed=0):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(8)]
    adatas, rows = {}, []
    for s, p in [("s1", "A"), ("s2", "A"), ("s3", "B"), ("s4", "C")]:
        n = 15
        X = rng.poisson(rng.uniform(1, 20, len(genes)), (n, len(genes))).astype(np.float32)
        a = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(index=[f"{s}_{i}" for i in range(n)]),
                       var=pd.DataFrame(index=genes))
        a.obsm["spatial"] = rng.uniform(0, 100, (n, 2))
        adatas[s] = a
        split = {"s1": "train", "s2": "val", "s3": "train", "s4": "test"}[s]
        rows += [{"fold": 1, "split": split, "patient": p, "sample": s, "spot": f"{i}", "obs_name": f"{s}_{i}"}
                 for i in range(n)]
    return adatas, pd.DataFrame(rows)


def test_minmax_fitted_on_training_spots_only():
    adatas, folds = make_samples()
    out = build_fold_expression(adatas, folds, {"top_n": 5, "log1p": True})
    train = out.obs["split"] == "train"
    logged = np.log1p(out.layers["counts"])
    np.testing.assert_allclose(out.var["min"], logged[train.to_numpy()].min(axis=0))
    np.testing.assert_allclose(out.var["max"], logged[train.to_numpy()].max(axis=0))
    assert out.X[train.to_numpy()].min() == pytest.approx(0) and out.X[train.to_numpy()].max() == pytest.approx(1)
    # changing the test and validation counts changes nothing about the fitted statistics or genes
    adatas2, _ = make_samples()
    adatas2["s4"].X = adatas2["s4"].X * 50
    adatas2["s2"].X = adatas2["s2"].X * 0
    out2 = build_fold_expression(adatas2, folds, {"top_n": 5, "log1p": True})
    assert out2.var_names.tolist() == out.var_names.tolist()
    np.testing.assert_allclose(out2.var[["min", "max"]], out.var[["min", "max"]])
    assert out2.X[(out2.obs["split"] == "test").to_numpy()].max() > 1  # not clipped


def test_undo_minmax_gives_expression_units_back_and_names_them():
    from histexpr.data.expression import expression_unit, undo_minmax

    adatas, folds = make_samples()
    for protocol, cfg, unit in (("raw", {"top_n": 5, "log1p": True}, "log(1 + count)"),
                                ("library_size", {"top_n": 5, "log1p": True, "target_sum": 1e4},
                                 "log(1 + count per 10,000)")):
        out = build_fold_expression(adatas, folds, cfg, protocol=protocol)
        lib = out.obs["library_size"].to_numpy()[:, None] if protocol == "library_size" else None
        expected = np.log1p(out.layers["counts"] / lib * 1e4) if lib is not None else np.log1p(out.layers["counts"])
        np.testing.assert_allclose(undo_minmax(out.X, out.var), expected, rtol=1e-5, atol=1e-5)  # test spots too
        assert expression_unit(out.uns["normalisation"]) == unit
    assert expression_unit({"protocol": "raw", "log1p": False}) == "count"


def test_top_n_by_mean_training_count():
    adatas, folds = make_samples()
    out = build_fold_expression(adatas, folds, {"top_n": 3, "log1p": True})
    train_names = folds.loc[folds.split == "train", "obs_name"]
    means = pd.concat([pd.DataFrame(a.X.toarray(), index=a.obs_names, columns=a.var_names) for a in adatas.values()]
                      ).loc[train_names].mean()
    assert set(out.var_names) == set(means.sort_values(ascending=False).index[:3])


def test_library_size_protocol():
    adatas, folds = make_samples()
    raw = build_fold_expression(adatas, folds, {"top_n": 5, "log1p": True})
    out = build_fold_expression(adatas, folds, {"top_n": 5, "log1p": True, "target_sum": 1e4}, protocol="library_size")
    assert out.var_names.tolist() == raw.var_names.tolist()  # same genes under both protocols
    assert out.uns["normalisation"]["protocol"] == "library_size" and raw.uns["normalisation"]["target_sum"] == 0
    lib = np.concatenate([np.asarray(a.X.sum(axis=1)).ravel() for a in adatas.values()])
    values = np.log1p(out.layers["counts"] / lib[:, None] * 1e4)
    train = (out.obs["split"] == "train").to_numpy()
    np.testing.assert_allclose(out.var["min"], values[train].min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out.var["max"], values[train].max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out.obs["library_size"], lib)
    with pytest.raises(ValueError, match="unknown target protocol"):
        build_fold_expression(adatas, folds, {"top_n": 5}, protocol="cpm")
