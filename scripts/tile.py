"""Read one section's counts and spots, then cut a window around every spot."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from histexpr.data.expression import low_count_spots  # noqa: E402
from histexpr.data.tiling import SPOT_PITCH_UM, check_spots_on_image, estimate_um_per_px, tile_spots  # noqa: E402
from histexpr.io.image import open_image  # noqa: E402
from histexpr.io.sheet import read_sample  # noqa: E402
from histexpr.utils import write_h5ad, write_npy  # noqa: E402

cfg = snakemake.params.tiling
sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str, keep_default_na=False)
row = {k: (v if v != "" else None) for k, v in sheet.set_index("sample").loc[snakemake.wildcards.sample].items()}
row["sample"] = snakemake.wildcards.sample
adata, image = read_sample(row)  # validates counts, spots and their join before any pixel is decoded
n_spots = adata.n_obs
low = low_count_spots(adata, snakemake.params.min_counts)  # spot QC, before any pixel is decoded
if low.all():
    raise SystemExit(f"{row['counts']}: every spot has fewer than {snakemake.params.min_counts:g} counts; "
                     f"lower expression.min_counts")
if low.any():
    log.info("%s spots dropped (fewer than %g counts): %s", row["sample"], snakemake.params.min_counts,
             ", ".join(adata.obs_names[low]))
    adata = adata[~low].copy()
xy = np.asarray(adata.obsm["spatial"])
with open_image(image) as slide:
    check_spots_on_image(xy, slide.width, slide.height, row["spots"], image)
    pitch = cfg["spot_pitch_um"][row["format"]]
    grid = estimate_um_per_px(xy, pitch) if len(xy) > 1 else None
    if row.get("um_per_px"):
        um_per_px, source = float(row["um_per_px"]), "sample sheet"
    elif "um_per_px" in adata.uns:
        um_per_px, source = float(adata.uns["um_per_px"]), "Visium scale factors"
    elif slide.mpp:
        um_per_px, source = slide.mpp, "image metadata"
    elif grid:
        um_per_px, source = grid, f"spot grid ({pitch:g} um pitch)"
    else:
        raise SystemExit(f"{row['spots']}: a single spot and no pixel size; set um_per_px in the sample sheet")
    log.info("%s: %.4f um/px from %s (spot grid suggests %s)", row["sample"], um_per_px, source,
             f"{grid:.4f}" if grid else "n/a")
    if grid and abs(grid / um_per_px - 1) > 0.2:
        log.warning("%s: pixel size from %s differs from the spot grid's by %.0f%%", row["sample"], source,
                    100 * abs(grid / um_per_px - 1))

with open_image(image, check_decode=True) as slide:
    res = tile_spots(slide, xy, um_per_px, cfg["window_um"], cfg["window_px"], cfg["min_tissue"],
                     desc=f"tiling {row['sample']}")
    thumb, thumb_scale = slide.thumbnail(cfg["thumbnail_px"])
c = {**res.counts, "input": n_spots, "low_counts": int(low.sum())}
log.info("%s: %d spots, %d kept, %d dropped (%d below %g counts, %d window off the image edge, %d background "
         "below %.0f%% tissue); window %.1f px at level 0 -> %d px", row["sample"], c["input"], c["kept"],
         c["input"] - c["kept"], c["low_counts"], snakemake.params.min_counts, c["edge"], c["background"],
         100 * cfg["min_tissue"], res.window_size_px, cfg["window_px"])
if c["kept"] == 0:
    raise SystemExit(f"{image}: no spot window kept (all off the image or on background); check the image and "
                     f"pixel size, or lower tiling.min_tissue")
for status in ("edge", "background"):
    dropped = adata.obs_names[res.status == status]
    if len(dropped):
        log.info("%s spots dropped (%s): %s", row["sample"], status, ", ".join(dropped))

out = adata[res.kept].copy()
out.obs["tissue_fraction"] = res.tissue[res.kept]
out.obs["sample"] = row["sample"]
out.obs["patient"] = row["patient"]
out.obs_names = [f"{row['sample']}_{s}" for s in out.obs["spot"]]
spot_um = 100.0 if row["format"] == "st" else 55.0
out.uns["spatial"] = {row["sample"]: {
    "images": {"hires": thumb},
    "scalefactors": {"tissue_hires_scalef": thumb_scale, "spot_diameter_fullres": spot_um / um_per_px},
    "metadata": {"source_image_path": image},
}}
out.uns["tiling"] = {**{k: int(v) for k, v in c.items()}, "um_per_px": um_per_px, "um_per_px_source": source,
                     "window_um": float(cfg["window_um"]), "window_px": int(cfg["window_px"]),
                     "window_size_level0_px": float(res.window_size_px), "min_tissue": float(cfg["min_tissue"]),
                     "min_counts": float(snakemake.params.min_counts)}
write_npy(res.windows, snakemake.output.windows)
write_h5ad(out, snakemake.output.adata)
