"""Embed every window of the study with the fold's extractor (its global view)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

from histexpr.data.windows import WindowStore  # noqa: E402
from histexpr.models.weights import load_checkpoint  # noqa: E402
from histexpr.train.extractor import load_extractor  # noqa: E402
from histexpr.train.extractor import embed  # noqa: E402
from histexpr.utils import resolve_device, set_threads, write_npy  # noqa: E402

set_threads(snakemake.threads)
ckpt = load_checkpoint(snakemake.input.model)
model = load_extractor(ckpt)
log.info("extractor: %s, %d-dimensional global view", ckpt.get("kind", "autoencoder"), model.dim)
windows = WindowStore(snakemake.input.tiles)
emb = embed(model, windows, resolve_device(snakemake.params.device))
log.info("embedded %d windows into %d dimensions", *emb.shape)
write_npy(emb, snakemake.output[0])
