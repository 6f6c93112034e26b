"""The classification study's image sheet: one row per image with its class, checked before training."""

import os

from histexpr.data.megapixel import build_image_sheet, read_image_sheet
from histexpr.io.audit import audit_image_sheet
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

source = snakemake.input[0]
sheet = build_image_sheet(source) if os.path.isdir(source) else read_image_sheet(source)
audit_image_sheet(sheet, source)  # an image listed twice (by content) could be trained and tested
log.info("audit: every image is listed once (by content)")
log.info("%d images in %d classes: %s", len(sheet), sheet["label"].nunique(),
         ", ".join(f"{c} {n}" for c, n in sheet["label"].value_counts().sort_index().items()))
write_table(sheet, snakemake.output[0])
