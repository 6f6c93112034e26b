"""Exemplars are the true nearest neighbours among other patients' training windows."""

import numpy as np
import pandas as pd
import pytest

from histexpr.retrieval import build_index, exemplar_table, search_exemplars
from histexpr.retrieval.exemplars import exact_search


@pytest.mark.parametrize("metric", ["l2", "l1", "cosine"])
def test_exemplars_match_brute_force_and_skip_own_patient(metric):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(120, 6)).astype(np.float32)
    patient = np.array(list("ABCD"))[rng.integers(0, 4, 120)]
    pool = np.flatnonzero(rng.uniform(size=120) < 0.6)
    index = build_index(emb[pool], metric)
    idx, dist = search_exemplars(index, emb, patient, patient[pool], 5, metric)
    if metric == "l2":
        d = np.linalg.norm(emb[:, None] - emb[None, pool], axis=-1)
    elif metric == "l1":
        d = np.abs(emb[:, None] - emb[None, pool]).sum(-1)
    else:
        u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        d = 1 - u @ u[pool].T
    d[patient[:, None] == patient[pool][None, :]] = np.inf
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(dist, np.sort(d, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    assert (patient[pool][idx] != patient[:, None]).all()
    # the NumPy fallback (no FAISS) agrees
    idx2, dist2 = exact_search(emb[pool], emb, patient, patient[pool], 5, metric)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_allclose(dist2, dist, rtol=1e-4, atol=1e-4)


def test_missing_exemplars_are_marked_and_table_is_long():
    emb = np.arange(12, dtype=np.float32).reshape(6, 2)
    patient = np.array(["A", "A", "A", "A", "B", "B"])
    pool = np.array([0, 1, 4])
    idx, dist = search_exemplars(build_index(emb[pool]), emb, patient, patient[pool], 3)
    assert (idx[:4, 1:] == -1).all() and np.isnan(dist[:4, 1:]).all()  # only one window outside patient A
    assert (idx[4:, :2] >= 0).all() and (idx[4:, 2] == -1).all()
    obs = pd.DataFrame({"split": "train", "patient": patient, "sample": patient}, index=[f"w{i}" for i in range(6)])
    table = exemplar_table(obs, pool, idx, dist)
    assert len(table) == 4 * 1 + 2 * 2
    assert (table["query_patient"] != table["exemplar_patient"]).all()


def test_exclude_none_still_skips_the_query_itself():
    emb = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    ids = np.arange(10).astype(str)
    idx, _ = search_exemplars(build_index(emb), emb, ids, ids, 2, query_ids=ids, pool_ids=ids)
    assert (idx != np.arange(10)[:, None]).all()
