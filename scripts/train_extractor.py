"""Train the unsupervised extractor on the fold's training windows."""

import anndata as ad
import numpy as np
import torch

from histexpr.data.windows import WindowStore
from histexpr.train.extractor import DEFAULTS, FIXED_KINDS, train_extractor
from histexpr.utils import atomic_path, resolve_device, seed_everything, set_threads, setup_logging, write_table

log = setup_logging(snakemake.log[0])

set_threads(snakemake.threads)
seed_everything(snakemake.params.seed)
obs = ad.read_h5ad(snakemake.input.expression, backed="r").obs
windows = WindowStore(snakemake.input.tiles)
assert len(windows) == len(obs), "tiles and fold expression disagree"
split = obs["split"].to_numpy()
params = {**DEFAULTS, **snakemake.params.extractor}
device = resolve_device(snakemake.params.device)
train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
log.info("extractor %s on %s: %d training, %d validation windows (test windows unseen)", params, device,
         len(train_rows), len(val_rows))
model, history = train_extractor(windows, train_rows, val_rows, params, device, seed=snakemake.params.seed)
with atomic_path(snakemake.output.model, suffix=".pt") as tmp:
    # fixed ImageNet feature spaces are rebuilt from the torch hub cache; only trained weights are saved
    state = None if params["kind"] in FIXED_KINDS else model.state_dict()
    torch.save({"kind": params["kind"], "params": params, "state_dict": state}, tmp)
write_table(history, snakemake.output.history)
