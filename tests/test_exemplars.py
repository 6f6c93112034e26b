"""Exemplars are the true nearest neighbours among other patients' training windows."""

import numpy as np
import pandas as pd
import pytest

from histexpr.retrieval import build_index, exemplar_table, find_exemplars, recall_at_k, search_exemplars, torch_search
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


def clustered(n, d=32, n_groups=6, seed=0):
    """Embeddings with structure (a low-rank mixture), the case approximate indexes are built for."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, 8)) * 3
    latent = centres[rng.integers(0, 40, n)] + rng.normal(size=(n, 8))
    x = latent @ rng.normal(size=(8, d)) + 0.3 * rng.normal(size=(n, d))
    return x.astype(np.float32), np.array([f"p{i}" for i in range(n_groups)])[rng.integers(0, n_groups, n)]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_approximate_indexes_keep_the_exclusion_exact_and_find_most_true_neighbours(kind, metric):
    import faiss

    emb, patient = clustered(4000)
    pool = np.flatnonzero(np.random.default_rng(1).uniform(size=len(emb)) < 0.7)
    index = build_index(emb[pool], metric, kind, nprobe=16)
    assert index.ntotal == len(pool)
    assert isinstance(index, faiss.IndexIVF if kind == "ivf" else faiss.IndexHNSW)
    idx, dist = search_exemplars(index, emb, patient, patient[pool], 9, metric)
    assert (idx >= 0).all()
    assert (patient[pool][idx] != patient[:, None]).all()  # never the query's own patient
    assert (np.diff(dist, axis=1) >= -1e-5).all()  # nearest first
    exact, exact_dist = exact_search(emb[pool], emb, patient, patient[pool], 9, metric)
    assert recall_at_k(idx, exact) >= 0.95
    # where a neighbour is missed, the one found instead is no nearer than the true one (distances are real)
    np.testing.assert_array_less(exact_dist[:, -1] - 1e-4, dist[:, -1] + 1e-9)


def test_approximate_search_never_leaves_the_training_pool_in_the_workflow_sense():
    """Test windows are queries only: with ids = pool rows, no returned id can be a test row."""
    emb, patient = clustered(3000, n_groups=5, seed=2)
    split = np.where(patient == "p0", "test", "train")
    pool = np.flatnonzero(split == "train")
    index, idx, _, kind = find_exemplars(emb[pool], emb, patient, patient[pool],
                                         {"k": 9, "metric": "l2", "index": "ivf", "nprobe": 8}, device="cpu")
    assert kind == "ivf"
    rows = pool[idx[idx >= 0]]
    assert (split[rows] == "train").all() and (patient[rows] != "p0").all()


@pytest.mark.parametrize("metric", ["l2", "l1", "cosine"])
def test_torch_search_is_exact(metric):
    emb, patient = clustered(700, d=12, seed=3)
    pool = np.arange(0, 700, 2)
    idx, dist = torch_search(emb[pool], emb, patient, patient[pool], 5, metric, device="cpu", chunk=100)
    ref, ref_dist = exact_search(emb[pool], emb, patient, patient[pool], 5, metric)
    assert recall_at_k(idx, ref) == 1.0
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-3, atol=1e-3)


def test_auto_index_by_pool_size_and_device():
    from histexpr.retrieval.exemplars import AUTO_FLAT_MAX, resolve_index

    assert resolve_index("auto", AUTO_FLAT_MAX, cuda=False) == "flat"
    assert resolve_index("auto", AUTO_FLAT_MAX + 1, cuda=False) == "hnsw"
    assert resolve_index("auto", 10, cuda=True) == "torch"
    assert resolve_index("hnsw", 10, cuda=True) == "hnsw"
    with pytest.raises(ValueError, match="unknown exemplar index"):
        resolve_index("annoy", 10)


def test_a_saved_ivf_index_searches_the_same_when_read_back(tmp_path):
    import faiss

    emb, patient = clustered(2000, seed=4)
    index = build_index(emb, "l2", "ivf", nprobe=1)
    a, _ = search_exemplars(index, emb[:200], patient[:200], patient, 9)
    exact, _ = exact_search(emb, emb[:200], patient[:200], patient, 9)
    assert recall_at_k(a, exact) < 0.99  # one cell of 51 scanned: approximate, and nprobe is kept
    faiss.write_index(index, str(tmp_path / "x.faiss"))
    b, _ = search_exemplars(faiss.read_index(str(tmp_path / "x.faiss")), emb[:200], patient[:200], patient, 9)
    np.testing.assert_array_equal(a, b)
