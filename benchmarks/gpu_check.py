"""GPU figures that need no workflow: path agreement, exemplar search, JPEG decode. Run by gpu_check.sh.

Needs torch, timm, numpy, pandas and Pillow only (no anndata, faiss or snakemake), so it runs on a bare GPU
machine from a checkout (PYTHONPATH=src).

    python benchmarks/gpu_check.py agreement   # the device-resident GPU path vs the CPU host path: same model
    python benchmarks/gpu_check.py search      # exact exemplar search in torch on the GPU at 100k and 1M
    python benchmarks/gpu_check.py decode      # JPEG window store: nvJPEG batch decode vs the CPU
    ... --dry-run                              # the same code on the CPU at tiny sizes (CI smoke)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scale.py's synthetic study

from histexpr.data.fold import FoldData  # noqa: E402
from histexpr.metrics import pearson_per_gene  # noqa: E402
from histexpr.models import get_model  # noqa: E402
from histexpr.retrieval.exemplars import exact_search, recall_at_k, torch_search  # noqa: E402
from histexpr.train.loop import TrainConfig, fit, predict  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_fold(n: int, px: int, genes: int, d: int, k: int, seed: int = 0) -> FoldData:
    """Windows whose colour carries the signal, so a few epochs learn something to agree on."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))
    windows = np.clip(base + rng.normal(0, 40, (n, px, px, 3)), 0, 255).astype(np.uint8)
    colour = windows.mean(axis=(1, 2)) / 255.0
    targets = (colour @ rng.normal(size=(3, genes)) + 0.1 * rng.normal(size=(n, genes))).astype(np.float32)
    n_tr, n_va = int(0.7 * n), int(0.15 * n)
    split = np.array(["train"] * n_tr + ["val"] * n_va + ["test"] * (n - n_tr - n_va))
    emb = rng.normal(size=(n, d)).astype(np.float32)
    ex = rng.integers(0, n_tr, (n, k))
    return FoldData(targets, split, [f"g{i}" for i in range(genes)], windows=windows, embeddings=emb,
                    exemplar_index=ex, exemplar_distance=np.zeros(ex.shape, np.float32))


def agreement(args, device):
    """EGN trained from the same seed on the GPU's device-resident path and on the CPU's host path."""
    cpu = torch.device("cpu")
    tiny = args.dry_run
    px, n = (16, 96) if tiny else (64, 2048)
    params = dict(patch_size=8, embed_dim=32 if tiny else 192, depth=2 if tiny else 4, num_heads=2 if tiny else 3,
                  eb_heads=2 if tiny else 4, eb_head_dim=8 if tiny else 32, frequency=1, n_exemplars=4)
    data = synthetic_fold(n, px, 20, 16, 4)
    test = data.index("test")
    rows = []
    for name, dev, precision, on_device in (("CPU host path, fp32", cpu, "fp32", False),
                                            (f"{device.type} device-resident, fp32", device, "fp32", True),
                                            (f"{device.type} device-resident, bf16", device, "bf16", True)):
        torch.manual_seed(0)
        model = get_model("egn").factory(data.n_genes, params, img_size=px, d_code=16)
        cfg = TrainConfig(epochs=args.epochs, batch_size=32, eval_batch_size=128, lr=1e-3, warmup_epochs=0.5,
                          patience=100, precision=precision, windows_on_device=on_device)
        t0 = time.perf_counter()
        model, hist = fit(model, data, cfg, dev)
        pred = predict(model, data, test, cfg, dev)
        pcc = float(np.nanmean(pearson_per_gene(data.targets[test], pred)))
        rows.append((name, pcc, pred, time.perf_counter() - t0))
    ref = rows[0]
    print(f"agreement: EGN ({params['embed_dim']} wide, {params['depth']} deep), {n} windows of {px} px, "
          f"{args.epochs} epochs, same seed")
    print(f"{'path':34s} {'test PCC@M':>10s} {'|dPCC| vs CPU':>14s} {'max |dpred|':>12s} {'seconds':>8s}")
    for name, pcc, pred, sec in rows:
        print(f"{name:34s} {pcc:10.4f} {abs(pcc - ref[1]):14.4f} {np.abs(pred - ref[2]).max():12.4f} {sec:8.1f}")


def search(args, device):
    """Exact exemplar search by brute force on the device, the kind exemplars.index auto picks on a GPU."""
    from scale import synthetic_study

    sizes = [2000, 5000] if args.dry_run else [100_000, 1_000_000]
    print(f"search: torch exact (exemplars.index torch), d = 512, 20 patients, k = 9, on {device}")
    print(f"{'N':>10s} {'seconds':>8s} {'recall@9 vs numpy exact (500 q)':>32s} {'own patient returned':>21s}")
    for n in sizes:
        emb, patient = synthetic_study(n)
        torch_search(emb[:1000], emb[:64], patient[:64], patient[:1000], 9, "l2", device)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        idx, _ = torch_search(emb, emb, patient, patient, 9, "l2", device, chunk=8192 if device.type == "cuda" else 512)
        sync(device)
        sec = time.perf_counter() - t0
        q = np.random.default_rng(0).permutation(n)[:500]
        ref, _ = exact_search(emb, emb[q], patient[q], patient, 9, "l2", chunk=64)
        own = int((patient[idx] == patient[:, None]).sum())
        print(f"{n:10,d} {sec:8.2f} {recall_at_k(idx[q], ref):32.4f} {own:21d}")
        del emb, idx
        if device.type == "cuda":
            torch.cuda.empty_cache()


def decode(args, device):
    """JPEG windows (tiling.store jpeg) decoded on the device in batches vs on the CPU."""
    from histexpr.data.windows import decode_jpeg, encode_jpeg, psnr

    rng = np.random.default_rng(0)
    n = 64 if args.dry_run else 4096
    base = rng.integers(60, 230, (n, 1, 1, 3))
    windows = np.clip(base + rng.normal(0, 25, (n, 224, 224, 3)), 0, 255).astype(np.uint8)
    blobs = encode_jpeg(windows, 90)
    decode_jpeg(blobs[:4])
    t0 = time.perf_counter()
    cpu = decode_jpeg(blobs)
    cpu_rate = n / (time.perf_counter() - t0)
    line = f"decode: {n} JPEG windows of 224 px, CPU {cpu_rate:,.0f} windows/s ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        decode_jpeg(blobs[:16], device)
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, n, 1024):
            gpu = decode_jpeg(blobs[i:i + 1024], device)
        sync(device)
        rate = n / (time.perf_counter() - t0)
        gpu = decode_jpeg(blobs[:256], device).cpu().numpy()
        line += (f"; {device} {rate:,.0f} windows/s; GPU vs CPU decode: max |diff| "
                 f"{np.abs(gpu.astype(int) - cpu[:256]).max()}, PSNR {psnr(cpu[:256], gpu).min():.1f} dB")
    print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check", choices=["agreement", "search", "decode"])
    ap.add_argument("--dry-run", action="store_true", help="the CPU and tiny sizes")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()
    args.epochs = args.epochs or (1 if args.dry_run else 4)
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if not args.dry_run and device.type != "cuda":
        print("no CUDA device: run with --dry-run for the CPU smoke test", file=sys.stderr)
        sys.exit(2)
    torch.manual_seed(0)
    {"agreement": agreement, "search": search, "decode": decode}[args.check](args, device)


if __name__ == "__main__":
    main()
