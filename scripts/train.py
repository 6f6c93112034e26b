"""Train one model on one fold, select it on validation, predict the test windows (fold 0 has none)."""
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from histexpr.data.fold import FoldData
from histexpr.data.windows import tile_sample
from histexpr.models import get_model
from histexpr.models.catalog import split_run
from histexpr.models.weights import fitted_state
from histexpr.train.loop import TrainConfig, fit, latent, predict
from histexpr.utils import (
    atomic_path,
    duration,
    progress,
    resolve_device,
    seed_everything,
    set_threads,
    setup_logging,
    write_h5ad,
    write_table,
)

log = setup_logging(snakemake.log[0])

name, fold, protocol = snakemake.wildcards.model, int(snakemake.wildcards.fold), snakemake.wildcards.protocol
spec = get_model(split_run(name)[0])
cfg = TrainConfig.from_dict(snakemake.params.train)
set_threads(snakemake.threads)
seed_everything(cfg.seed)
inp = snakemake.input
tiles = {tile_sample(p): p for p in inp.tiles} if "tiles" in inp.keys() else None
data = FoldData.load(inp.expression, window_paths=tiles, embeddings=inp.get("embeddings"),
                     exemplars=inp.get("exemplars"))
test_rows = data.index("test")
log.info("%s, %s targets, fold %d: %d genes; train/val/test windows %d/%d/%d", name, protocol, fold, data.n_genes,
         len(data.index("train")), len(data.index("val")), len(test_rows))
if fold == 0:
    log.info("fold 0 trains on every patient for predict: no test windows, so predictions.h5ad is empty")

if spec.kind == "neural":
    device = resolve_device(cfg.device)
    params = snakemake.params.model_params
    n_ex = params.get("n_exemplars")
    if n_ex and data.exemplar_index is not None and n_ex > data.exemplar_index.shape[1]:
        raise ValueError(f"{name}: n_exemplars = {n_ex} but the exemplar index holds {data.exemplar_index.shape[1]} "
                         f"per window; raise exemplars.k")
    model = spec.factory(data.n_genes, params, img_size=snakemake.params.window_px,
                         d_code=None if data.embeddings is None else data.embeddings.shape[1])
    log.info("%s: %.2fM parameters, training on %s", name, sum(p.numel() for p in model.parameters()) / 1e6, device)
    model, history = fit(model, data, cfg, device)
    pred = predict(model, data, test_rows, cfg, device)
    features = latent(model, data, test_rows, cfg, device)
    with atomic_path(snakemake.output.model, suffix=".pt") as tmp:
        torch.save({"model": name, "params": snakemake.params.model_params, "genes": list(data.genes),
                    "state_dict": model.state_dict()}, tmp)
else:
    started = time.time()
    model = spec.factory(snakemake.params.model_params).fit(data)
    pred = model.predict(data, test_rows)
    n_fit = getattr(model, "n_fit_windows", len(data.index("train")))
    progress.info("fitted on %d windows%s, %d test windows predicted (%s)", n_fit,
                  " (training + validation, after validation chose alpha)" if n_fit > len(data.index("train")) else "",
                  len(test_rows), duration(time.time() - started))
    features = None
    note = getattr(model, "note", None)  # what a reader of the table should know (probe that equals ridge)
    history = pd.DataFrame([{"epoch": 0, "note": note or f"{name} is fitted without gradient training"}])
    with atomic_path(snakemake.output.model, suffix=".pt") as tmp:  # tensors and plain values: loads weights_only
        torch.save({"model": name, "params": snakemake.params.model_params, "genes": list(data.genes),
                    "fitted": fitted_state(model)}, tmp)

test = data.adata[test_rows]
out = ad.AnnData(X=pred.astype(np.float32), obs=test.obs.copy(), var=test.var.copy())
out.layers["truth"] = np.asarray(test.X, dtype=np.float32)
out.obsm["spatial"] = np.asarray(test.obsm["spatial"])
if features is not None:
    out.obsm["X_latent"] = features  # the representation the model's head reads (EGN: [h^T, AttPool(Z^T)])
out.uns["model"], out.uns["fold"], out.uns["protocol"] = name, fold, protocol
out.uns["normalisation"] = dict(data.adata.uns.get("normalisation", {}))  # with var min/max: expression units
if spec.kind != "neural" and note:
    out.uns["note"] = note
out.uns["spatial"] = {}
for path in inp.samples:
    sample = Path(path).stem
    if sample in set(test.obs["sample"].astype(str)):
        out.uns["spatial"].update(ad.read_h5ad(path, backed="r").uns.get("spatial", {}))
write_table(history, snakemake.output.history)
write_h5ad(out, snakemake.output.predictions)
