"""Index the fold's training embeddings with FAISS and retrieve every window's exemplars."""

import anndata as ad
import faiss
import numpy as np

from histexpr.retrieval import build_index, exemplar_table, search_exemplars
from histexpr.utils import atomic_path, setup_logging, write_table

log = setup_logging(snakemake.log[0])

cfg = snakemake.params.exemplars
obs = ad.read_h5ad(snakemake.input.expression, backed="r").obs
emb = np.load(snakemake.input.embeddings)
assert len(emb) == len(obs), "embeddings and fold expression disagree"
pool_rows = np.flatnonzero(obs["split"].to_numpy() == "train")
groups = {"patient": obs["patient"].astype(str).to_numpy(), "sample": obs["sample"].astype(str).to_numpy(),
          "none": obs.index.to_numpy()}[cfg["exclude"]]
index = build_index(emb[pool_rows], cfg["metric"])
local, dist = search_exemplars(index, emb, groups, groups[pool_rows], cfg["k"], cfg["metric"])
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
table = exemplar_table(obs, pool_rows, local, dist)
if cfg["exclude"] == "patient":
    assert (table["query_patient"] != table["exemplar_patient"]).all()
with atomic_path(snakemake.output.arrays, suffix=".npz") as tmp:
    np.savez(tmp, index=rows, distance=dist, pool=pool_rows)
with atomic_path(snakemake.output.index, suffix=".faiss") as tmp:
    faiss.write_index(index, tmp)
write_table(table, snakemake.output.table)
