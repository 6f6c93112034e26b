# Helpers and validation of a spot-size sweep (tiling.spot_sweep).
import copy
import os
import sys

from snakemake.exceptions import WorkflowError

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from histexpr.config import workflow_config
from histexpr.errors import InputError
from histexpr.io.sheet import load_sample_sheet

SCHEMAS = os.path.join(workflow.current_basedir, "..", "schemas")
ENV_DATA = "../../envs/data.yaml"

try:
    config.update(
        workflow_config(
            config,
            os.path.join(SCHEMAS, "config.schema.yaml"),
            workflow.configfiles,
            overrides=workflow.config_settings.config,
        )
    )
except InputError as err:
    raise WorkflowError(f"histexpr error: {err}") from None

R = f"results/{config['study']}"
SPOTS = [f"{s:g}" for s in config["tiling"]["spot_sweep"]]
REFERENCE = config["evaluation"]["reference"]
ORACLE = config["evaluation"]["oracle"]


def _check_sweepable():
    """Only Visium HD bins and Xenium cells are pooled into pseudo-spots of tiling.spot_um: a sweep over any
    other sheet would train the same study several times."""
    source = config["samples"]
    formats = set()
    if isinstance(source, str):
        try:
            formats = set(load_sample_sheet(source, schema=os.path.join(SCHEMAS, "samples.schema.yaml"))["format"])
        except InputError as err:
            raise WorkflowError(f"histexpr error: {err}") from None
    bin_um = config["tiling"]["bin_um"]
    uneven = [s for s in config["tiling"]["spot_sweep"] if s < bin_um or abs(s / bin_um - round(s / bin_um)) > 1e-6]
    if "visium_hd" in formats and uneven:
        raise WorkflowError(
            f"histexpr error: tiling.spot_sweep: {', '.join(f'{s:g}' for s in uneven)} um is not a whole multiple "
            f"of tiling.bin_um ({bin_um}), so Visium HD bins cannot be pooled into square pseudo-spots of that size"
        )
    if not formats & {"visium_hd", "xenium"}:
        raise WorkflowError(
            f"histexpr error: tiling.spot_sweep needs samples of format visium_hd or xenium (pooled into "
            f"pseudo-spots of tiling.spot_um); {source} has {', '.join(sorted(formats)) or 'a folder layout'}"
        )


def point_config(spot):
    """The study at one spot size: results/<study>/spot_<um>um/, tiling.spot_um <um>, no further sweep."""
    point = copy.deepcopy(config)
    point["study"] = f"{config['study']}/spot_{spot}um"
    point["tiling"]["spot_um"] = float(spot)
    point["tiling"]["spot_sweep"] = []
    return point


_check_sweepable()
