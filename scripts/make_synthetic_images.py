"""Draw a synthetic megapixel classification study (histexpr.data.needles) into the images folder."""

from histexpr.data.needles import NeedleSpec, write_needle_study
from histexpr.utils import atomic_dir, setup_logging

log = setup_logging(snakemake.log[0])


def progress(done: int, total: int) -> None:
    if done % max(1, total // 4) == 0 or done == total:
        log.info("%d of %d images drawn", done, total)


spec = NeedleSpec(**snakemake.params.synthetic)
with atomic_dir(snakemake.output[0]) as tmp:
    sheet = write_needle_study(tmp, spec, progress)
log.info("%s: %d images, %d x %d px, %d objects of %d px each (%s)", snakemake.output[0], len(sheet), spec.size,
         spec.size, spec.objects, spec.object_px, spec)
