"""One table per study: every model under every target protocol, mean ± sd over folds, with its margin
over the reference model; per-gene and per-gene-group tables."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import pandas as pd  # noqa: E402

from histexpr.metrics import aggregate_folds, format_table, gene_table, load_predictions, summarise_groups  # noqa: E402
from histexpr.metrics import ablation_table, margins_over_reference, sweep_table  # noqa: E402
from histexpr.utils import write_table  # noqa: E402

inp, params = snakemake.input, snakemake.params
per_fold = pd.concat([pd.read_csv(p, sep="\t") for p in inp.metrics], ignore_index=True)
genes = pd.concat([pd.read_csv(p, sep="\t") for p in inp.genes], ignore_index=True)
groups = pd.read_csv(inp.groups[0], sep="\t") if inp.groups else None
table = aggregate_folds(per_fold)
if params.reference:
    log.info("margins over %s: %d paired bootstrap replicates over windows", params.reference, params.bootstrap)
    margins = margins_over_reference(load_predictions(inp.predictions), params.reference, params.bootstrap,
                                     params.seed)
    table = table.merge(margins.drop(columns="n_boot"), on=["model", "protocol", "evaluation"], how="left")
    table["margin_over"] = params.reference
log.info("metrics (mean ± sd over folds):\n%s", format_table(table))
pooled = genes[genes["scope"] == "pooled"]
by_group = summarise_groups(pooled, groups)
log.info("PCC by gene group:\n%s", by_group.to_string(index=False))
write_table(table, snakemake.output.metrics)
write_table(gene_table(pooled), snakemake.output.genes)
write_table(by_group, snakemake.output.by_group)
ablations, sweeps = ablation_table(table), sweep_table(table)
if len(ablations):
    log.info("EGN ablations (Table 4):\n%s", ablations[["setting", "protocol", "evaluation", "MSE", "MAE", "PCC@M"]]
             .to_string(index=False))
write_table(ablations, snakemake.output.ablations)
write_table(sweeps, snakemake.output.sweeps)
