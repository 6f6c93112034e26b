"""Write one fold's predictions as a SpatialData store beside its .h5ad (histexpr.io.spatialdata_out)."""

import anndata as ad

from histexpr.io.spatialdata_out import write_spatialdata
from histexpr.utils import setup_logging

log = setup_logging(snakemake.log[0])

pred = ad.read_h5ad(snakemake.input[0])
write_spatialdata(pred, snakemake.output[0])
log.info("%s: %d spots x %d genes of %d section(s) as a SpatialData store (spatialdata.read_zarr opens it)",
         snakemake.output[0], pred.n_obs, pred.n_vars, pred.obs["sample"].nunique())
