# Helpers and validation of a classification study (task: classification).
import os
import sys

from snakemake.exceptions import WorkflowError

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from histexpr.config import workflow_config
from histexpr.errors import InputError
from histexpr.data.megapixel import sheet_has_split

SCHEMAS = os.path.join(workflow.current_basedir, "..", "schemas")
# Conda environments, one per family of rules, with the pins of requirements.txt; CPU rules need no PyTorch.
ENV_DATA = "../../envs/data.yaml"
ENV_TORCH = "../../envs/torch.yaml"

try:
    config.update(
        workflow_config(
            config,
            os.path.join(SCHEMAS, "classify.schema.yaml"),
            workflow.configfiles,
            overrides=workflow.config_settings.config,
        )
    )
except InputError as err:
    raise WorkflowError(f"histexpr error: {err}") from None

R = f"results/{config['study']}"
GRID = [(p, n) for p in config["grid"]["patch_px"] for n in config["grid"]["n_patches"]]
ESTIMATORS = config["grid"].get("estimators") or [config["ats"]["estimator"]]
# Every trained setting: attention sampling over the grid (one per estimator), then the baselines.
SETTINGS = (
    [f"ats-p{p}-n{n}-{e}" for p, n in GRID for e in ESTIMATORS]
    + ([f"uniform-p{p}-n{n}" for p, n in GRID] if "uniform" in config["baselines"] else [])
    + (["cnn"] if "cnn" in config["baselines"] else [])
    + ([config["floor"]] if config["floor"] else [])
)


def images_source():
    images = config["images"]
    return images if isinstance(images, str) else images["root"]


# A synthetic study draws its images (rule make_synthetic_images) in the train/ + test/ layout.
SYNTHETIC = "synthetic" in config
if SYNTHETIC:
    from histexpr.data.needles import NeedleSpec

    if NeedleSpec(**config["synthetic"]).problem():
        raise WorkflowError(f"histexpr error: synthetic: {NeedleSpec(**config['synthetic']).problem()}")

# Missing images stop here, in one line that says where they come from (not as a MissingInputException).
if not SYNTHETIC and not os.path.exists(images_source()):
    source = (
        "The lymphoma images are the IICBU 2008 benchmark's lymphoma set (CLL, FL, MCL; NIA's IICBU 2008 "
        "page): put them there as one folder per class, or "
        if config["study"] == "lymphoma"
        else "Write one folder per class there, or "
    )
    raise WorkflowError(
        f"histexpr error: images: {images_source()} not found (working directory {os.getcwd()}). {source}"
        "point images.root (or a sheet with columns image, label) at your copy: "
        "--config 'images={root: /path/to/images}'"
    )


# A sheet with a split column (or a train/ + test/ folder) fixes the test set: one fold.
FOLDS = [1] if SYNTHETIC or sheet_has_split(images_source()) else list(range(1, config["folds"]["k"] + 1))
SEEDS = config["seeds"]


wildcard_constraints:
    setting=r"ats-p\d+-n\d+-(expectation|reinforce)|uniform-p\d+-n\d+|cnn",
    fold=r"\d+",
    seed=r"-?\d+",


def run_files(name):
    return expand(f"{R}/{{setting}}/seed_{{seed}}/fold_{{fold}}/{name}", setting=SETTINGS, seed=SEEDS, fold=FOLDS)


def classify_targets(wildcards):
    ats = [s for s in SETTINGS if s.startswith("ats-")]
    maps = ats if config["attention_maps"]["per_class"] else []
    return (
        [f"{R}/accuracy.tsv", f"{R}/confusion.tsv", f"{R}/figures/confusion.png"]
        + expand(f"{R}/figures/attention/{{setting}}.png", setting=maps)
        + expand(f"{R}/figures/attention/{{setting}}_concentration.png", setting=maps)
    )
