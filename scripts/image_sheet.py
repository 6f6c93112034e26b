"""The classification study's image sheet: one row per image with its class, checked before training."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import os  # noqa: E402

from histexpr.data.megapixel import build_image_sheet, read_image_sheet  # noqa: E402
from histexpr.utils import write_table  # noqa: E402

source = snakemake.input[0]
sheet = build_image_sheet(source) if os.path.isdir(source) else read_image_sheet(source)
log.info("%d images in %d classes: %s", len(sheet), sheet["label"].nunique(),
         ", ".join(f"{c} {n}" for c, n in sheet["label"].value_counts().sort_index().items()))
write_table(sheet, snakemake.output[0])
