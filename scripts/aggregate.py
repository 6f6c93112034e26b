"""One table per study: mean ± sd over folds of every model's metrics, per gene and per gene group."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import pandas as pd  # noqa: E402

from histexpr.metrics import aggregate_folds, format_table, summarise_groups  # noqa: E402
from histexpr.utils import write_table  # noqa: E402

per_fold = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.metrics], ignore_index=True)
genes = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.genes], ignore_index=True)
groups = pd.read_csv(snakemake.input.groups[0], sep="\t") if snakemake.input.groups else None
table = aggregate_folds(per_fold)
log.info("metrics (mean ± sd over folds):\n%s", format_table(table))
pooled = genes[genes["scope"] == "pooled"]
per_gene = (pooled.groupby(["model", "gene"], sort=False)
            .agg(pcc=("pcc", "mean"), pcc_sd=("pcc", "std"), mse=("mse", "mean"), n_folds=("fold", "nunique"),
                 n_folds_nan=("pcc", lambda s: int(s.isna().sum())))
            .reset_index())
by_group = summarise_groups(pooled, groups)
log.info("PCC by gene group:\n%s", by_group.to_string(index=False))
write_table(table, snakemake.output.metrics)
write_table(per_gene, snakemake.output.genes)
write_table(by_group, snakemake.output.by_group)
