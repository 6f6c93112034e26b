"""EGN Fig. 6: t-SNE of the models' representations of one fold's test windows."""

import anndata as ad

from histexpr.errors import InputError
from histexpr.plots import latent_figure
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

latents = {}
for model, path in zip(snakemake.params.models, snakemake.input):
    a = ad.read_h5ad(path)
    if "X_latent" not in a.obsm:
        raise InputError(path, "predictions carry no obsm['X_latent'] (trained by an older version); rerun training")
    latents[model] = a
table = latent_figure(latents, snakemake.output.figure, seed=snakemake.params.seed)
log.info("expression clusters in each representation:\n%s", table.to_string(index=False))
write_table(table, snakemake.output.table)
