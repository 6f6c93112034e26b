"""Expression for a slide with no spatial data: tile its tissue, run a trained fold's model, map the result.

The model sees a new slide exactly as it saw the fold's test windows: the same window size and pixel
size, the fold's extractor for the global view, and exemplars from the fold's training pool (FAISS index
of the fold; a new slide shares no patient with it). Predictions are in the fold's target space (log1p, then
min-max fitted on the fold's training sections; ``var["min"]``/``var["max"]`` undo the min-max).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .data.fold import FoldData
from .data.tiling import tile_spots
from .io.image import Slide
from .models import get_model
from .models.catalog import MODEL_NEEDS, split_run
from .train.loop import TrainConfig, predict

log = logging.getLogger(__name__)

GLASS_MIN, GLASS_SPREAD, BLACK_MAX = 205, 25, 35  # the thresholds of data.tiling.tissue_fraction


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels that are neither blank glass (light, unsaturated) nor black, on a low-resolution image."""
    w = rgb.astype(np.int16)
    lo, hi = w.min(axis=-1), w.max(axis=-1)
    return ~(((lo > GLASS_MIN) & (hi - lo < GLASS_SPREAD)) | (hi < BLACK_MAX))


@dataclass
class TissueGrid:
    xy: np.ndarray  # (n, 2) window centres, level-0 px (x, y)
    thumbnail: np.ndarray  # (h, w, 3) uint8 low-resolution image
    scale: float  # thumbnail px per level-0 px
    mask: np.ndarray  # (h, w) bool tissue mask of the thumbnail


def tissue_grid(slide: Slide, um_per_px: float, window_um: float, stride_um: float, min_tissue: float,
                thumbnail_px: int = 2048) -> TissueGrid:
    """Window centres on a regular grid (``stride_um`` apart) whose window is at least ``min_tissue`` tissue,
    judged on a low-resolution copy of the slide (its smallest pyramid level or a thumbnail)."""
    thumb, scale = slide.thumbnail(thumbnail_px)
    mask = tissue_mask(thumb)
    side, step = window_um / um_per_px, stride_um / um_per_px
    xs = np.arange(side / 2, slide.width - side / 2 + 1e-6, step)
    ys = np.arange(side / 2, slide.height - side / 2 + 1e-6, step)
    centres = np.array([(x, y) for y in ys for x in xs], dtype=np.float64).reshape(-1, 2)
    half = max(1, int(round(side * scale / 2)))
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    cx = np.clip(np.round(centres[:, 0] * scale).astype(int), 0, mask.shape[1] - 1)
    cy = np.clip(np.round(centres[:, 1] * scale).astype(int), 0, mask.shape[0] - 1)
    x0, x1 = np.clip(cx - half, 0, mask.shape[1]), np.clip(cx + half, 0, mask.shape[1])
    y0, y1 = np.clip(cy - half, 0, mask.shape[0]), np.clip(cy + half, 0, mask.shape[0])
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    frac = (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]) / area
    keep = frac >= min_tissue
    log.info("tissue: %.1f%% of the slide; %d of %d grid windows (%.0f um apart) at >= %.0f%% tissue",
             100 * mask.mean(), keep.sum(), len(centres), stride_um, 100 * min_tissue)
    return TissueGrid(centres[keep], thumb, scale, mask)


def tile_tissue(slide: Slide, um_per_px: float, window_um: float, window_px: int, stride_um: float | None = None,
                min_tissue: float = 0.5, thumbnail_px: int = 2048) -> tuple[np.ndarray, np.ndarray, TissueGrid]:
    """Every tissue window of the slide: ``(windows (n, S, S, 3) uint8, centres (n, 2), grid)``.

    Candidates come from the low-resolution mask; each is then cut at full resolution and kept only if it
    passes the same tissue test as the training windows (``tile_spots``).
    """
    grid = tissue_grid(slide, um_per_px, window_um, stride_um or window_um, min_tissue, thumbnail_px)
    if len(grid.xy) == 0:
        raise ValueError(f"{slide.path}: no tissue window found (lower predict.min_tissue, or check the pixel size)")
    res = tile_spots(slide, grid.xy, um_per_px, window_um, window_px, min_tissue, desc="tiling tissue")
    log.info("windows: %d cut, %d kept at full resolution", res.counts["input"], res.counts["kept"])
    if res.counts["kept"] == 0:
        raise ValueError(f"{slide.path}: no window passed the full-resolution tissue test")
    return res.windows, grid.xy[res.kept], grid


class _Stacked:
    """Rows of two window sources behind one index (the fold's windows, then the new slide's)."""

    def __init__(self, first, second: np.ndarray):
        self.first, self.second, self.n = first, second, len(first)

    def __len__(self) -> int:
        return self.n + len(self.second)

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        old = idx < self.n
        out = np.empty((len(idx),) + self.second.shape[1:], dtype=np.uint8)
        if old.any():
            out[old] = self.first[idx[old]]
        if (~old).any():
            out[~old] = self.second[idx[~old] - self.n]
        return out


