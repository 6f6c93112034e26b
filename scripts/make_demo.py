"""Write the embedded SYNTHETIC demo study (images, spot files, counts, sample sheet)."""

import os

from histexpr.data.demo import BANNER, generate_demo_study
from histexpr.utils import setup_logging

log = setup_logging(snakemake.log[0])

log.info(BANNER)
sheet = generate_demo_study(os.path.dirname(snakemake.output.sheet), snakemake.params.demo)
log.info("wrote %d synthetic sections to %s", len(sheet), os.path.dirname(snakemake.output.sheet))
