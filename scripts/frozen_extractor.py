"""Check a frozen encoder's weights (they load whole, before any window is embedded) and record its settings;
the embed_study job rebuilds it from them (the weights stay in their own file)."""

import torch

from histexpr.train.extractor import DEFAULTS, build_extractor
from histexpr.utils import atomic_path, setup_logging

log = setup_logging(snakemake.log[0])

params = {**DEFAULTS, **snakemake.params.extractor}
model = build_extractor(params)  # a missing or mismatched checkpoint stops here, naming the file
log.info("extractor %s: a frozen encoder, %d-dimensional, %d px input; nothing to train", params["kind"], model.dim,
         model.input_px)
with atomic_path(snakemake.output.model, suffix=".pt") as tmp:
    torch.save({"kind": params["kind"], "params": params, "state_dict": None}, tmp)
