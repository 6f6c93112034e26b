"""Training throughput of the workflow's models, through the library's own training code.

For each model: images/s of the optimiser step alone (one batch resident on the
device) and of whole epochs through :func:`histexpr.train.loop.fit` (windows
gathered from host memory as uint8, converted and augmented on the device).
Prints a table; no thresholds (run it on the machine you care about).

    python benchmarks/train_throughput.py --preset tiny          # CPU smoke run
    python benchmarks/train_throughput.py --preset paper         # GPU: the EGN paper's ViT size
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
import torch

from histexpr.data.fold import FoldData
from histexpr.models import get_model
from histexpr.models.autoencoder import ConvAutoencoder
from histexpr.train.augment import to_float
from histexpr.train.extractor import train_autoencoder
from histexpr.train.loop import TrainConfig, fit, make_batch
from histexpr.train.losses import mse_pcc_loss
from histexpr.utils import resolve_device

PRESETS = {
    # img px, windows, genes, batch, ViT params, extractor params
    "tiny": dict(img=64, n=512, genes=50, batch=32,
                 vit=dict(patch_size=8, embed_dim=96, depth=4, num_heads=4),
                 ae=dict(input_px=64, dim=32, width=16)),
    "paper": dict(img=256, n=8192, genes=250, batch=256,
                  vit=dict(patch_size=32, embed_dim=1024, depth=8, num_heads=16, mlp_ratio=4.0),
                  ae=dict(input_px=128, dim=512, width=32)),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_rate(model, batch, device, steps, warmup=3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        loss, _ = mse_pcc_loss(model(batch), batch["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * batch["target"].shape[0] / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    p = PRESETS[args.preset]
    device = resolve_device(args.device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 256, (p["n"], p["img"], p["img"], 3), dtype=np.uint8)
    targets = rng.uniform(size=(p["n"], p["genes"])).astype(np.float32)
    split = np.where(np.arange(p["n"]) < int(0.9 * p["n"]), "train", "val")
    data = FoldData(targets, split, [f"g{i}" for i in range(p["genes"])], windows=windows)
    rows = []

    model = get_model("vit").factory(p["genes"], p["vit"], img_size=p["img"]).to(device)
    batch = make_batch(data, np.arange(p["batch"]), device, True, torch.Generator().manual_seed(0))
    step = step_rate(model, batch, device, args.steps)
    cfg = TrainConfig(epochs=2, batch_size=p["batch"], eval_batch_size=p["batch"], warmup_epochs=0.2, patience=10)
    _, hist = fit(get_model("vit").factory(p["genes"], p["vit"], img_size=p["img"]), data, cfg, device)
    n_train = (len(data.index("train")) // p["batch"]) * p["batch"]
    epoch = n_train / hist["seconds"].iloc[-1]  # second epoch: no warm-up costs, validation included
    rows.append({"model": "vit", "params_M": sum(q.numel() for q in model.parameters()) / 1e6,
                 "step_img_s": step, "epoch_img_s": epoch})

    ae = ConvAutoencoder(**p["ae"]).to(device)
    x = torch.nn.functional.interpolate(to_float(windows[: p["batch"]], device), size=p["ae"]["input_px"])
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-3)
    for i in range(3 + args.steps):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        loss = torch.nn.functional.l1_loss(ae(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    ae_step = args.steps * p["batch"] / (time.perf_counter() - t0)
    _, h = train_autoencoder(windows, data.index("train"), data.index("val"),
                             {**p["ae"], "epochs": 2, "batch_size": p["batch"]}, device)
    rows.append({"model": "extractor (autoencoder)", "params_M": sum(q.numel() for q in ae.parameters()) / 1e6,
                 "step_img_s": ae_step, "epoch_img_s": len(data.index("train")) / h["seconds"].iloc[-1]})

    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, preset {args.preset}: {p['n']} windows of {p['img']} px, batch {p['batch']}, fp32")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:,.1f}"))


if __name__ == "__main__":
    main()
