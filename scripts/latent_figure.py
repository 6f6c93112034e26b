"""EGN Fig. 6: t-SNE of the models' representations of one fold's test windows."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

import anndata as ad  # noqa: E402

from histexpr.errors import InputError  # noqa: E402
from histexpr.plots import latent_figure  # noqa: E402
from histexpr.utils import write_table  # noqa: E402

latents = {}
for model, path in zip(snakemake.params.models, snakemake.input):
    a = ad.read_h5ad(path)
    if "X_latent" not in a.obsm:
        raise InputError(path, "predictions carry no obsm['X_latent'] (trained by an older version); rerun training")
    latents[model] = a
table = latent_figure(latents, snakemake.output.figure, seed=snakemake.params.seed)
log.info("expression clusters in each representation:\n%s", table.to_string(index=False))
write_table(table, snakemake.output.table)
