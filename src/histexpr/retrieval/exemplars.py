"""Exemplars: for every window, its k nearest training windows from other patients.

A FAISS index holds the embeddings of the fold's ``train`` windows. Each query
is searched with an ID selector that admits only windows of other patients
(``exclude="patient"``, the EGN paper's rule), of other sections (``"sample"``)
or anything but itself (``"none"``), so an exemplar never comes from the
query's own patient and the test patients are never in the pool. Distances:
``l2`` (Euclidean), ``l1``, ``cosine`` (1 - cos).

Index kinds (``exemplars.index``):

* ``flat``: exact; cost grows with queries x pool (N^2 for a study).
* ``ivf``: inverted lists over ``nlist`` k-means cells, ``nprobe`` of them
  scanned per query (approximate: a true neighbour in an unscanned cell is
  missed).
* ``hnsw``: a navigable small-world graph, ``ef_search`` candidates per query.
* ``torch``: exact brute force in PyTorch, on the GPU when there is one
  (FAISS here is the CPU build; on a GPU exact search is faster than any
  approximate CPU index).
* ``auto``: ``torch`` on a GPU, else ``flat`` up to ``AUTO_FLAT_MAX`` pool
  windows and ``hnsw`` above (on 2 cores, 300k windows, d = 512: hnsw 123 s
  at recall@9 0.999, ivf 160 s at 0.994, exact 84 min; benchmarks/scale.py).

The exclusion rule is the same selector for every FAISS kind, applied inside
the search, so it stays exact: only *which* eligible neighbours are found is
approximate, never *whether* an excluded window can appear.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

METRICS = ("l2", "l1", "cosine")
INDEXES = ("flat", "ivf", "hnsw", "torch", "auto")
AUTO_FLAT_MAX = 50_000  # pool windows; exact flat search of 50k x 50k takes about 2.5 min on 2 cores


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def resolve_index(kind: str, n_pool: int, cuda: bool | None = None) -> str:
    """The concrete index kind for ``kind`` (one of :data:`INDEXES`) and a pool of ``n_pool`` windows."""
    if kind not in INDEXES:
        raise ValueError(f"unknown exemplar index {kind!r}; choose one of {', '.join(INDEXES)}")
    if kind != "auto":
        return kind
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return "torch" if cuda else ("flat" if n_pool <= AUTO_FLAT_MAX else "hnsw")


def default_nlist(n_pool: int) -> int:
    """IVF cells: about 4 sqrt(n), with at least 39 training points a cell (FAISS's own minimum)."""
    return int(max(1, min(round(4 * np.sqrt(n_pool)), n_pool // 39)))


def build_index(pool: np.ndarray, metric: str = "l2", kind: str = "flat", nlist: int | None = None,
                nprobe: int = 32, hnsw_m: int = 32, ef_search: int = 128, seed: int = 0):
    """FAISS index over ``pool`` (``(n, d)``) whose ids are row numbers.

    ``kind``: ``flat`` (exact), ``ivf`` or ``hnsw`` (approximate); ``torch`` builds a flat index (the one
    saved for prediction; the search itself runs in :func:`torch_search`). ``nprobe`` / ``ef_search`` are
    stored in the index, so a saved index searches the same way when read back.
    """
    import faiss

    if metric not in METRICS:
        raise ValueError(f"unknown exemplar metric {metric!r}; choose one of {', '.join(METRICS)}")
    x = _prepare(pool, metric)
    d = x.shape[1]
    code = {"l2": faiss.METRIC_L2, "l1": faiss.METRIC_L1, "cosine": faiss.METRIC_INNER_PRODUCT}[metric]
    if kind in ("flat", "torch"):
        index = {"l2": lambda: faiss.IndexFlatL2(d), "l1": lambda: faiss.IndexFlat(d, faiss.METRIC_L1),
                 "cosine": lambda: faiss.IndexFlatIP(d)}[metric]()
    elif kind == "ivf":
        nlist = min(nlist or default_nlist(len(x)), max(1, len(x)))
        index = faiss.IndexIVFFlat(faiss.IndexFlat(d, code), d, nlist, code)
        index.cp.seed = seed
        index.train(x)
        index.nprobe = min(nprobe, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, code)
        index.hnsw.efSearch = ef_search
    else:
        raise ValueError(f"unknown exemplar index {kind!r}; choose one of flat, ivf, hnsw, torch")
    index.add(x)
    return index


def _search_params(index, sel):
    import faiss

    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=sel, nprobe=index.nprobe)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=sel, efSearch=index.hnsw.efSearch)
    return faiss.SearchParameters(sel=sel)


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
            mask = np.zeros(index.ntotal, dtype=bool)
            mask[ok] = True
            bits = np.packbits(mask, bitorder="little")  # one bit a pool row: the cheapest test FAISS has
            sel = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bits))
            D, I = index.search(q[qrows], k, params=_search_params(index, sel))
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
    else:  # the (queries x pool) distance block: at most 2^26 entries (512 MB)
        chunk = max(1, min(chunk, 2**26 // max(1, p.shape[0])))
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


def torch_search(pool: np.ndarray, queries: np.ndarray, query_groups: np.ndarray, pool_groups: np.ndarray,
                 k: int, metric: str = "l2", device=None, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact :func:`search_exemplars` by brute force in PyTorch on ``device`` (the GPU when there is one).

    Distances in float32 on the device; a query chunk of ``chunk`` rows against the whole pool at a time.
    """
    import torch

    if metric not in METRICS:
        raise ValueError(f"unknown exemplar metric {metric!r}; choose one of {', '.join(METRICS)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    codes, inv = np.unique(np.concatenate([np.asarray(query_groups).astype(str),
                                           np.asarray(pool_groups).astype(str)]), return_inverse=True)
    qg = torch.as_tensor(inv[:len(queries)], device=device)
    pg = torch.as_tensor(inv[len(queries):], device=device)
    p = torch.as_tensor(_prepare(pool, metric), device=device)
    q_all = _prepare(queries, metric)
    kk = min(k, len(pool))
    idx = np.full((len(q_all), k), -1, dtype=np.int64)
    dist = np.full((len(q_all), k), np.nan)
    if metric == "l1":  # torch.cdist materialises (chunk, pool, d) per block only for p != 2: keep it small
        chunk = max(1, min(chunk, int(2**28 // max(1, p.shape[0] * p.shape[1]))))
    p_sq = (p * p).sum(1)
    for start in range(0, len(q_all), chunk):
        q = torch.as_tensor(q_all[start:start + chunk], device=device)
        if metric == "l2":
            d = ((q * q).sum(1)[:, None] + p_sq[None] - 2 * q @ p.T).clamp_min_(0).sqrt_()
        elif metric == "l1":
            d = torch.cdist(q, p, p=1)
        else:
            d = 1.0 - q @ p.T
        d.masked_fill_(qg[start:start + chunk, None] == pg[None, :], float("inf"))
        dd, order = torch.topk(d, kk, dim=1, largest=False, sorted=True)
        dd, order = dd.double().cpu().numpy(), order.cpu().numpy()
        ok = np.isfinite(dd)
        idx[start:start + len(q), :kk] = np.where(ok, order, -1)
        dist[start:start + len(q), :kk] = np.where(ok, dd, np.nan)
    return idx, dist


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact neighbours (rows of ``exact``, -1 = none) that ``found`` has too."""
    hits = total = 0
    for f, e in zip(found, exact):
        e = e[e >= 0]
        hits += np.isin(e, f[f >= 0]).sum()
        total += len(e)
    return float(hits / total) if total else 1.0


def find_exemplars(pool: np.ndarray, queries: np.ndarray, query_groups: np.ndarray, pool_groups: np.ndarray,
                   cfg: dict, device=None):
    """The workflow's search: ``cfg`` is ``exemplars`` of the config (``k``, ``metric``, ``index``, ...).

    Returns ``(index, idx, dist, kind)``: the FAISS index to save (flat for ``torch``), the neighbours and
    distances of :func:`search_exemplars`, and the index kind that ran.
    """
    import torch

    cuda = (device is not None and torch.device(device).type == "cuda") or (
        device is None and torch.cuda.is_available())
    kind = resolve_index(cfg.get("index", "flat"), len(pool), cuda)
    index = build_index(pool, cfg["metric"], kind, cfg.get("nlist"), cfg.get("nprobe", 32), cfg.get("hnsw_m", 32),
                        cfg.get("ef_search", 128), cfg.get("seed", 0))
    if kind == "torch":
        idx, dist = torch_search(pool, queries, query_groups, pool_groups, cfg["k"], cfg["metric"], device)
    else:
        idx, dist = search_exemplars(index, queries, query_groups, pool_groups, cfg["k"], cfg["metric"])
    return index, idx, dist, kind


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


def sampled_recall(pool: np.ndarray, queries: np.ndarray, query_groups: np.ndarray, pool_groups: np.ndarray,
                   found: np.ndarray, k: int, metric: str, n: int = 1000, seed: int = 0) -> tuple[float, int]:
    """Recall@k of ``found`` against exact search on ``n`` seeded random queries: ``(recall, n used)``."""
    rows = np.random.default_rng(seed).permutation(len(queries))[:n]
    exact, _ = exact_search(pool, queries[rows], np.asarray(query_groups)[rows], pool_groups, k, metric)
    return recall_at_k(found[rows], exact), len(rows)
