"""Read one section's counts and spots, check them against the image, cut a window around every spot."""
from pathlib import Path

import pandas as pd

from histexpr.data.section import tile_section
from histexpr.data.windows import write_windows
from histexpr.plots import spot_qc_figure
from histexpr.utils import setup_logging, write_h5ad

log = setup_logging(snakemake.log[0])

sample = snakemake.wildcards.sample
sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str, keep_default_na=False)
row = {k: (v if v != "" else None) for k, v in sheet.set_index("sample").loc[sample].items()}
row["sample"] = sample
# a section failing the placement check gets its spots drawn beside the log (the rule's outputs are removed)
sec = tile_section(row, snakemake.params.tiling, snakemake.params.min_counts,
                   qc_on_failure=str(Path(snakemake.log[0]).with_suffix(".misplaced.png")),
                   sheet=snakemake.params.sheet)
t = sec.adata.uns["tiling"]
pooled = t.get("platform") in ("visium_hd", "xenium")  # square pseudo-spots in the H&E's pixels
spot_qc_figure(sec.thumbnail, sec.thumb_scale, sec.spots, t["spot_um"] / t["um_per_px"],
               t["window_size_level0_px"],
               f"{sample} (patient {row['patient']}): {t['kept']} of {len(sec.spots)} "
               + (f"pseudo-spots of {t['spot_um']:g} um" if pooled else "spots") + " kept, "
               f"{100 * t['spots_on_tissue']:.0f}% on tissue; {t['um_per_px']:.3f} um/px ({t['um_per_px_source']})",
               snakemake.output.qc, square=pooled)
tiling = snakemake.params.tiling
stats = write_windows(sec.windows, snakemake.output.windows, tiling["store"], tiling["jpeg_quality"])
msg = f"{stats['n']} windows stored as {tiling['store']}: {stats['bytes'] / 2**20:.1f} MiB, " \
      f"{100 * stats['bytes'] / max(1, stats['uint8_bytes']):.1f}% of the uint8 bytes"
if "psnr_mean_db" in stats:
    msg += f"; JPEG quality {tiling['jpeg_quality']}, PSNR {stats['psnr_mean_db']:.1f} dB (lowest {stats['psnr_min_db']:.1f})"
log.info(msg)
write_h5ad(sec.adata, snakemake.output.adata)
