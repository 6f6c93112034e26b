"""The one training loop every neural model shares.

AdamW, linear warm-up then cosine decay (per step), loss ``MSE + w·(1 - PCC)``,
a validation pass each epoch, and early stopping on validation PCC@M: the
weights returned are those of the best validation epoch (model selection never
looks at the test split).

The data path is built for the GPU: a fold's windows (uint8), targets,
embeddings and exemplar indices go to the device once (:class:`DeviceFold`),
and each batch is gathered, converted, augmented and normalised there. bf16
autocast, channels-last, fused AdamW and ``torch.compile`` are settings
(:func:`resolve_speed`); on the CPU the defaults are plain fp32.
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
from ..utils import FromDict, duration, log_epoch, progress
from .augment import colour_jitter, dihedral, normalise, to_float
from .losses import mse_pcc_loss
from .selection import BestEpoch

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
    colour_jitter: float = 0.0  # strength of per-window brightness/contrast/saturation jitter (0 = off)
    seed: int = 0
    device: str = "auto"
    # Speed: "auto" = on for CUDA, off on the CPU (where results stay bit-identical to the plain path).
    precision: str = "auto"  # auto | fp32 | bf16 (autocast; the loss is computed in fp32)
    channels_last: str | bool = "auto"
    fused_adamw: str | bool = "auto"
    compile: bool = False  # torch.compile the model for training
    windows_on_device: str | bool = "auto"  # auto: when the fold's windows fit in half the free device memory


def _auto(value, device: torch.device) -> bool:
    return device.type == "cuda" if value == "auto" else bool(value)


def resolve_speed(cfg: TrainConfig, device: torch.device, window_bytes: int = 0) -> dict:
    """The effective speed settings on ``device`` (``auto`` resolved)."""
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
    if cfg.windows_on_device == "auto":
        fits = device.type == "cuda" and window_bytes < 0.5 * torch.cuda.mem_get_info(device)[0]
    else:
        fits = bool(cfg.windows_on_device)
    return {"bf16": bf16, "channels_last": _auto(cfg.channels_last, device),
            "fused_adamw": _auto(cfg.fused_adamw, device), "compile": bool(cfg.compile), "windows_on_device": fits}


class DeviceFold:
    """A :class:`FoldData` whose arrays live on ``device``, so a batch is gathered there by index.

    Windows stay uint8 on the device (30k windows of 224 px are 4.5 GB) unless ``windows`` is False,
    in which case they are gathered on the host and copied per batch (studies that do not fit).
    """

    def __init__(self, data: FoldData, device: torch.device, windows: bool = True):
        self.data, self.device = data, device
        self.split, self.genes, self.n_genes = data.split, data.genes, data.n_genes
        self.index = data.index
        self.targets = torch.as_tensor(data.targets).to(device)
        self.embeddings = None if data.embeddings is None else torch.as_tensor(data.embeddings).to(device)
        self.exemplar_index = (None if data.exemplar_index is None
                               else torch.as_tensor(np.asarray(data.exemplar_index), dtype=torch.long).to(device))
        self.windows = data.windows
        if windows and data.windows is not None:
            self.windows = (data.windows.to_tensor(device) if hasattr(data.windows, "to_tensor")
                            else torch.as_tensor(data.windows[np.arange(len(data.windows))]).to(device))


def _take(array, rows, device: torch.device) -> torch.Tensor:
    """``array[rows]`` as a tensor on ``device`` (``rows``: int array or tensor, any shape). Gathered on the
    array's own device when it is a tensor (the GPU-resident path), else on the host and copied."""
    if isinstance(array, torch.Tensor):
        return array[torch.as_tensor(rows).to(array.device)].to(device)
    rows = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows
    return torch.as_tensor(array[rows]).to(device, non_blocking=True)


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate factor: linear from 0 to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_batch(data: FoldData | DeviceFold, rows: np.ndarray, device: torch.device, augment: bool,
               generator: torch.Generator | None, colour: float = 0.0, channels_last: bool = False) -> dict:
    """The inputs a model's ``forward`` reads, for obs rows ``rows``."""
    batch = {"target": _take(data.targets, rows, device)}
    if data.windows is not None:
        x = to_float(_take(data.windows, rows, device), device)
        if augment:
            x = dihedral(x, generator)
            if colour > 0:
                x = colour_jitter(x, colour, generator)
        x = normalise(x)
        batch["image"] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    if data.embeddings is not None:
        batch["embedding"] = _take(data.embeddings, rows, device)
    if data.exemplar_index is not None:
        ex = _take(data.exemplar_index, rows, device)  # (B, k), -1 where missing
        batch["exemplar_mask"] = ex >= 0
        safe = torch.where(ex >= 0, ex, torch.zeros_like(ex))
        batch["exemplar_target"] = _take(data.targets, safe, device)
        if data.embeddings is not None:
            batch["exemplar_embedding"] = _take(data.embeddings, safe, device)
    return batch


