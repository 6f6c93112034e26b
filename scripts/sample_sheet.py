"""Validate the sample sheet (or build it from a known folder layout); check every image and the genes the
samples share, before anything is tiled."""

from histexpr.config import validate_records
from histexpr.data.expression import check_gene_overlap
from histexpr.errors import InputError
from histexpr.io.audit import audit_sample_sheet
from histexpr.io.image import open_image
from histexpr.io.sheet import build_her2st_sheet, load_sample_sheet, sample_genes, sample_image
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

source, layout, schema = snakemake.input[0], snakemake.params.layout, snakemake.params.schema
if layout == "sheet":
    sheet = load_sample_sheet(source, schema=schema)
elif layout == "her2st":
    sheet = build_her2st_sheet(source)
    validate_records(sheet.replace({None: ""}).to_dict("records"), schema, source)
else:
    raise InputError(source, f"unknown sample layout {layout!r}")
for note in audit_sample_sheet(sheet, source):  # the same section twice, an image under two patients
    log.info("audit: %s", note)
log.info("audit: no counts file or image appears under two samples of different patients")
genes, counts = {}, {}
for _, row in sheet.iterrows():
    image, _, image_source = sample_image(row, snakemake.params.bin_um)
    with open_image(image) as slide:
        slide.check_size(snakemake.params.max_image_megapixels)
        if slide.is_blank():
            raise InputError(image, f"sample {row['sample']!r}: the image is blank (every pixel the same colour), "
                                    f"a placeholder, not an H&E scan")
        log.info("%s: patient %s, image %s (%s; %dx%d px, %s), counts %s, spots %s", row["sample"], row["patient"],
                 image, image_source, slide.width, slide.height,
                 f"{slide.mpp} um/px in metadata" if slide.mpp else "no pixel size", row["counts"], row["spots"])
    genes[row["sample"]], counts[row["sample"]] = sample_genes(row, snakemake.params.bin_um), row["counts"]
expr = snakemake.params.expression
shared = check_gene_overlap(genes, counts, expr["gene_list"], expr["top_n"])
log.info("%d samples from %d patients; %d genes measured in every sample", len(sheet), sheet["patient"].nunique(),
         len(shared))
write_table(sheet, snakemake.output[0])
