"""The classification floor on one fold: logistic regression on colour and gradient histograms of each image."""

import pandas as pd

from histexpr.train.classify import run_floor
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

folds = pd.read_csv(snakemake.input.folds, sep="\t", keep_default_na=False)
history, predictions = run_floor(folds, int(snakemake.wildcards.fold), int(snakemake.wildcards.seed))
write_table(history, snakemake.output.history)
write_table(predictions, snakemake.output.predictions)