@torch.no_grad()
def _batched(fn, model: torch.nn.Module, data: FoldData | DeviceFold, rows: np.ndarray, cfg: TrainConfig,
             device: torch.device, desc: str) -> list[np.ndarray]:
    """``fn(batch)`` over ``rows`` in evaluation mode, no augmentation, as NumPy blocks (fp32)."""
    speed = resolve_speed(cfg, device)
    model.eval()
    out = []
    for start in tqdm(range(0, len(rows), cfg.eval_batch_size), desc=desc, leave=False, mininterval=5.0):
        batch = make_batch(data, rows[start : start + cfg.eval_batch_size], device, False, None,
                           channels_last=speed["channels_last"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed["bf16"]):
            out.append(fn(batch).float().cpu().numpy())
    return out


def predict(model: torch.nn.Module, data: FoldData | DeviceFold, rows: np.ndarray, cfg: TrainConfig,
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


def fit(model: torch.nn.Module, data: FoldData, cfg: TrainConfig,
        device: torch.device) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Train ``model`` on the ``train`` rows; select the epoch on the ``val`` rows.

    Returns the model holding the best weights and a per-epoch history.
    """
    train_rows, val_rows = data.index("train"), data.index("val")
    if len(train_rows) == 0:
        raise ValueError("no training windows in this fold")
    if len(val_rows) == 0:
        log.warning("no validation windows: early stopping is off and the last epoch is kept")
    speed = resolve_speed(cfg, device, 0 if data.windows is None else int(np.prod(data.windows.shape)))
    log.info("data path and precision on %s: %s", device, ", ".join(f"{k}={v}" for k, v in speed.items()))
    fold = DeviceFold(data, device, windows=speed["windows_on_device"])
    model.to(device)
    if speed["channels_last"]:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if speed["compile"] else model  # shares the parameters of ``model``
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            **({"fused": True} if speed["fused_adamw"] else {}))
    steps_per_epoch = max(1, len(train_rows) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warm, total, cfg.min_lr_ratio))
    gen = torch.Generator().manual_seed(cfg.seed)
    history, best, started = [], BestEpoch(cfg.patience), time.time()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        model.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
        losses, mses = [], []
        # drop the last incomplete batch: the PCC term needs a real batch
        for start in tqdm(range(0, steps_per_epoch * cfg.batch_size, cfg.batch_size), desc=f"epoch {epoch}",
                          leave=False, mininterval=5.0):
            rows = perm[start : start + cfg.batch_size]
            batch = make_batch(fold, rows, device, cfg.augment, gen, cfg.colour_jitter, speed["channels_last"])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed["bf16"]):
                out = step_model(batch)
            loss, parts = mse_pcc_loss(out.float(), batch["target"], cfg.pcc_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            mses.append(parts["mse"])
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_mse": float(np.mean(mses)),
               "lr": opt.param_groups[0]["lr"]}
        if len(val_rows):
            pred = predict(model, fold, val_rows, cfg, device, desc="validate")
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
        log_epoch(epoch, cfg.epochs, time.time() - started,
                  f"val PCC@M {row['val_pcc_m']:.3f} (best: epoch {best.epoch})" if len(val_rows) else
                  f"train loss {row['train_loss']:.4f}")
        if len(val_rows) and best.stale:
            progress.info("early stopping: validation PCC@M has not improved for %d epochs", cfg.patience)
            break
    best_epoch = best.restore(model)
    hist = pd.DataFrame(history)
    hist.loc[hist["epoch"] == best_epoch, "selected"] = True
    progress.info("kept epoch %d of %d (%s)", best_epoch, len(history), duration(time.time() - started))
    return model, hist
