"""EGN Fig. 7: metrics against each swept parameter."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import pandas as pd  # noqa: E402

from histexpr.plots import sweep_figure  # noqa: E402

sweeps = pd.read_csv(snakemake.input[0], sep="\t")
log.info("sweeps:\n%s", sweeps[["base_model", "param", "value", "protocol", "evaluation", "PCC@M", "PCC@M_sd"]]
         .to_string(index=False))
sweep_figure(sweeps, snakemake.output[0])
