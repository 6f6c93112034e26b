"""Accuracy of every setting (the mean over test images, draws and seeds, with its spread over each), the paired
margins over uniform sampling and the floor, per-run accuracies and the confusion matrix."""

from histexpr.classification import accuracy_tables, accuracy_verdict, format_accuracy, load_runs
from histexpr.plots import confusion_figure
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

runs = load_runs(snakemake.input.predictions, snakemake.input.histories)
per_fold, table, confusion = accuracy_tables(runs)
log.info("accuracy:\n%s", format_accuracy(table).to_string(index=False))
for line in accuracy_verdict(table):
    log.info("%s", line)
write_table(per_fold, snakemake.output.per_fold)
write_table(table, snakemake.output.accuracy)
write_table(confusion, snakemake.output.confusion)
confusion_figure(confusion, snakemake.output.figure)
