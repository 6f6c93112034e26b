"""Training throughput of the workflow's models, through the library's own training code.

For each model (egn, vit, stnet, tcgn, and the lymphoma classifier ats), images/s of
* the training step alone: one batch gathered from the device-resident fold, forward, loss, backward,
  optimiser step (the loop's own make_batch, autocast and optimiser settings);
* whole epochs through :func:`histexpr.train.loop.fit` (windows uint8 on the device, augmentation and
  normalisation there, validation included; the second epoch is timed);
* the bare timm backbone of the same size (ViT of the same width and depth for egn/vit, DenseNet-121 for
  stnet), its step alone, in the same run; ``ratio`` = the model's step / the bare step.
Prints a table; no thresholds (run it on the machine you care about).

    python benchmarks/train_throughput.py --preset tiny                        # CPU smoke run
    python benchmarks/train_throughput.py --preset paper --precision bf16      # GPU: the papers' sizes
    python benchmarks/train_throughput.py --preset paper --precision bf16 --compile
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
import timm
import torch

from histexpr.data.fold import FoldData
from histexpr.models import get_model
from histexpr.models.ats import build_classifier
from histexpr.train.classify import ClassifyConfig, forward, step_loss
from histexpr.train.loop import DeviceFold, TrainConfig, fit, make_batch, resolve_speed
from histexpr.train.losses import mse_pcc_loss
from histexpr.utils import resolve_device

VIT_PAPER = dict(patch_size=32, embed_dim=1024, depth=8, num_heads=16, mlp_ratio=4.0)  # EGN's released ViT
PRESETS = {
    # img px, windows, genes, batch, model settings, exemplars k, embedding dim, megapixel side for ats
    "tiny": dict(img=64, n=128, genes=50, batch=32, k=4, d=32, mega=256, ats_batch=4,
                 models={"vit": dict(patch_size=8, embed_dim=96, depth=4, num_heads=4),
                         "egn": dict(patch_size=8, embed_dim=96, depth=4, num_heads=4, eb_heads=4, eb_head_dim=16,
                                     frequency=2, n_exemplars=4),
                         "stnet": {},
                         "tcgn": dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                                      fc_dim=64, gnn_out=16),
                         "ats": "ats-p15-n5"}),
    "paper": dict(img=224, n=8192, genes=250, batch=256, k=9, d=512, mega=2048, ats_batch=16,
                  models={"vit": VIT_PAPER,
                          "egn": dict(VIT_PAPER, eb_heads=16, eb_head_dim=64, frequency=2, n_exemplars=9),
                          "stnet": {},
                          "tcgn": {},  # the authors' dims (22.6 M parameters)
                          "ats": "ats-p50-n10"}),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_rate(model, batch, device, steps, speed, warmup=3):
    """Images/s of forward + MSE/PCC loss + backward + AdamW step on one resident batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if speed["fused_adamw"] else {}))
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed["bf16"]):
            out = model(batch)
        loss, _ = mse_pcc_loss(out.float(), batch["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * batch["target"].shape[0] / (time.perf_counter() - t0)


class Bare(torch.nn.Module):
    """A timm backbone behind the workflow's batch interface."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, batch):
        return self.net(batch["image"])


def bare_backbone(name: str, params: dict, genes: int, img: int):
    if name in ("vit", "egn"):
        return Bare(timm.models.vision_transformer.VisionTransformer(
            img_size=img, patch_size=params["patch_size"], embed_dim=params["embed_dim"], depth=params["depth"],
            num_heads=params["num_heads"], mlp_ratio=params.get("mlp_ratio", 4.0), num_classes=genes))
    if name == "stnet":
        return Bare(timm.create_model("densenet121", pretrained=False, num_classes=genes))
    return None  # tcgn has no timm counterpart


def ats_rate(setting, p, device, steps, speed, warmup=2):
    """Images/s of the attention-sampling classifier's step on megapixel images resident on the device."""
    model = build_classifier(setting, 3).to(device)
    cfg = ClassifyConfig(view_scale=0.25)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(p["ats_batch"], 3, p["mega"], p["mega"], generator=gen).to(device)
    y = torch.randint(0, 3, (p["ats_batch"],), generator=gen).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed["bf16"]):
            logits, a, idx = forward(model, x, cfg, gen)
        loss, _ = step_loss(model, logits.float(), y, None if a is None else a.float(), idx, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * p["ats_batch"] / (time.perf_counter() - t0), sum(q.numel() for q in model.parameters()) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile each model (and bare backbone)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2, help="whole epochs through fit(); the last is timed")
    ap.add_argument("--models", nargs="+", default=["egn", "vit", "stnet", "tcgn", "ats"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    p = PRESETS[args.preset]
    device = resolve_device(args.device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 256, (p["n"], p["img"], p["img"], 3), dtype=np.uint8)
    targets = rng.uniform(size=(p["n"], p["genes"])).astype(np.float32)
    split = np.where(np.arange(p["n"]) < int(0.9 * p["n"]), "train", "val")
    emb = rng.normal(size=(p["n"], p["d"])).astype(np.float32)
    ex = rng.integers(0, int(0.9 * p["n"]), (p["n"], p["k"]))
    data = FoldData(targets, split, [f"g{i}" for i in range(p["genes"])], windows=windows, embeddings=emb,
                    exemplar_index=ex, exemplar_distance=np.zeros(ex.shape, np.float32))
    cfg = TrainConfig(epochs=args.epochs, batch_size=p["batch"], eval_batch_size=p["batch"], warmup_epochs=0.2,
                      patience=100, precision=args.precision, compile=args.compile, windows_on_device=True,
                      channels_last="auto", fused_adamw="auto")
    speed = resolve_speed(cfg, device, windows.nbytes)
    fold = DeviceFold(data, device, windows=True)
    batch = make_batch(fold, np.arange(p["batch"]), device, True, torch.Generator().manual_seed(0),
                       channels_last=speed["channels_last"])
    rows = []
    for name in args.models:
        params = p["models"][name]
        if name == "ats":
            rate, size = ats_rate(params, p, device, args.steps, speed)
            rows.append({"model": f"ats ({params}, {p['mega']} px)", "params_M": size, "step_img_s": rate})
            continue
        def make(name=name, params=params):
            return get_model(name).factory(p["genes"], params, img_size=p["img"], d_code=p["d"])

        model = make().to(device)
        if speed["channels_last"]:
            model.to(memory_format=torch.channels_last)
        step = step_rate(torch.compile(model) if args.compile else model, batch, device, args.steps, speed)
        _, hist = fit(make(), data, cfg, device)
        n_train = (len(data.index("train")) // p["batch"]) * p["batch"]
        row = {"model": name, "params_M": sum(q.numel() for q in model.parameters()) / 1e6, "step_img_s": step,
               "epoch_img_s": n_train / hist["seconds"].iloc[-1]}
        row["epoch/step"] = row["epoch_img_s"] / step
        bare = bare_backbone(name, params, p["genes"], p["img"])
        if bare is not None:
            bare = bare.to(device)
            row["bare_step_img_s"] = step_rate(torch.compile(bare) if args.compile else bare, batch, device,
                                               args.steps, speed)
            row["step/bare"] = step / row["bare_step_img_s"]
        rows.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device} ({name}), torch {torch.__version__}, preset {args.preset}: {p['n']} windows of "
          f"{p['img']} px, batch {p['batch']}, {args.precision}{' + compile' if args.compile else ''}; "
          f"speed settings {speed}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:,.2f}", na_rep="-"))


if __name__ == "__main__":
    main()
