"""Embed every window of the study with the fold's extractor (its global view)."""

from histexpr.data.windows import WindowStore
from histexpr.models.weights import load_checkpoint
from histexpr.train.extractor import embed, load_extractor
from histexpr.utils import progress, resolve_device, set_threads, setup_logging, write_npy

log = setup_logging(snakemake.log[0])

set_threads(snakemake.threads)
ckpt = load_checkpoint(snakemake.input.model)
model = load_extractor(ckpt)
log.info("extractor: %s, %d-dimensional global view", ckpt.get("kind", "autoencoder"), model.dim)
windows = WindowStore(snakemake.input.tiles)
emb = embed(model, windows, resolve_device(snakemake.params.device))
progress.info("embedded %d windows into %d dimensions", *emb.shape)
write_npy(emb, snakemake.output[0])
