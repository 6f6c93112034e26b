"""Validate the sample sheet (or build it from a known folder layout) and check every file opens."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

from histexpr.config import validate_records  # noqa: E402
from histexpr.io.image import open_image  # noqa: E402
from histexpr.io.sheet import build_her2st_sheet, load_sample_sheet  # noqa: E402
from histexpr.io.visium import visium_paths  # noqa: E402
from histexpr.utils import write_table  # noqa: E402

source, layout, schema = snakemake.input[0], snakemake.params.layout, snakemake.params.schema
if layout == "sheet":
    sheet = load_sample_sheet(source, schema=schema)
elif layout == "her2st":
    sheet = build_her2st_sheet(source)
    validate_records(sheet.replace({None: ""}).to_dict("records"), schema, source)
else:
    raise SystemExit(f"unknown sample layout {layout!r}")
for _, row in sheet.iterrows():
    image = row["image"] or visium_paths(row["spots"])["hires_image"]
    with open_image(image) as slide:
        log.info("%s: patient %s, image %s (%dx%d px, %s), counts %s, spots %s", row["sample"], row["patient"],
                 image, slide.width, slide.height, f"{slide.mpp} um/px in metadata" if slide.mpp else "no pixel size",
                 row["counts"], row["spots"])
log.info("%d samples from %d patients", len(sheet), sheet["patient"].nunique())
write_table(sheet, snakemake.output[0])
