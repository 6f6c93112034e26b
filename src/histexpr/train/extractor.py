"""Training the unsupervised extractor and embedding every window with it.

Two extractors: ``stylegan`` (EGN's E + G + F, :mod:`histexpr.models.stylegan`,
trained with L1 + LPIPS + adversarial loss) and ``autoencoder`` (a plain
convolutional autoencoder trained with L1, the ablation's fallback feature
space). Both keep the epoch with the lowest validation reconstruction L1.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.windows import WindowStore
from ..errors import ConfigError
from ..models.autoencoder import ConvAutoencoder
from ..models.catalog import FROZEN_EXTRACTORS
from ..models.stylegan import Discriminator, StyleExtractor
from ..utils import log_epoch
from .augment import dihedral, to_float

log = logging.getLogger(__name__)

DEFAULTS = dict(kind="stylegan", input_px=64, dim=64, width=32, cap=256, epochs=30, batch_size=64, lr=1e-3,
                weight_decay=0.0, augment=True, lpips="random", lpips_net="alex", l1_weight=1.0, lpips_weight=1.0,
                adv_weight=1.0, r1_gamma=1.0, r1_every=16)

# torchvision's ImageNet weights for the LPIPS trunks, looked up in the torch hub cache (never downloaded)
LPIPS_TRUNK_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                     "squeeze": "squeezenet1_1-b8a52dc0.pth"}


KINDS = ("stylegan", "autoencoder", "resnet50", "alexnet_lpips", "timm")
# Frozen encoders: nothing to train, so every window is embedded once per study (not per fold). The ImageNet
# feature spaces of EGN's Table 2, and any timm architecture from a local checkpoint (foundation models).
FIXED_KINDS = FROZEN_EXTRACTORS


def build_extractor(params: dict, pretrained: bool = True) -> torch.nn.Module:
    """The extractor a config describes (``kind`` one of :data:`KINDS`)."""
    p = {**DEFAULTS, **(params or {})}
    if p["kind"] == "stylegan":
        return StyleExtractor(p["input_px"], p["dim"], p["width"], p["cap"])
    if p["kind"] == "autoencoder":
        return ConvAutoencoder(p["input_px"], p["dim"], p["width"])
    if p["kind"] == "resnet50":
        from ..models.pretrained_features import ResNet50Features

        return ResNet50Features(p["input_px"], pretrained)
    if p["kind"] == "alexnet_lpips":
        from ..models.pretrained_features import LPIPSFeatures

        return LPIPSFeatures(p["input_px"], pretrained)
    if p["kind"] == "timm":
        from ..models.pretrained_features import TimmFeatures

        t = p.get("timm") or {}
        return TimmFeatures(t.get("arch"), t.get("checkpoint"), t.get("input_px"), t.get("mean"), t.get("std"),
                            t.get("kwargs"), pretrained, t.get("pool") or "default", t.get("prefix") or "")
    raise ConfigError(None, f"unknown extractor kind {p['kind']!r}; choose one of {', '.join(KINDS)}")


def load_extractor(checkpoint: dict) -> torch.nn.Module:
    """Rebuild a saved extractor (``{"kind", "params", "state_dict"}``; fixed kinds reload ImageNet weights)."""
    model = build_extractor({**checkpoint["params"], "kind": checkpoint.get("kind", "autoencoder")})
    if checkpoint.get("state_dict") is not None:
        model.load_state_dict(checkpoint["state_dict"])
    return model


def make_lpips(mode: str, net: str, device: torch.device):
    """The LPIPS loss: ``imagenet`` (trunk weights from the torch hub cache), ``random`` trunk, or ``off``.

    Raises before any training when ``imagenet`` is asked for and the weights are not on disk.
    """
    if mode == "off":
        log.info("LPIPS: off (L1 + adversarial only)")
        return None
    import lpips

    if mode == "imagenet":
        path = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_TRUNK_FILES[net])
        if not os.path.exists(path):
            raise ConfigError(None, f"extractor.lpips: imagenet needs torchvision's ImageNet {net} weights at {path} "
                                    f"(no download is attempted); copy them there, or set extractor.lpips: random or off")
        log.info("LPIPS: %s trunk with ImageNet weights from %s", net, path)
    elif mode == "random":
        log.warning("LPIPS: RANDOM %s trunk (pnet_rand: no ImageNet weights; the learned LPIPS channel weights "
                    "are used as shipped). Set extractor.lpips: imagenet when you have the weights.", net)
    else:
        raise ConfigError(None, f"extractor.lpips must be imagenet, random or off, not {mode!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation notice inside lpips
        loss = lpips.LPIPS(net=net, pretrained=True, pnet_rand=(mode == "random"), verbose=False)
    return loss.to(device).eval().requires_grad_(False)


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
    history, best, best_state, started = [], np.inf, None, time.time()
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
        log.info("extractor epoch %d/%d: train L1 %.4f, val L1 %.4f", epoch, p["epochs"], row["train_l1"],
                 row["val_l1"])
        log_epoch(epoch, p["epochs"], time.time() - started, f"extractor val L1 {row['val_l1']:.4f}")
        if row["val_l1"] < best:
            best, best_state = row["val_l1"], {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model, pd.DataFrame(history)


@torch.no_grad()
def reconstruction_l1(model: torch.nn.Module, windows: WindowStore, rows: np.ndarray, px: int,
                      device: torch.device, batch_size: int = 256) -> float:
    """Mean absolute reconstruction error on the ``[0, 1]`` scale."""
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(rows), batch_size):
        x = _resize(to_float(windows[rows[start : start + batch_size]], device), px)
        total += float(F.l1_loss(_reconstruct01(model, x), x, reduction="sum"))
        n += x.numel()
    return total / max(n, 1)


def _reconstruct01(model: torch.nn.Module, x01: torch.Tensor) -> torch.Tensor:
    out = model(x01)
    return (out + 1) / 2 if isinstance(model, StyleExtractor) else out


LPIPS_MIN_PX = 32  # AlexNet's pooling needs at least this much; smaller windows are upsampled for LPIPS only


def _lpips(perceptual, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.shape[-1] < LPIPS_MIN_PX:
        a, b = (F.interpolate(t, size=(LPIPS_MIN_PX, LPIPS_MIN_PX), mode="bilinear", align_corners=False)
                for t in (a, b))
    return perceptual(a, b).mean()


def train_stylegan(windows: WindowStore, train_rows: np.ndarray, val_rows: np.ndarray, params: dict,
                   device: torch.device, seed: int = 0) -> tuple[StyleExtractor, pd.DataFrame]:
    """Jointly train E, G (min) and F (max) on ``train_rows``; keep E+G of the best validation-L1 epoch.

    Per step, with ``X̂ = G(E(X))`` in ``[-1, 1]``:
    F: ``softplus(F(X̂)) + softplus(-F(X))`` (+ lazy R1 ``γ/2 ||∇_X F(X)||²`` every ``r1_every`` steps);
    E, G: ``w1 |X - X̂|₁ + w2 LPIPS(X, X̂) + w3 softplus(-F(X̂))``.
    """
    p = {**DEFAULTS, **(params or {})}
    torch.manual_seed(seed)
    model = StyleExtractor(p["input_px"], p["dim"], p["width"], p["cap"]).to(device)
    disc = Discriminator(p["input_px"], p["width"], p["cap"]).to(device)
    perceptual = make_lpips(p["lpips"], p["lpips_net"], device) if p["lpips_weight"] > 0 else None
    opt_g = torch.optim.Adam(model.parameters(), lr=p["lr"], betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=p["lr"], betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(seed)
    history, best, best_state, step, started = [], np.inf, None, 0, time.time()
    for epoch in range(1, p["epochs"] + 1):
        t0 = time.time()
        model.train()
        disc.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
        sums = {"l1": 0.0, "lpips": 0.0, "adv": 0.0, "d": 0.0}
        n_steps = 0
        for start in tqdm(range(0, len(perm), p["batch_size"]), desc=f"extractor epoch {epoch}", leave=False,
                          mininterval=5.0):
            x01 = _resize(to_float(windows[perm[start : start + p["batch_size"]]], device), p["input_px"])
            if p["augment"]:
                x01 = dihedral(x01, gen)
            x = x01 * 2 - 1
            # F: max over F of softplus(-F(X)) + softplus(F(X̂)) (written as a loss to minimise)
            if p["adv_weight"] > 0:
                with torch.no_grad():
                    fake = model(x01)
                real = x.detach().requires_grad_(step % p["r1_every"] == 0 and p["r1_gamma"] > 0)
                real_logit = disc(real)
                d_loss = (F.softplus(disc(fake)) + F.softplus(-real_logit)).mean()
                if real.requires_grad:
                    (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
                    d_loss = d_loss + p["r1_gamma"] / 2 * grad.pow(2).sum((1, 2, 3)).mean() * p["r1_every"]
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                sums["d"] += float(d_loss.detach())
            # E, G: min of L1 + LPIPS + adversarial
            fake = model(x01)
            l1 = (fake - x).abs().mean()
            lp = _lpips(perceptual, fake, x) if perceptual is not None else torch.zeros((), device=device)
            adv = F.softplus(-disc(fake)).mean() if p["adv_weight"] > 0 else torch.zeros((), device=device)
            loss = p["l1_weight"] * l1 + p["lpips_weight"] * lp + p["adv_weight"] * adv
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            for k, v in (("l1", l1), ("lpips", lp), ("adv", adv)):
                sums[k] += float(v.detach())
            n_steps += 1
            step += 1
        row = {"epoch": epoch, **{f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()}}
        row["train_l1"] = row["train_l1"] / 2  # on the [0, 1] scale, like val_l1
        rows = val_rows if len(val_rows) else train_rows
        row["val_l1"] = reconstruction_l1(model, windows, rows, p["input_px"], device)
        row["seconds"] = time.time() - t0
        history.append(row)
        log.info("extractor epoch %d/%d: L1 %.4f, LPIPS %.4f, adv(G) %.4f, F %.4f; val L1 %.4f", epoch, p["epochs"],
                 row["train_l1"], row["train_lpips"], row["train_adv"], row["train_d"], row["val_l1"])
        log_epoch(epoch, p["epochs"], time.time() - started,
                  f"extractor L1 {row['train_l1']:.4f}, LPIPS {row['train_lpips']:.4f}, val L1 {row['val_l1']:.4f}")
        if row["val_l1"] < best:
            best, best_state = row["val_l1"], {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model, pd.DataFrame(history)


def train_extractor(windows: WindowStore, train_rows: np.ndarray, val_rows: np.ndarray, params: dict,
                    device: torch.device, seed: int = 0) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Train the configured extractor kind."""
    p = {**DEFAULTS, **(params or {})}
    if p["kind"] in FIXED_KINDS:
        model = build_extractor(p)  # raises here, before any work, when the ImageNet weights are absent
        log.info("extractor %s: fixed ImageNet features (%d dimensions), nothing to train", p["kind"], model.dim)
        return model, pd.DataFrame([{"epoch": 0, "note": f"{p['kind']}: fixed ImageNet features"}])
    train = {"stylegan": train_stylegan, "autoencoder": train_autoencoder}.get(p["kind"])
    if train is None:
        raise ConfigError(None, f"unknown extractor kind {p['kind']!r}; choose one of {', '.join(KINDS)}")
    return train(windows, train_rows, val_rows, p, device, seed)


@torch.no_grad()
def embed(model: torch.nn.Module, windows: WindowStore, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Global views ``(N, D)`` of every window in the store."""
    model.eval().to(device)
    out = []
    for start in tqdm(range(0, len(windows), batch_size), desc="embed", mininterval=5.0):
        x = _resize(to_float(windows[np.arange(start, min(start + batch_size, len(windows)))], device), model.input_px)
        out.append(model.encode(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)
