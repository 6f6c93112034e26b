"""Index the fold's training embeddings with FAISS and retrieve every window's exemplars."""

import time

import anndata as ad
import faiss
import numpy as np

from histexpr.retrieval import exemplar_table, find_exemplars
from histexpr.retrieval.exemplars import AUTO_FLAT_MAX, sampled_recall
from histexpr.retrieval.pools import DOMINANT_SHARE, describe_pool, pool_report
from histexpr.utils import atomic_path, progress, setup_logging, write_table

log = setup_logging(snakemake.log[0])

cfg = snakemake.params.exemplars
obs = ad.read_h5ad(snakemake.input.expression, backed="r").obs
emb = np.load(snakemake.input.embeddings)
assert len(emb) == len(obs), "embeddings and fold expression disagree"
pool_rows = np.flatnonzero(obs["split"].to_numpy() == "train")
groups = {"patient": obs["patient"].astype(str).to_numpy(), "sample": obs["sample"].astype(str).to_numpy(),
          "none": obs.index.to_numpy()}[cfg["exclude"]]
if cfg["index"] == "flat" and len(pool_rows) > AUTO_FLAT_MAX:
    log.warning("exact (flat) search over %d pool windows grows with their square; exemplars.index: ivf or auto "
                "searches approximately, keeping the exclusion exact (recall@k in this log)", len(pool_rows))
t0 = time.perf_counter()
index, local, dist, kind = find_exemplars(emb[pool_rows], emb, groups, groups[pool_rows], cfg)
log.info("%s search: %d queries against %d pool windows (d = %d), k = %d, in %.1f s", kind, len(emb), len(pool_rows),
         emb.shape[1], cfg["k"], time.perf_counter() - t0)
if kind in ("ivf", "hnsw") and cfg["recall_sample"] > 0:
    r, n = sampled_recall(emb[pool_rows], emb, groups, groups[pool_rows], local, cfg["k"], cfg["metric"],
                          cfg["recall_sample"], cfg["seed"])
    log.info("%s recall@%d against exact search on %d random queries: %.4f", kind, cfg["k"], n, r)
rows = np.where(local >= 0, pool_rows[np.where(local >= 0, local, 0)], -1)
n_have = (rows >= 0).sum(axis=1)
for split in ("train", "val", "test"):
    m = obs["split"].to_numpy() == split
    log.info("%s queries: %d; with all %d exemplars: %d; with none: %d", split, m.sum(), cfg["k"],
             (n_have[m] == cfg["k"]).sum(), (n_have[m] == 0).sum())
if (n_have == 0).any():
    log.warning("%d window(s) have no eligible exemplar: the training pool holds no window outside their %s "
                "(e.g. a single training patient). Models that read exemplars for training windows need "
                "exemplars.exclude: sample, or more patients.", int((n_have == 0).sum()), cfg["exclude"])
pool, sources = pool_report(obs, pool_rows, rows)
progress.info("exemplar pool: %s", describe_pool(pool))
for _, s in sources.iterrows():
    log.info("test section %s: %d exemplars of %d queries, %.0f%% from %s%s", s["sample"], s["exemplars"],
             s["queries"], 100 * s["top_share"], s["top_source"] or "nowhere",
             f"; {s['no_exemplar']} queries with none" if s["no_exemplar"] else "")
leaning = sources[sources["top_share"] > DOMINANT_SHARE]
if len(leaning):
    log.warning("%d of %d test section(s) draw more than half their exemplars from one section (exemplars.exclude: "
                "%s): %s; their exemplar-based predictions lean on it", len(leaning), len(sources), cfg["exclude"],
                ", ".join(f"{s} {100 * p:.0f}% from {t}" for s, p, t in
                          zip(leaning["sample"], leaning["top_share"], leaning["top_source"])))
table = exemplar_table(obs, pool_rows, local, dist)
if cfg["exclude"] == "patient":
    assert (table["query_patient"] != table["exemplar_patient"]).all()
with atomic_path(snakemake.output.arrays, suffix=".npz") as tmp:
    np.savez(tmp, index=rows, distance=dist, pool=pool_rows)
with atomic_path(snakemake.output.index, suffix=".faiss") as tmp:
    faiss.write_index(index, tmp)
write_table(table, snakemake.output.table)
