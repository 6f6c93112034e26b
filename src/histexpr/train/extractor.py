"""Training the unsupervised extractor and embedding every window with it."""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.windows import WindowStore
from ..models.autoencoder import ConvAutoencoder
from .augment import dihedral, to_float

log = logging.getLogger(__name__)

DEFAULTS = dict(input_px=64, dim=64, width=32, epochs=30, batch_size=64, lr=1e-3, weight_decay=0.0, augment=True)


def _resize(x: torch.Tensor, px: int) -> torch.Tensor:
    if x.shape[-1] == px:
        return x
    return F.interpolate(x, size=(px, px), mode="bilinear", antialias=True, align_corners=False)


def train_autoencoder(windows: WindowStore, train_rows: np.ndarray, val_rows: np.ndarray, params: dict,
                      device: torch.device, seed: int = 0) -> tuple[ConvAutoencoder, pd.DataFrame]:
    """Fit the autoencoder with L1 reconstruction on ``train_rows``; keep the best ``val_rows`` epoch."""
    p = {**DEFAULTS, **(params or {})}
    torch.manual_seed(seed)
    model = ConvAutoencoder(p["input_px"], p["dim"], p["width"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    history, best, best_state = [], np.inf, None
    for epoch in range(1, p["epochs"] + 1):
        t0 = time.time()
        model.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
        losses = []
        for start in tqdm(range(0, len(perm), p["batch_size"]), desc=f"extractor epoch {epoch}", leave=False,
                          mininterval=5.0):
            x = _resize(to_float(windows[perm[start : start + p["batch_size"]]], device), p["input_px"])
            if p["augment"]:
                x = dihedral(x, gen)
            loss = F.l1_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        row = {"epoch": epoch, "train_l1": float(np.mean(losses))}
        rows = val_rows if len(val_rows) else train_rows
        row["val_l1"] = reconstruction_l1(model, windows, rows, p["input_px"], device)
        row["seconds"] = time.time() - t0
        history.append(row)
        log.info("extractor epoch %d/%d: train L1 %.4f, val L1 %.4f", epoch, p["epochs"], row["train_l1"], row["val_l1"])
        if row["val_l1"] < best:
            best, best_state = row["val_l1"], copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    model.load_state_dict(best_state)
    return model, pd.DataFrame(history)


@torch.no_grad()
def reconstruction_l1(model: ConvAutoencoder, windows: WindowStore, rows: np.ndarray, px: int,
                      device: torch.device, batch_size: int = 256) -> float:
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(rows), batch_size):
        x = _resize(to_float(windows[rows[start : start + batch_size]], device), px)
        total += float(F.l1_loss(model(x), x, reduction="sum"))
        n += x.numel()
    return total / max(n, 1)


@torch.no_grad()
def embed(model: ConvAutoencoder, windows: WindowStore, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Global views ``(N, D)`` of every window in the store."""
    model.eval().to(device)
    out = []
    for start in tqdm(range(0, len(windows), batch_size), desc="embed", mininterval=5.0):
        x = _resize(to_float(windows[np.arange(start, min(start + batch_size, len(windows)))], device), model.input_px)
        out.append(model.encode(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)
