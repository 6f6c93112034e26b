"""EGN vs ViT vs knn (vs the colour floor) on a tiled study, end to end, on one GPU machine.

The workflow needs Snakemake, AnnData, FAISS and OpenSlide; a lent GPU machine
may have only torch and timm. This script splits the work:

``bundle`` (where the workflow ran): reads ``results/<study>/`` (``samples.tsv``,
``samples/*.h5ad``, ``tiles/*.npy``), builds the folds and both target protocols
with the library, and writes one ``.npz`` with the windows JPEG-encoded (small
enough to copy).

``run`` (anywhere with torch + timm + lpips): per fold, trains EGN's StyleGAN
extractor on the training windows, embeds every window, retrieves exemplars by
exact search (no FAISS), then trains and evaluates the models under each
protocol, and prints the table (PCC@M mean ± sd over folds, margin over
``colour_ridge`` with a paired bootstrap interval).

    python benchmarks/egn_her2st.py bundle results/her2st her2st.npz --level patient
    python benchmarks/egn_her2st.py run her2st.npz --preset paper --protocols raw --out out/
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

log = logging.getLogger("egn_her2st")

PRESETS = {
    # the EGN paper / released code: ViT patch 32, width 1024, depth 8, 16 heads, MLP 4096; EB 8 x 64 every 2
    "paper": dict(
        extractor=dict(kind="stylegan", input_px=128, dim=512, width=32, cap=256, epochs=30, batch_size=64,
                       lr=1e-3, lpips="random"),
        train=dict(epochs=50, batch_size=32, lr=5e-4, weight_decay=1e-4, warmup_epochs=1, patience=10),
        vit=dict(patch_size=32, embed_dim=1024, depth=8, num_heads=16, mlp_ratio=4.0, drop_path=0.1),
        egn=dict(patch_size=32, embed_dim=1024, depth=8, num_heads=16, mlp_ratio=4.0, drop_path=0.1, eb_heads=8,
                 eb_head_dim=64, frequency=2, n_exemplars=9),
    ),
    "tiny": dict(
        extractor=dict(kind="stylegan", input_px=16, dim=8, width=4, cap=16, epochs=1, batch_size=16, lpips="off"),
        train=dict(epochs=1, batch_size=8, patience=1),
        vit=dict(patch_size=16, embed_dim=16, depth=1, num_heads=2),
        egn=dict(patch_size=16, embed_dim=16, depth=2, num_heads=2, eb_heads=2, eb_head_dim=4, frequency=1,
                 n_exemplars=3),
    ),
}


def bundle(results: Path, out: Path, level: str, val_fraction: float, top_n: int, max_windows: int | None) -> None:
    import anndata as ad
    from PIL import Image

    from histexpr.data.expression import build_fold_expression
    from histexpr.data.folds import make_folds

    sheet = pd.read_csv(results / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    adatas, tiles = {}, []
    for s in sheet["sample"]:
        a = ad.read_h5ad(results / "samples" / f"{s}.h5ad")
        t = np.load(results / "tiles" / f"{s}.npy")
        if max_windows:
            a, t = a[:max_windows].copy(), t[:max_windows]
        adatas[s] = a
        tiles.append(t)
    windows = np.concatenate(tiles)
    spots = pd.concat([a.obs.assign(obs_name=a.obs_names) for a in adatas.values()], ignore_index=True)
    folds = make_folds(sheet, spots, {"level": level, "k": "loo", "val_fraction": val_fraction, "seed": 0})
    arrays = {}
    for f, table in folds.groupby("fold"):
        for protocol in ("raw", "library_size"):
            e = build_fold_expression(adatas, table, {"top_n": top_n, "log1p": True, "target_sum": 1e4},
                                      protocol=protocol)
            arrays[f"targets_{f}_{protocol}"] = np.asarray(e.X, np.float32)
        arrays[f"split_{f}"] = e.obs["split"].to_numpy().astype(str)
    encoded = []
    for w in windows:
        buf = io.BytesIO()
        Image.fromarray(w).save(buf, format="JPEG", quality=95)
        encoded.append(np.frombuffer(buf.getvalue(), np.uint8))
    np.savez(out, jpeg=np.concatenate(encoded), offsets=np.cumsum([0] + [len(b) for b in encoded]),
             patient=e.obs["patient"].to_numpy().astype(str), sample=e.obs["sample"].to_numpy().astype(str),
             genes=np.asarray(e.var_names, dtype=str), folds=np.array(sorted(folds["fold"].unique())), **arrays)
    print(f"{out}: {len(windows)} windows of {windows.shape[1]} px, {len(e.var_names)} genes, "
          f"{folds['fold'].nunique()} folds ({level} level), {os.path.getsize(out) / 1e6:.1f} MB")


def decode(z) -> np.ndarray:
    from PIL import Image

    jpeg, off = z["jpeg"], z["offsets"]
    return np.stack([np.asarray(Image.open(io.BytesIO(jpeg[off[i]:off[i + 1]].tobytes())).convert("RGB"))
                     for i in range(len(off) - 1)])


def _save(out: Path, rows: list, preds: dict) -> None:
    pd.DataFrame(rows).to_csv(out / "per_fold.tsv", sep="\t", index=False)
    np.savez_compressed(out / "predictions.npz", **{f"{m}|{p}|{f}|{part}": v[i] for (m, p, f), v in preds.items()
                                                   for i, part in ((1, "truth"), (2, "pred"), (3, "sample"))})


def load_predictions(paths: list[Path]) -> dict:
    """``{(model, protocol, fold): (ids, truth, pred, sample)}`` from one or more runs' ``predictions.npz``."""
    out = {}
    for path in paths:
        z = np.load(path)
        for key in z.files:
            m, p, f, part = key.split("|")
            if part == "truth":
                t = z[key]
                out[(m, p, int(f))] = (np.arange(len(t)), t, z[f"{m}|{p}|{f}|pred"], z[f"{m}|{p}|{f}|sample"])
    return out


