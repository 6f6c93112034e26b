"""Predict expression for every tissue window of a slide with no spatial data, with one trained run."""

import anndata as ad
import numpy as np
import pandas as pd

from histexpr.data.expression import expression_unit, undo_minmax
from histexpr.data.fold import FoldData
from histexpr.data.windows import tile_sample
from histexpr.errors import ConfigError, InputError
from histexpr.io.image import open_image
from histexpr.plots import heatmap_figure
from histexpr.predict import predict_windows, prediction_adata, tile_tissue
from histexpr.utils import atomic_dir, resolve_device, set_threads, setup_logging, write_h5ad

log = setup_logging(snakemake.log[0])

inp, out, params = snakemake.input, snakemake.output, snakemake.params
slide_name, slide, cfg, run = snakemake.wildcards.slide, params.slide, params.predict, params.run
tiling = params.tiling
set_threads(snakemake.threads)

run_genes = ad.read_h5ad(inp.expression, backed="r").var_names
missing = [g for g in cfg["genes"] or [] if g not in run_genes]
if missing:  # before the slide is read
    raise ConfigError(None, f"predict.genes: {missing} are not among the run's {len(run_genes)} genes "
                            f"({inp.expression})")

with open_image(inp.image, check_decode=True) as image:
    um_per_px = slide.get("um_per_px") or image.mpp
    if not um_per_px:
        raise InputError(inp.image, "no pixel size in the image's metadata; set predict.slides."
                                    f"{slide_name}.um_per_px in the config")
    log.info("%s: %dx%d px at %.4f um/px (%s)", slide_name, image.width, image.height, um_per_px,
             "config" if slide.get("um_per_px") else "image metadata")
    windows, xy, grid = tile_tissue(image, um_per_px, tiling["window_um"], tiling["window_px"], cfg["stride_um"],
                                    cfg["min_tissue"])

tiles = {tile_sample(p): p for p in inp.tiles} if "tiles" in inp.keys() else None
fold = FoldData.load(inp.expression, window_paths=tiles, embeddings=inp.get("embeddings"),
                     exemplars=inp.get("exemplars"))
pool = np.load(inp.exemplars)["pool"] if "exemplars" in inp.keys() else None
device = resolve_device(params.train.get("device", "auto"))
pred = predict_windows(inp.model, fold, windows, tiling["window_px"], params.train, extractor=inp.get("extractor"),
                       faiss_index=inp.get("faiss"), exemplar_pool=pool, k=params.exemplars["k"],
                       metric=params.exemplars["metric"], device=device)
side = tiling["window_um"] / um_per_px
adata = prediction_adata(pred, fold.adata, xy, slide_name, inp.image, grid, side,
                         {**run, "um_per_px": um_per_px, "window_um": tiling["window_um"]})
write_h5ad(adata, out.h5ad)
log.info("%s: %d windows x %d genes -> %s", slide_name, *adata.shape, out.h5ad)

genes = cfg["genes"]
if not genes:
    scores = pd.concat([pd.read_csv(p, sep="\t") for p in inp.genes], ignore_index=True)
    pooled = scores[scores["scope"] == "pooled"].groupby("gene", sort=False)["pcc"]
    # the genes this run predicts that every CV fold scored (folds choose their top-N genes apart from fold 0)
    scored = pooled.count() == len(inp.genes)
    scores = pooled.mean()[scored & pooled.mean().index.isin(adata.var_names)]
    genes = scores.sort_values(ascending=False, kind="stable").index[:cfg["n_genes"]].tolist()
    log.info("heat maps for the %d genes %s predicts best on held-out slides (%d fold(s)): %s", len(genes),
             run["model"], len(inp.genes), genes)
trained_on = "fold 0: all patients" if run["fold"] == 0 else f"fold {run['fold']}"
unit = "predicted " + expression_unit(fold.adata.uns.get("normalisation"), run["protocol"])
with atomic_dir(out.heatmaps) as tmp:
    for gene in genes:
        part = adata[:, [gene]]
        heatmap_figure(grid.thumbnail, grid.scale, xy, undo_minmax(part.X, part.var).ravel(), side,
                       str(tmp / f"{gene}.png"),
                       f"{slide_name}: {gene} predicted by {run['model']} ({run['protocol']} targets, {trained_on})",
                       unit=unit)
