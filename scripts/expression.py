"""Select genes and fit the min-max normalisation on one fold's training spots."""

import anndata as ad
import pandas as pd

from histexpr.data.expression import build_fold_expression
from histexpr.utils import setup_logging, write_h5ad

log = setup_logging(snakemake.log[0])

fold, protocol = int(snakemake.wildcards.fold), snakemake.wildcards.protocol
folds = pd.read_csv(snakemake.input.folds, sep="\t", dtype={"sample": str, "patient": str, "spot": str})
folds = folds[folds["fold"] == fold]
adatas, sources = {}, {}
for path in snakemake.input.samples:
    a = ad.read_h5ad(path)
    name = str(a.obs["sample"].iloc[0])
    adatas[name], sources[name] = a, a.uns.get("source", {}).get("counts", path)  # name the user's file
out = build_fold_expression(adatas, folds, snakemake.params.expression, sources, protocol=protocol)
split = out.obs["split"]
log.info("fold %d, protocol %s: %d genes x %d spots (train %d, val %d, test %d); normalisation %s", fold, protocol,
         out.n_vars, out.n_obs, (split == "train").sum(), (split == "val").sum(), (split == "test").sum(),
         out.uns["normalisation"])
write_h5ad(out, snakemake.output[0])
