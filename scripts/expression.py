"""Select genes and fit the min-max normalisation on one fold's training spots."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402

from histexpr.data.expression import build_fold_expression  # noqa: E402
from histexpr.utils import write_h5ad  # noqa: E402

fold, protocol = int(snakemake.wildcards.fold), snakemake.wildcards.protocol
folds = pd.read_csv(snakemake.input.folds, sep="\t", dtype={"sample": str, "patient": str, "spot": str})
folds = folds[folds["fold"] == fold]
adatas, sources = {}, {}
for path in snakemake.input.samples:
    a = ad.read_h5ad(path)
    name = str(a.obs["sample"].iloc[0])
    adatas[name], sources[name] = a, a.uns.get("source", {}).get("counts", path)  # name the user's file
out = build_fold_expression(adatas, folds, snakemake.params.expression, sources, protocol=protocol)
log.info("fold %d, protocol %s: %d genes x %d spots (train %d, val %d, test %d); normalisation %s", fold, protocol, out.n_vars, out.n_obs,
         (out.obs["split"] == "train").sum(), (out.obs["split"] == "val").sum(), (out.obs["split"] == "test").sum(),
         out.uns["normalisation"])
write_h5ad(out, snakemake.output[0])
