"""Exemplars: for every window, its k nearest training windows from other patients.

A FAISS flat (exact) index holds the embeddings of the fold's ``train``
windows. Each query is searched with an ID selector that admits only windows
of other patients (``exclude="patient"``, the EGN paper's rule), of other
sections (``"sample"``) or anything but itself (``"none"``), so an exemplar
never comes from the query's own patient and the test patients are never in
the pool. Distances: ``l2`` (Euclidean), ``l1``, ``cosine`` (1 - cos).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

METRICS = ("l2", "l1", "cosine")


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def build_index(pool: np.ndarray, metric: str = "l2"):
    """Exact FAISS index over ``pool`` (``(n, d)``) whose ids are row numbers."""
    import faiss

    if metric not in METRICS:
        raise ValueError(f"unknown exemplar metric {metric!r}; choose one of {', '.join(METRICS)}")
    d = pool.shape[1]
    index = {"l2": lambda: faiss.IndexFlatL2(d), "l1": lambda: faiss.IndexFlat(d, faiss.METRIC_L1),
             "cosine": lambda: faiss.IndexFlatIP(d)}[metric]()
    index.add(_prepare(pool, metric))
    return index


def search_exemplars(index, queries: np.ndarray, query_groups: np.ndarray, pool_groups: np.ndarray,
                     k: int, metric: str = "l2", query_ids: np.ndarray | None = None,
                     pool_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``k`` pool rows for each query, never from the query's own group.

    Args:
        index: from :func:`build_index` over the pool.
        queries: ``(q, d)`` embeddings.
        query_groups, pool_groups: the group (patient, sample) of each row;
            pool rows of the query's group are excluded.
        query_ids, pool_ids: optional global ids; a pool row with the query's
            own id is excluded too (matters for ``exclude="none"``).

    Returns:
        ``(q, k)`` pool row numbers (-1 where fewer than k are eligible) and
        ``(q, k)`` distances (NaN there), nearest first.
    """
    import faiss

    q = _prepare(queries, metric)
    idx = np.full((len(q), k), -1, dtype=np.int64)
    dist = np.full((len(q), k), np.nan, dtype=np.float64)
    pool_groups = np.asarray(pool_groups).astype(str)
    query_groups = np.asarray(query_groups).astype(str)
    for g in np.unique(query_groups):
        rows = np.flatnonzero(query_groups == g)
        allowed = np.flatnonzero(pool_groups != g)
        if query_ids is None or pool_ids is None:
            batches = [(rows, allowed)]
        else:  # one query at a time only where its own id sits in the pool
            own = np.isin(np.asarray(query_ids)[rows], np.asarray(pool_ids)[allowed])
            batches = [(rows[~own], allowed)] + [
                (np.array([r]), allowed[np.asarray(pool_ids)[allowed] != query_ids[r]]) for r in rows[own]]
        for qrows, ok in batches:
            if len(qrows) == 0 or len(ok) == 0:
                continue
            sel = faiss.IDSelectorBatch(ok.astype(np.int64))
            D, I = index.search(q[qrows], k, params=faiss.SearchParameters(sel=sel))
            valid = I >= 0
            if metric == "l2":
                D = np.sqrt(np.maximum(D, 0))
            elif metric == "cosine":
                D = 1.0 - D
            idx[qrows] = np.where(valid, I, -1)
            dist[qrows] = np.where(valid, D, np.nan)
    return idx, dist


def exact_search(pool: np.ndarray, queries: np.ndarray, query_groups: np.ndarray, pool_groups: np.ndarray,
                 k: int, metric: str = "l2", chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force :func:`search_exemplars` (same arguments and returns, no FAISS, no ``*_ids``)."""
    if metric not in METRICS:
        raise ValueError(f"unknown exemplar metric {metric!r}; choose one of {', '.join(METRICS)}")
    p, q = _prepare(pool, metric).astype(np.float64), _prepare(queries, metric).astype(np.float64)
    pool_groups = np.asarray(pool_groups).astype(str)
    query_groups = np.asarray(query_groups).astype(str)
    idx = np.full((len(q), k), -1, dtype=np.int64)
    dist = np.full((len(q), k), np.nan)
    if metric == "l1":  # the (queries x pool x d) difference tensor: keep it near 64 MB
        chunk = max(1, min(chunk, int(8e6 // max(1, p.shape[0] * p.shape[1]))))
    for start in range(0, len(q), chunk):
        qq = q[start:start + chunk]
        if metric == "l2":
            d = np.sqrt(np.maximum((qq**2).sum(1)[:, None] + (p**2).sum(1)[None] - 2 * qq @ p.T, 0))
        elif metric == "l1":
            d = np.abs(qq[:, None, :] - p[None]).sum(-1)
        else:
            d = 1.0 - qq @ p.T
        d[query_groups[start:start + chunk, None] == pool_groups[None, :]] = np.inf
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        dd = np.take_along_axis(d, order, 1)
        ok = np.isfinite(dd)
        idx[start:start + chunk, :order.shape[1]] = np.where(ok, order, -1)
        dist[start:start + chunk, :order.shape[1]] = np.where(ok, dd, np.nan)
    return idx, dist


def exemplar_table(obs: pd.DataFrame, pool_rows: np.ndarray, idx: np.ndarray, dist: np.ndarray) -> pd.DataFrame:
    """Long table: one row per (query, rank) with both windows' ids, patients and the distance.

    Args:
        obs: the fold's obs (``split``, ``patient``, ``sample``), index = obs names.
        pool_rows: obs row number of each pool row.
        idx, dist: from :func:`search_exemplars`, queries = all obs rows.
    """
    n, k = idx.shape
    q = np.repeat(np.arange(n), k)
    r = idx.ravel()
    valid = r >= 0
    ex = np.where(valid, pool_rows[np.where(valid, r, 0)], -1)
    names = obs.index.to_numpy()
    return pd.DataFrame({
        "query": names[q][valid],
        "query_split": obs["split"].to_numpy()[q][valid],
        "query_patient": obs["patient"].to_numpy()[q][valid],
        "rank": np.tile(np.arange(1, k + 1), n)[valid],
        "exemplar": names[ex[valid]],
        "exemplar_patient": obs["patient"].to_numpy()[ex[valid]],
        "exemplar_sample": obs["sample"].to_numpy()[ex[valid]],
        "distance": dist.ravel()[valid],
    })
