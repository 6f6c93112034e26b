"""A spot-size sweep's table and figure: per-section PCC@M of every model at each pseudo-spot side."""

import pandas as pd

from histexpr.metrics import spot_sweep_table
from histexpr.plots import spot_sweep_figure
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

tables = {spot: pd.read_csv(path, sep="\t") for spot, path in zip(snakemake.params.spots, snakemake.input)}
table = spot_sweep_table(tables)
write_table(table, snakemake.output.table)
log.info("per-section PCC@M against pseudo-spot size (um):\n%s",
         table.pivot_table(index=["protocol", "section", "model"], columns="spot_um", values="PCC@M").round(3)
         .to_string())
spot_sweep_figure(table, snakemake.output.figure, snakemake.params.reference, snakemake.params.oracle)
