"""Stratified K folds of the images (or the one fold of a sheet's split column); each fold holds out part of its
training images for model selection."""

import pandas as pd

from histexpr.data.megapixel import split_folds, stratified_folds
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

sheet = pd.read_csv(snakemake.input[0], sep="\t", dtype=str, keep_default_na=False)
p = snakemake.params.folds
if "split" in sheet:  # a fixed test set: one fold
    table = split_folds(sheet["label"].to_numpy(), sheet["split"].to_numpy(), p["val_fraction"], p["seed"])
    log.info("the sheet's split column fixes the test set: %d train, %d test images (one fold; folds.k unused)",
             (sheet["split"] == "train").sum(), (sheet["split"] == "test").sum())
    sheet = sheet.drop(columns="split")
else:
    table = stratified_folds(sheet["label"].to_numpy(), p["k"], p["val_fraction"], p["seed"])
table = table.join(sheet, on="index")
log.info("images per fold and split:\n%s", table.groupby(["fold", "split", "label"]).size().unstack().to_string())
write_table(table, snakemake.output[0])