def fold_with_new_windows(fold: FoldData, windows: np.ndarray, embeddings: np.ndarray | None,
                          exemplar_index: np.ndarray | None) -> tuple[FoldData, np.ndarray]:
    """The fold's data with the new windows appended as split ``"predict"`` (no targets: zeros, never read
    by a forward pass); returns it and the new rows."""
    n, g = len(windows), fold.n_genes
    rows = np.arange(len(fold.targets), len(fold.targets) + n)
    emb = None if embeddings is None else np.vstack([fold.embeddings, embeddings])
    ex = None if exemplar_index is None else np.vstack([fold.exemplar_index, exemplar_index])
    data = FoldData(np.vstack([fold.targets, np.zeros((n, g), np.float32)]),
                    np.concatenate([fold.split, np.full(n, "predict")]), fold.genes,
                    None if fold.windows is None else _Stacked(fold.windows, windows), emb, ex)
    return data, rows


def load_run(path: str, n_genes: int, window_px: int, d_code: int | None, device: torch.device):
    """A trained run's ``(checkpoint, model)`` from its ``model.pt`` (neural: a state dict; fitted: its arrays
    and settings), loaded without unpickling code (:func:`~histexpr.models.weights.load_checkpoint`)."""
    from .models.weights import load_checkpoint, restore_fitted

    ckpt = load_checkpoint(path)
    spec = get_model(split_run(ckpt["model"])[0])
    if "state_dict" in ckpt:
        model = spec.factory(n_genes, ckpt["params"], img_size=window_px, d_code=d_code)
        model.load_state_dict(ckpt["state_dict"])
        return ckpt, model.to(device).eval()
    return ckpt, restore_fitted(spec.factory(ckpt["params"]), ckpt["fitted"])


def predict_windows(run: str, fold: FoldData, windows: np.ndarray, window_px: int, train: dict,
                    extractor: str | None = None, faiss_index: str | None = None, exemplar_pool: np.ndarray | None = None,
                    k: int = 9, metric: str = "l2", device: torch.device | None = None) -> np.ndarray:
    """Predictions ``(n, G)`` of a trained run for new windows ``(n, S, S, 3)``.

    Args:
        run: the run's ``model.pt``; ``fold``: its fold's data (targets, windows, embeddings, exemplars).
        extractor, faiss_index, exemplar_pool: the fold's extractor checkpoint, FAISS index and the fold rows
            the index holds, for models that read embeddings or exemplars.
    """
    device = device or torch.device("cpu")
    d_code = None if fold.embeddings is None else fold.embeddings.shape[1]
    ckpt, model = load_run(run, fold.n_genes, window_px, d_code, device)
    needs = MODEL_NEEDS[split_run(ckpt["model"])[0]]
    emb = ex = None
    if "embeddings" in needs or "exemplars" in needs:
        from .models.weights import load_checkpoint
        from .train.extractor import embed, load_extractor

        emb = embed(load_extractor(load_checkpoint(extractor)), windows, device)
    if "exemplars" in needs:
        import faiss

        from .retrieval import search_exemplars

        index = faiss.read_index(faiss_index)
        groups_new = np.full(len(windows), "__new_slide__", dtype=object)
        local, _ = search_exemplars(index, emb, groups_new, np.full(len(exemplar_pool), "pool", dtype=object), k,
                                    metric)
        ex = np.where(local >= 0, exemplar_pool[np.where(local >= 0, local, 0)], -1)
    data, rows = fold_with_new_windows(fold, windows, emb, ex)
    log.info("model %s (%s): predicting %d windows", ckpt["model"], run, len(rows))
    if isinstance(model, torch.nn.Module):
        return predict(model, data, rows, TrainConfig.from_dict(train), device)
    if ckpt["model"] == "knn":
        model.targets = data.targets  # the exemplars' targets (not pickled with the model)
    return model.predict(data, rows)


def prediction_adata(pred: np.ndarray, fold_adata, xy: np.ndarray, slide: str, image: str, grid: TissueGrid,
                     window_side_px: float, meta: dict):
    """Predictions as AnnData: one row per tissue window, ``obsm["spatial"]`` in level-0 pixels, and the
    slide's low-resolution image under ``uns["spatial"]`` so ``scanpy.pl.spatial`` draws it directly."""
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame({"sample": slide, "x": xy[:, 0], "y": xy[:, 1]},
                       index=[f"{slide}_{int(round(x))}x{int(round(y))}" for x, y in xy])
    var = fold_adata.var.copy()
    out = ad.AnnData(X=np.asarray(pred, dtype=np.float32), obs=obs, var=var)
    out.obsm["spatial"] = np.asarray(xy, dtype=np.float64)
    out.uns["spatial"] = {slide: {"images": {"hires": grid.thumbnail},
                                  "scalefactors": {"tissue_hires_scalef": grid.scale,
                                                   "spot_diameter_fullres": float(window_side_px)},
                                  "metadata": {"source_image_path": str(image)}}}
    out.uns["prediction"] = {k: v for k, v in meta.items() if v is not None}
    return out
