"""Write the embedded SYNTHETIC demo study (images, spot files, counts, sample sheet)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import os  # noqa: E402

from histexpr.data.demo import BANNER, generate_demo_study  # noqa: E402

log.info(BANNER)
sheet = generate_demo_study(os.path.dirname(snakemake.output.sheet), snakemake.params.demo)
log.info("wrote %d synthetic sections to %s", len(sheet), os.path.dirname(snakemake.output.sheet))
