"""From five sections to a million windows: what each stage costs as a study grows.

One table, one row per study size N (windows; d = 512 embeddings, 20 patients, k = 9):

* ``exact_s``: the workflow's exact search (FAISS flat + the own-patient selector), every window against every
  other patient's windows. Above ``--exact-queries`` windows it is timed on that many random queries and scaled
  by N / queries (its cost is linear in the queries; ``exact_from`` says how many were timed).
* ``<index>_s``: the approximate index (build + search of all N queries), ``<index>_recall@9`` against the exact
  neighbours of the same random queries, and ``<index>_speedup`` = exact_s / <index>_s. The exclusion rule is
  asserted on every returned exemplar.
* Rows marked ``projected`` are not measured: a power law through the two largest measured sizes (exact: N^2).

Then, per window (independent of N): tiling windows/s (a real HER2ST image when ../shared/data is there, else a
synthetic slide), bytes per window in each store (npy, jpeg at ``--quality``, with its PSNR), store read windows/s
(random batches of 32), and the CPU training step it feeds (the HER2ST config's ViT at 224 px).

The embeddings are synthetic: a mixture of 256 clusters in a 16-dimensional latent space mapped linearly to 512
dimensions, plus isotropic noise and a per-patient shift, so neighbours have structure as extractor embeddings do.
Uniform random 512-d vectors have none, and no approximate index does well on them.

    python benchmarks/scale.py                 # 10k, 100k and 300k measured, 1M projected (~10 min on 2 cores)
    python benchmarks/scale.py --sizes 10000 100000 1000000   # measure 1M too
    python benchmarks/scale.py --quick         # CI smoke: 2k and 5k windows, tiny per-window checks
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from histexpr.data.windows import WindowStore, psnr, write_windows
from histexpr.retrieval.exemplars import build_index, recall_at_k, search_exemplars

REPO = Path(__file__).resolve().parents[1]
HER2ST = REPO.parent / "shared" / "data" / "her2st"


def synthetic_study(n: int, d: int = 512, patients: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, d)`` float32 embeddings with low-dimensional cluster structure and their patient of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, 16)) * 2.0
    latent = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, 16))
    patient = rng.integers(0, patients, n)
    shift = rng.normal(size=(patients, 16)) * 0.5
    x = (latent + shift[patient]) @ rng.normal(size=(16, d)) / 4 + 0.5 * rng.normal(size=(n, d))
    return x.astype(np.float32), np.array([f"P{i:02d}" for i in range(patients)])[patient]


def search_row(n: int, indexes: list[str], exact_queries: int, k: int = 9, nprobe: int = 32) -> dict:
    emb, patient = synthetic_study(n)
    rng = np.random.default_rng(1)
    q = np.sort(rng.permutation(n)[:min(n, exact_queries)])
    row = {"N": n, "measured": "yes"}
    t0 = time.perf_counter()
    flat = build_index(emb, "l2", "flat")
    exact, _ = search_exemplars(flat, emb[q], patient[q], patient, k)
    row["exact_s"] = (time.perf_counter() - t0) * n / len(q)
    row["exact_from"] = f"{len(q)} q" if len(q) < n else "all"
    del flat
    for kind in indexes:
        t0 = time.perf_counter()
        index = build_index(emb, "l2", kind, nprobe=nprobe)
        t_build = time.perf_counter() - t0
        idx, _ = search_exemplars(index, emb, patient, patient, k)
        row[f"{kind}_s"] = time.perf_counter() - t0
        row[f"{kind}_build_s"] = t_build
        assert (idx >= 0).all(), f"{kind}: a query got fewer than {k} exemplars"
        assert (patient[idx] != patient[:, None]).all(), f"{kind}: an exemplar from the query's own patient"
        row[f"{kind}_recall@{k}"] = recall_at_k(idx[q], exact)
        del index
    for kind in indexes:
        row[f"{kind}_speedup"] = row["exact_s"] / row[f"{kind}_s"]
    print(f"  N = {n:,}: " + ", ".join(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}"
                                         for key, v in row.items() if key != "N"), flush=True)
    return row


def project(rows: list[dict], n: int) -> dict:
    """Seconds at ``n`` from a power law through the largest two measured sizes (exact: N^2)."""
    a, b = rows[-2], rows[-1]
    out = {"N": n, "measured": "projected"}
    for key, v in b.items():
        if key.endswith("_s") and isinstance(v, float):
            if key == "exact_s":
                out[key] = v * (n / b["N"]) ** 2
            else:
                slope = np.log(v / a[key]) / np.log(b["N"] / a["N"])
                out[key] = v * (n / b["N"]) ** slope
    for key in [k for k in out if k.endswith("_s") and k != "exact_s" and not k.endswith("build_s")]:
        out[key.removesuffix("_s") + "_speedup"] = out["exact_s"] / out[key]
    return out


def real_or_synthetic_windows(n: int, px: int = 224) -> tuple[np.ndarray, str, float]:
    """``n`` windows cut from HER2ST C2 when the shared data is here (else a synthetic slide) and tiling
    windows/s."""
    from histexpr.data.tiling import tile_spots
    from histexpr.io.image import open_image

    rng = np.random.default_rng(0)
    images = sorted((HER2ST / "data" / "ST-imgs" / "C" / "C2").glob("*.jpg")) if HER2ST.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        if images:
            path, what = images[0], "HER2ST C2"
            spots = pd.read_csv(HER2ST / "data" / "ST-spotfiles" / "C2_selection.tsv", sep="\t")
            xy = spots[["pixel_x", "pixel_y"]].to_numpy(float)
            xy = xy[rng.integers(0, len(xy), n)] + rng.uniform(-60, 60, (n, 2))
            um_per_px = 0.74
        else:
            from PIL import Image

            img = np.full((3000, 3000, 3), (225, 150, 190), np.uint8)
            ys, xs = rng.integers(0, 3000, 60000), rng.integers(0, 3000, 60000)
            img[ys, xs] = (70, 40, 120)
            path, what = Path(tmp) / "slide.png", "synthetic slide"
            Image.fromarray(img).save(path)
            xy = rng.uniform(200, 2800, (n, 2))
            um_per_px = 0.5
        slide = open_image(path)
        slide.read(0, 0, 8, 8)  # the decode of a whole-image JPEG, once, outside the timing
        t0 = time.perf_counter()
        res = tile_spots(slide, xy, um_per_px, window_px=px, min_tissue=0.0)
        rate = len(xy) / (time.perf_counter() - t0)
    return res.windows, what, rate


def store_rows(windows: np.ndarray, quality: int, vit_steps: int, batch: int = 32) -> list[dict]:
    from histexpr.data.fold import FoldData
    from histexpr.data.windows import decode_jpeg, encode_jpeg
    from histexpr.models import get_model
    from histexpr.train.loop import make_batch
    from histexpr.train.losses import mse_pcc_loss

    rows = []
    rng = np.random.default_rng(2)
    n = len(windows)
    decode_jpeg(encode_jpeg(windows[:2]))  # load the codec once, outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        for store in ("npy", "jpeg"):
            path = Path(tmp) / ("w.npy" if store == "npy" else "w.jpg.h5")
            t0 = time.perf_counter()
            stats = write_windows(windows, path, store, quality)
            write_rate = n / (time.perf_counter() - t0)
            ws = WindowStore([path])
            reads = [rng.integers(0, n, batch) for _ in range(max(4, 2 * n // batch))]
            t0 = time.perf_counter()
            for r in reads:
                ws[r]
            read_rate = len(reads) * batch / (time.perf_counter() - t0)
            row = {"store": store if store == "npy" else f"jpeg q{quality}", "bytes/window": stats["bytes"] / n,
                   "% of uint8": 100 * stats["bytes"] / stats["uint8_bytes"], "write win/s (PSNR checked)": write_rate,
                   "read win/s": read_rate,
                   "PSNR dB (min)": "lossless" if store == "npy"
                   else f"{stats['psnr_mean_db']:.1f} ({stats['psnr_min_db']:.1f})"}
            back = ws[np.arange(n)]
            assert store != "npy" or np.array_equal(back, windows)
            assert store == "npy" or abs(psnr(windows, back).min() - stats["psnr_min_db"]) < 1e-6
            if vit_steps:
                # the CPU training step this store feeds: HER2ST config's ViT, 224 px, batch 32, reads included
                torch.manual_seed(0)
                px = windows.shape[1]
                model = get_model("vit").factory(250, dict(patch_size=16, embed_dim=192, depth=6, num_heads=3),
                                                 img_size=px, d_code=None)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                data = FoldData(np.zeros((n, 250), np.float32), np.array(["train"] * n), [str(i) for i in range(250)],
                                ws)
                gen = torch.Generator().manual_seed(0)
                times = []
                for i in range(vit_steps + 1):
                    t0 = time.perf_counter()
                    b = make_batch(data, reads[i % len(reads)], torch.device("cpu"), True, gen)
                    loss, _ = mse_pcc_loss(model(b), b["target"])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    times.append(time.perf_counter() - t0)
                row["CPU vit step img/s (reads incl.)"] = batch / np.median(times[1:])
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    ap.add_argument("--project", type=int, nargs="*", default=[1_000_000], help="sizes projected, not measured")
    ap.add_argument("--indexes", nargs="+", default=["ivf", "hnsw"], choices=["ivf", "hnsw"])
    ap.add_argument("--exact-queries", type=int, default=2000)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--windows", type=int, default=512, help="windows for the per-window figures")
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--vit-steps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="CI smoke: 2k and 5k windows, 64 tiny windows")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.project, args.windows, args.vit_steps, args.exact_queries = [2000, 5000], [1_000_000], 64, 1, 500
    threads = torch.get_num_threads()
    print(f"exemplar search: d = 512, 20 patients, k = 9, nprobe {args.nprobe}; {threads} threads", flush=True)
    rows = [search_row(n, args.indexes, args.exact_queries, nprobe=args.nprobe) for n in args.sizes]
    rows += [project(rows, n) for n in args.project if n not in args.sizes]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.3f}" if v < 10 else f"{v:,.0f}"))
    print()
    windows, what, tile_rate = real_or_synthetic_windows(args.windows)
    print(f"tiling: {tile_rate:,.0f} windows/s ({len(windows)} windows of 224 px cut from {what})", flush=True)
    store = pd.DataFrame(store_rows(windows, args.quality, args.vit_steps))
    print(store.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))


if __name__ == "__main__":
    main()
