"""Accuracy of every setting (mean ± sd over folds and seeds), per-fold accuracies and the confusion matrix."""

from histexpr.classification import accuracy_tables, format_accuracy, load_runs
from histexpr.plots import confusion_figure
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

runs = load_runs(snakemake.input.predictions, snakemake.input.histories)
per_fold, table, confusion = accuracy_tables(runs)
log.info("accuracy (mean ± sd over folds x seeds):\n%s", format_accuracy(table).to_string(index=False))
write_table(per_fold, snakemake.output.per_fold)
write_table(table, snakemake.output.accuracy)
write_table(confusion, snakemake.output.confusion)
confusion_figure(confusion, snakemake.output.figure)
