"""The one training loop every neural model shares.

AdamW, linear warm-up then cosine decay (per step), loss ``MSE + w·(1 - PCC)``,
a validation pass each epoch, and early stopping on validation PCC@M: the
weights returned are those of the best validation epoch (model selection never
looks at the test split).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..data.fold import FoldData
from ..metrics import pearson_per_gene
from .augment import dihedral, normalise, to_float
from ..utils import FromDict
from .selection import BestEpoch
from .losses import mse_pcc_loss

log = logging.getLogger(__name__)


@dataclass
class TrainConfig(FromDict):
    epochs: int = 50
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    patience: int = 10
    pcc_weight: float = 1.0
    augment: bool = True
    seed: int = 0
    device: str = "auto"


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate factor: linear from 0 to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_batch(data: FoldData, rows: np.ndarray, device: torch.device, augment: bool,
               generator: torch.Generator | None) -> dict:
    """The inputs a model's ``forward`` reads, for obs rows ``rows``."""
    batch = {"target": torch.as_tensor(data.targets[rows]).to(device)}
    if data.windows is not None:
        x = to_float(data.windows[rows], device)
        if augment:
            x = dihedral(x, generator)
        batch["image"] = normalise(x)
    if data.embeddings is not None:
        batch["embedding"] = torch.as_tensor(data.embeddings[rows]).to(device)
    if data.exemplar_index is not None:
        ex = data.exemplar_index[rows]
        batch["exemplar_mask"] = torch.as_tensor(ex >= 0).to(device)
        safe = np.where(ex >= 0, ex, 0)
        batch["exemplar_target"] = torch.as_tensor(data.targets[safe]).to(device)
        if data.embeddings is not None:
            batch["exemplar_embedding"] = torch.as_tensor(data.embeddings[safe]).to(device)
    return batch


@torch.no_grad()
def _batched(fn, model: torch.nn.Module, data: FoldData, rows: np.ndarray, cfg: TrainConfig,
             device: torch.device, desc: str) -> list[np.ndarray]:
    """``fn(batch)`` over ``rows`` in evaluation mode, no augmentation, as NumPy blocks."""
    model.eval()
    return [fn(make_batch(data, rows[start : start + cfg.eval_batch_size], device, False, None)).float().cpu().numpy()
            for start in tqdm(range(0, len(rows), cfg.eval_batch_size), desc=desc, leave=False, mininterval=5.0)]


def predict(model: torch.nn.Module, data: FoldData, rows: np.ndarray, cfg: TrainConfig,
            device: torch.device, desc: str = "predict") -> np.ndarray:
    """Predictions ``(len(rows), G)`` in evaluation mode, no augmentation."""
    out = _batched(model, model, data, rows, cfg, device, desc)
    return np.concatenate(out) if out else np.zeros((0, data.n_genes), np.float32)


def latent(model: torch.nn.Module, data: FoldData, rows: np.ndarray, cfg: TrainConfig,
           device: torch.device) -> np.ndarray | None:
    """The representation the model's head reads, ``(len(rows), F)``, for models with ``features(batch)``."""
    if not hasattr(model, "features"):
        return None
    out = _batched(model.features, model, data, rows, cfg, device, "latent")
    return np.concatenate(out) if out else None


def fit(model: torch.nn.Module, data: FoldData, cfg: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Train ``model`` on the ``train`` rows; select the epoch on the ``val`` rows.

    Returns the model holding the best weights and a per-epoch history.
    """
    train_rows, val_rows = data.index("train"), data.index("val")
    if len(train_rows) == 0:
        raise ValueError("no training windows in this fold")
    if len(val_rows) == 0:
        log.warning("no validation windows: early stopping is off and the last epoch is kept")
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_rows) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warm, total, cfg.min_lr_ratio))
    gen = torch.Generator().manual_seed(cfg.seed)
    history, best = [], BestEpoch(cfg.patience)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        model.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
        losses, mses = [], []
        # drop the last incomplete batch: the PCC term needs a real batch
        for start in tqdm(range(0, steps_per_epoch * cfg.batch_size, cfg.batch_size), desc=f"epoch {epoch}",
                          leave=False, mininterval=5.0):
            rows = perm[start : start + cfg.batch_size]
            batch = make_batch(data, rows, device, cfg.augment, gen)
            loss, parts = mse_pcc_loss(model(batch), batch["target"], cfg.pcc_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            mses.append(parts["mse"])
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_mse": float(np.mean(mses)),
               "lr": opt.param_groups[0]["lr"]}
        if len(val_rows):
            pred = predict(model, data, val_rows, cfg, device, desc="validate")
            truth = data.targets[val_rows]
            r = pearson_per_gene(truth, pred)
            row["val_mse"] = float(np.mean((pred - truth) ** 2))
            row["val_pcc_m"] = float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")
            score = row["val_pcc_m"] if np.isfinite(row["val_pcc_m"]) else -row["val_mse"]
        else:
            score = epoch  # keep the last epoch
        if not np.isfinite(score):
            score = -np.inf  # a diverged epoch never wins
        row["seconds"] = time.time() - t0
        best.update(model, epoch, score)
        row["selected"] = False
        history.append(row)
        log.info("epoch %d/%d: %s", epoch, cfg.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        if len(val_rows) and best.stale:
            log.info("early stopping: validation PCC@M has not improved for %d epochs", cfg.patience)
            break
    best_epoch = best.restore(model)
    hist = pd.DataFrame(history)
    hist.loc[hist["epoch"] == best_epoch, "selected"] = True
    log.info("selected epoch %d", best_epoch)
    return model, hist
