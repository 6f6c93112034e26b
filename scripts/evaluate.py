"""Metrics of one model on one fold's test windows: pooled, per slide, per gene."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402

from histexpr.metrics import evaluate  # noqa: E402
from histexpr.utils import write_table  # noqa: E402

pred = ad.read_h5ad(snakemake.input[0])
summary, genes = evaluate(np.asarray(pred.layers["truth"]), np.asarray(pred.X),
                          pred.obs["sample"].astype(str).to_numpy(), pred.var_names.tolist())
model, fold = snakemake.wildcards.model, int(snakemake.wildcards.fold)
summary.insert(0, "fold", fold)
summary.insert(0, "model", model)
genes.insert(0, "fold", fold)
genes.insert(0, "model", model)
log.info("%s fold %d:\n%s", model, fold, summary.to_string(index=False))
if summary["n_nan_pcc"].iloc[0]:
    log.warning("%d gene(s) have an undefined PCC (constant truth or prediction); they are left out of PCC@*",
                summary["n_nan_pcc"].iloc[0])
write_table(summary, snakemake.output.metrics)
write_table(genes, snakemake.output.genes)
