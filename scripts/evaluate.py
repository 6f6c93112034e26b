"""Metrics of one model on one fold's test windows: pooled, per slide, per gene."""

import anndata as ad
import numpy as np

from histexpr.errors import InputError
from histexpr.metrics import evaluate
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

pred = ad.read_h5ad(snakemake.input[0])
if "library_size" not in pred.obs:
    raise InputError(snakemake.input[0], "obs has no 'library_size' (predictions from an older version); rerun training")
summary, genes = evaluate(np.asarray(pred.layers["truth"]), np.asarray(pred.X),
                          pred.obs["sample"].astype(str).to_numpy(), pred.var_names.tolist(),
                          log_total=np.log1p(pred.obs["library_size"].to_numpy(dtype=np.float64)))
w = snakemake.wildcards
model, protocol, fold = w.model, w.protocol, int(w.fold)
for table in (summary, genes):
    table.insert(0, "fold", fold)
    table.insert(0, "protocol", protocol)
    table.insert(0, "model", model)
log.info("%s, %s targets, fold %d:\n%s", model, protocol, fold, summary.to_string(index=False))
if summary["n_nan_pcc"].iloc[0]:
    log.warning("%d gene(s) have an undefined PCC (constant truth or prediction); they are left out of PCC@*",
                summary["n_nan_pcc"].iloc[0])
write_table(summary, snakemake.output.metrics)
write_table(genes, snakemake.output.genes)
