"""Assign every tiled spot to train / val / test in each fold, and to train / val in fold 0 (all patients)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402

from histexpr.data.folds import final_fold, make_folds  # noqa: E402
from histexpr.utils import write_table  # noqa: E402

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
