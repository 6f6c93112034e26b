"""EGN Fig. 7: metrics against each swept parameter."""

import pandas as pd

from histexpr.plots import sweep_figure
from histexpr.utils import setup_logging

log = setup_logging(snakemake.log[0])

sweeps = pd.read_csv(snakemake.input[0], sep="\t")
log.info("sweeps:\n%s", sweeps[["base_model", "param", "value", "protocol", "evaluation", "PCC@M", "PCC@M_sd"]]
         .to_string(index=False))
sweep_figure(sweeps, snakemake.output[0])