def run(path: Path, preset: str, protocols: list[str], models: list[str], out: Path, exclude: str,
        n_boot: int, only_folds: list[int] | None = None) -> pd.DataFrame:
    import torch

    from histexpr.data.fold import FoldData
    from histexpr.metrics import margins_over_reference, summarise
    from histexpr.models import get_model
    from histexpr.retrieval.exemplars import exact_search
    from histexpr.train.extractor import embed, train_extractor
    from histexpr.train.loop import TrainConfig, fit, predict
    from histexpr.utils import seed_everything

    cfg = PRESETS[preset]
    z = np.load(path)
    windows = decode(z)
    groups = z["patient"] if exclude == "patient" else z["sample"]
    genes = z["genes"].tolist()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{len(windows)} windows {windows.shape[1:]} on {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), torch {torch.__version__}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rows, preds = [], {}
    for f in z["folds"].tolist():
        if only_folds and f not in only_folds:
            continue
        split = z[f"split_{f}"]
        train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
        cache = out / f"embeddings_fold{f}.npy"
        t0 = time.time()
        if cache.exists():
            emb = np.load(cache)
        else:
            seed_everything(0)
            extractor, hist = train_extractor(windows, train_rows, val_rows, cfg["extractor"], device, seed=0)
            emb = embed(extractor, windows, device)
            np.save(cache, emb)
            last = hist.iloc[-1]
            print(f"fold {f}: extractor {len(hist)} epochs, final train L1 {last['train_l1']:.4f}, LPIPS "
                  f"{last['train_lpips']:.4f}, F {last['train_d']:.3f}; worst epoch L1 {hist['train_l1'].max():.4f}; "
                  f"val L1 first {hist['val_l1'].iloc[0]:.4f}, best {hist['val_l1'].min():.4f}", flush=True)
        pool = train_rows
        local, dist = exact_search(emb[pool], emb, groups, groups[pool], 9, "l2")
        ex_idx = np.where(local >= 0, pool[np.where(local >= 0, local, 0)], -1)
        print(f"fold {f}: extractor + retrieval {time.time() - t0:.0f} s; windows without exemplars "
              f"{int((ex_idx[:, 0] < 0).sum())}", flush=True)
        for protocol in protocols:
            data = FoldData(z[f"targets_{f}_{protocol}"], split, genes, windows, emb, ex_idx, dist)
            test = data.index("test")
            for name in models:
                t0 = time.time()
                seed_everything(0)
                spec = get_model(name)
                if spec.kind == "neural":
                    tc = TrainConfig.from_dict(cfg["train"])
                    params = cfg["egn" if name.startswith("egn") else name]
                    model = spec.factory(len(genes), params, img_size=windows.shape[1], d_code=emb.shape[1])
                    model, hist = fit(model, data, tc, device)
                    pred = predict(model, data, test, tc, device)
                    epochs = int(hist["epoch"].max())
                    del model
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                else:
                    pred = spec.factory({}).fit(data).predict(data, test)
                    epochs = 0
                m = summarise(data.targets[test], pred)
                seconds = time.time() - t0
                rows.append({"model": name, "protocol": protocol, "fold": f, "epochs": epochs,
                             "seconds": round(seconds, 1), **{k: m[k] for k in ("MSE", "MAE", "PCC@F", "PCC@S",
                                                                                 "PCC@M")}})
                preds[(name, protocol, f)] = (np.arange(len(test)), data.targets[test], pred, z["sample"][test])
                print(f"fold {f} {protocol:12s} {name:14s} PCC@M {m['PCC@M']:.3f}  ({epochs} epochs, {seconds:.0f} s)",
                      flush=True)
                _save(out, rows, preds)  # after every model: a run cut short keeps what it finished
    per_fold = pd.DataFrame(rows)
    table = (per_fold.groupby(["model", "protocol"], sort=False)
             .agg(**{m: (m, "mean") for m in ("MSE", "MAE", "PCC@F", "PCC@S", "PCC@M")},
                  PCC_M_sd=("PCC@M", "std"), n_folds=("fold", "nunique"), seconds=("seconds", "sum"))
             .reset_index())
    if "colour_ridge" in models:
        margins = margins_over_reference(preds, "colour_ridge", n_boot=n_boot)
        table = table.merge(margins[margins["evaluation"] == "pooled"].drop(columns=["evaluation", "n_boot"]),
                            on=["model", "protocol"], how="left")
    table.to_csv(out / "table.tsv", sep="\t", index=False)
    print("settings:", json.dumps({"preset": cfg, "exclude": exclude}))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return table


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("results", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--level", choices=["patient", "sample"], default="patient")
    b.add_argument("--val-fraction", type=float, default=0.2)
    b.add_argument("--top-n", type=int, default=250)
    b.add_argument("--max-windows", type=int, default=None, help="per sample (smoke tests)")
    r = sub.add_parser("run")
    r.add_argument("bundle", type=Path)
    r.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    r.add_argument("--protocols", nargs="+", default=["raw", "library_size"])
    r.add_argument("--models", nargs="+", default=["colour_ridge", "knn", "vit", "egn"])
    r.add_argument("--exclude", choices=["patient", "sample"], default="sample",
                   help="exemplars never from the query's own ... (sample: needed when one patient trains)")
    r.add_argument("--bootstrap", type=int, default=1000)
    r.add_argument("--folds", type=int, nargs="+", default=None, help="only these folds")
    r.add_argument("--out", type=Path, default=Path("results/egn_her2st"))
    a = ap.parse_args(argv)
    if a.cmd == "bundle":
        bundle(a.results, a.out, a.level, a.val_fraction, a.top_n, a.max_windows)
    else:
        run(a.bundle, a.preset, a.protocols, a.models, a.out, a.exclude, a.bootstrap, a.folds)


if __name__ == "__main__":
    main()
