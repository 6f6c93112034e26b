"""Assign every tiled spot to train / val / test in each fold, and to train / val in fold 0 (all patients)."""

import anndata as ad
import pandas as pd

from histexpr.data.folds import final_fold, make_folds
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str, keep_default_na=False)
spots = pd.concat([ad.read_h5ad(p, backed="r").obs.assign(obs_name=lambda d: d.index)
                   for p in snakemake.input.samples], ignore_index=True)
# Folds 1..k cross-validate; fold 0 trains on every patient for predict (never evaluated).
table = pd.concat([make_folds(sheet, spots, snakemake.params.folds), final_fold(sheet, spots, snakemake.params.folds)],
                  ignore_index=True)
summary = table.groupby(["fold", "split"]).agg(patients=("patient", lambda s: ",".join(sorted(set(s)))),
                                               samples=("sample", lambda s: ",".join(sorted(set(s)))),
                                               spots=("spot", "size"))
log.info("fold table:\n%s", summary.to_string())
write_table(table, snakemake.output[0])
