# Helpers and validation. Everything else in workflow/rules/ is wiring.
import os
import re
import sys

import pandas as pd
from snakemake.exceptions import WorkflowError

# The library lives in src/; its config and fold helpers need only the
# packages snakemake itself brings (jsonschema, yaml, pandas, numpy).
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from histexpr.config import workflow_config
from histexpr.data.demo import demo_samples
from histexpr.data.folds import FINAL_FOLD, fixed_test_units, fold_plan, n_folds
from histexpr.errors import InputError
from histexpr.io.sheet import build_her2st_sheet, complete_sheet, load_sample_sheet
from histexpr.models.catalog import FROZEN_EXTRACTORS, MODEL_NEEDS, params_key, split_run, sweep_name, uses_gpu
from histexpr.retrieval.pools import check_pools

SCHEMAS = os.path.join(workflow.current_basedir, "..", "schemas")
# Conda environments, one per family of rules, with the pins of requirements.txt; CPU rules need no PyTorch.
ENV_DATA = "../../envs/data.yaml"
ENV_TORCH = "../../envs/torch.yaml"

# The demo is drawn (make_demo) only for a config that has a demo: section: another study that reads
# resources/demo/samples.tsv reads it as a sheet like any other, and never redraws the demo.
DEMO_CONFIG = "demo" in config

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
# windows on disk: .npy (uint8) or .jpg.h5 (JPEG store), by tiling.store
TILE_SUFFIX = {"npy": ".npy", "jpeg": ".jpg.h5"}[config["tiling"]["store"]]
PROTOCOLS = config["expression"]["protocols"]
REFERENCE = config["evaluation"]["reference"]
ORACLE = config["evaluation"]["oracle"]
# The reference (colour_ridge by default) and the oracle (depth_oracle) are in every study's table.
MODELS = config["models"] + [m for m in (REFERENCE, ORACLE) if m and m not in config["models"]]


def _sweep_runs():
    runs = []
    for sweep in config["sweeps"]:
        known = config["model_params"].get(params_key(sweep["model"]), {})
        if sweep["param"] not in known:
            raise ValueError(
                f"sweeps: {sweep['model']} has no parameter {sweep['param']!r}; "
                f"it has {', '.join(sorted(known)) or 'none'}"
            )
        if sweep["param"] == "n_exemplars" and max(sweep["values"]) > config["exemplars"]["k"]:
            raise ValueError(
                f"sweeps: n_exemplars up to {max(sweep['values'])} needs exemplars.k >= that "
                f"(it is {config['exemplars']['k']})"
            )
        runs += [
            sweep_name(sweep["model"], sweep["param"], v if not float(v).is_integer() else int(v))
            for v in sweep["values"]
        ]
    return runs


# Every trained run: the models, then each sweep point as its own run.
RUNS = MODELS + [r for r in _sweep_runs() if r not in MODELS]
# Networks train on a GPU (rule train); fitted models need one CPU for seconds (rule fit).
NETWORK_RUNS = [r for r in RUNS if uses_gpu(r)]
FITTED_RUNS = [r for r in RUNS if not uses_gpu(r)]


def runs_pattern(runs):
    """A wildcard constraint matching exactly ``runs`` (nothing when there are none)."""
    return "|".join(re.escape(r) for r in runs) or "(?!)"


wildcard_constraints:
    sample=r"[A-Za-z0-9_.-]+",
    fold=r"\d+",
    model=runs_pattern(RUNS),
    protocol="|".join(PROTOCOLS),


def sheet_source():
    """The file or folder the sample sheet is made from."""
    samples = config["samples"]
    return samples if isinstance(samples, str) else samples["root"]


def sheet_layout():
    """``sheet`` for a sample sheet file, else the folder layout it is built from."""
    samples = config["samples"]
    return "sheet" if isinstance(samples, str) else samples["layout"]


# The files the data rules make: the demo study (make_demo) and a clone of HER2ST (fetch_her2st).
DEMO_DIR = "resources/demo"
DEMO_SHEET = f"{DEMO_DIR}/samples.tsv"
HER2ST_CLONE = "resources/her2st"
MAKES_DEMO = DEMO_CONFIG and sheet_layout() == "sheet" and os.path.normpath(str(sheet_source())) == DEMO_SHEET


def _planned_samples():
    """The sample table, read at parse time as the sample_sheet job will write it, so a dry run lists every
    job. None only while HER2ST is yet to be cloned (fetch_her2st)."""
    source, schema = str(sheet_source()), os.path.join(SCHEMAS, "samples.schema.yaml")
    try:
        if MAKES_DEMO:
            return complete_sheet(demo_samples(config.get("demo")), DEMO_SHEET, schema=schema, check_files=False)
        if sheet_layout() == "her2st":
            if not os.path.exists(source) and os.path.normpath(source) == HER2ST_CLONE:
                return None
            if not os.path.exists(source):
                raise InputError(source, "HER2ST data root not found (samples: root)")
            return build_her2st_sheet(source, measure_app_images=False)
        table = load_sample_sheet(source, schema=schema)
        fixed_test_units(table, config["folds"]["level"])  # a split column that would leak stops the dry run
        return table
    except InputError as err:
        raise WorkflowError(f"histexpr error: {err}") from None


SAMPLES = _planned_samples()

# Visium HD bins are summed into square pseudo-spots: a whole number of bins a side, known before any job runs.
if SAMPLES is not None and (SAMPLES["format"] == "visium_hd").any():
    _bin, _spot = config["tiling"]["bin_um"], config["tiling"]["spot_um"]
    if _spot < _bin or abs(_spot / _bin - round(_spot / _bin)) > 1e-6:
        raise WorkflowError(
            f"histexpr error: tiling.spot_um ({_spot:g}) must be a whole multiple of tiling.bin_um ({_bin}) "
            f"to pool Visium HD bins into square pseudo-spots, e.g. {_bin * max(1, round(_spot / _bin))}"
        )


def _check_exemplar_pools():
    """Stop before anything runs when a model that reads exemplars would train or validate on windows that have
    none (the sheet and the fold plan show it)."""
    if SAMPLES is None:
        return
    try:
        plan = fold_plan(SAMPLES, config["folds"])
    except InputError:
        return  # too few patients to cross-validate: the folds job says so, and a one-patient study may still tile
    try:
        check_pools(
            SAMPLES,
            plan,
            config["exemplars"]["exclude"],
            [split_run(r)[0] for r in RUNS],
            ", ".join(map(str, workflow.configfiles)) or "config",
        )
    except InputError as err:
        raise WorkflowError(f"histexpr error: {err}") from None


_check_exemplar_pools()


def sample_table():
    """The sample table (read at parse time)."""
    if SAMPLES is None:
        raise WorkflowError(
            f"histexpr error: HER2ST is not in {HER2ST_CLONE} yet. Clone it first with "
            f"`snakemake --cores 1 fetch_her2st --configfile config/her2st.yaml`, then run again; "
            f"or point samples.root at a copy you have."
        )
    return SAMPLES


def sample_names():
    return sample_table()["sample"].tolist()


def fold_ids():
    return list(range(1, n_folds(sample_table(), config["folds"]) + 1))


def tile_inputs(wildcards):
    row = sample_table().set_index("sample").loc[wildcards.sample]
    files = {"sheet": f"{R}/samples.tsv", "counts": row["counts"], "spots": row["spots"]}
    if row["image"]:
        files["image"] = row["image"]
    return files


def demo_files(kind):
    """The demo study's files of one kind (image, counts, spots), as make_demo writes them."""
    return [os.path.normpath(os.path.join(DEMO_DIR, row[kind])) for row in demo_samples(config.get("demo"))]


def sample_h5ads(wildcards):
    return expand(f"{R}/samples/{{sample}}.h5ad", sample=sample_names())


def sample_tiles(wildcards):
    return expand(f"{R}/tiles/{{sample}}{TILE_SUFFIX}", sample=sample_names())


# A frozen encoder (extractor.kind resnet50, alexnet_lpips, timm) embeds every window once for the study;
# a trained extractor (stylegan, autoencoder) is trained and applied per fold, on that fold's training windows.
FROZEN = config["extractor"]["kind"] in FROZEN_EXTRACTORS


def embeddings_of(fold):
    return f"{R}/embeddings.npy" if FROZEN else f"{R}/fold_{fold}/embeddings.npy"


def fold_embeddings(wildcards):
    return embeddings_of(wildcards.fold)


def fold_extractor(fold):
    return f"{R}/extractor/model.pt" if FROZEN else f"{R}/fold_{fold}/extractor/model.pt"


def fold_spots(wildcards):
    """The fold's spot table (order and split); it is the same under every target protocol."""
    return f"{R}/fold_{wildcards.fold}/{PROTOCOLS[0]}/expression.h5ad"


def model_inputs(wildcards):
    """Only the files the model uses (see histexpr.models.catalog)."""
    needs = MODEL_NEEDS[split_run(wildcards.model)[0]]
    fold = f"{R}/fold_{wildcards.fold}"
    files = {"expression": f"{fold}/{wildcards.protocol}/expression.h5ad", "samples": sample_h5ads(wildcards)}
    if "windows" in needs:
        files["tiles"] = sample_tiles(wildcards)
    if "embeddings" in needs or "exemplars" in needs:
        files["embeddings"] = fold_embeddings(wildcards)
    if "exemplars" in needs:
        files["exemplars"] = f"{fold}/exemplars.npz"
    return files


def run_params(wildcards):
    """A run's model_params: its model's (EGN's for the egn_* ablations), with a sweep point's value on top."""
    model, overrides = split_run(wildcards.model)
    return {**config["model_params"].get(params_key(model), {}), **overrides}


def train_gpus(wildcards):
    """GPUs a train job asks for: one for a network, none for a fitted model (knn, ridge) or train.device cpu."""
    return int(uses_gpu(wildcards.model) and config["train"]["device"] != "cpu")


def per_fold(name):
    """``name`` of every (run, protocol, fold)."""

    def files(wildcards):
        return expand(
            f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/{name}", model=RUNS, protocol=PROTOCOLS, fold=fold_ids()
        )

    return files


# Runs whose predictions carry a latent representation worth a t-SNE (EGN's Fig. 6 compares these).
LATENT_RUNS = [m for m in ("egn_backbone_only", "egn_no_projector", "egn") if m in RUNS]


def latent_predictions(wildcards):
    return [f"{R}/{m}/{wildcards.protocol}/fold_{wildcards.fold}/predictions.h5ad" for m in LATENT_RUNS]


def gene_groups():
    path = config["evaluation"]["gene_groups"]
    return [path] if path else []


def final_targets(wildcards):
    targets = [
        f"{R}/metrics.tsv",
        f"{R}/genes.tsv",
        f"{R}/metrics_by_group.tsv",
        f"{R}/metrics_by_section.tsv",
        f"{R}/ablations.tsv",
        f"{R}/report/metrics.html",
    ]
    if config["sweeps"]:
        targets.append(f"{R}/figures/sweeps.png")
    if LATENT_RUNS:
        targets.append(f"{R}/figures/latent_fold1_{PROTOCOLS[0]}.png")
    if config["evaluation"]["spatialdata"]:
        targets += per_fold("predictions.zarr")(wildcards)
    return targets


# --- predict: trained runs applied to slides with no spatial data ---------------------------------------------
PREDICT = config["predict"]
PREDICT_RUN = {
    "model": PREDICT["model"] or config["models"][0],
    "protocol": PREDICT["protocol"] or PROTOCOLS[0],
    "fold": FINAL_FOLD if PREDICT["fold"] == "all" else PREDICT["fold"],  # fold 0: every patient in training
}
# predictions are kept per run: predict/<slide>/<model>/<protocol>/fold_<k or all>/ (another run adds its own)
PREDICT_DIR = (
    f"{PREDICT_RUN['model']}/{PREDICT_RUN['protocol']}/"
    f"fold_{'all' if PREDICT_RUN['fold'] == FINAL_FOLD else PREDICT_RUN['fold']}"
)


def predict_targets(wildcards):
    if not PREDICT["slides"]:
        raise WorkflowError(
            "predict: no slides to predict; list them under predict.slides in the config "
            "(name: {image: path, um_per_px: ...})"
        )
    for name, slide in PREDICT["slides"].items():  # one line naming the key, not a MissingInputException
        if not os.path.exists(slide["image"]):
            raise WorkflowError(f"histexpr error: predict.slides.{name}.image: {slide['image']} not found")
    return expand(f"{R}/predict/{{slide}}/{PREDICT_DIR}/predictions.h5ad", slide=list(PREDICT["slides"]))


def predict_inputs(wildcards):
    """The slide's image, the chosen run and everything of its fold that the model reads."""
    if wildcards.slide not in PREDICT["slides"]:
        raise WorkflowError(f"predict: slide {wildcards.slide!r} is not under predict.slides in the config")
    model, protocol, fold = PREDICT_RUN["model"], PREDICT_RUN["protocol"], PREDICT_RUN["fold"]
    if model not in RUNS or protocol not in PROTOCOLS or fold not in [FINAL_FOLD] + fold_ids():
        raise WorkflowError(
            f"predict: run {model}/{protocol}/fold_{fold} is not trained by this config "
            f"(models {RUNS}, protocols {PROTOCOLS}, folds {fold_ids()} or all)"
        )
    run = f"{R}/{model}/{protocol}/fold_{fold}"
    files = {
        "image": PREDICT["slides"][wildcards.slide]["image"],
        "model": f"{run}/model.pt",
        "expression": f"{R}/fold_{fold}/{protocol}/expression.h5ad",
    }
    if not PREDICT["genes"]:  # heat maps of the genes the run predicts best on held-out slides
        cv_folds = fold_ids() if fold == FINAL_FOLD else [fold]
        files["genes"] = expand(f"{R}/{model}/{protocol}/fold_{{k}}/genes.tsv", k=cv_folds)
    needs = MODEL_NEEDS[split_run(model)[0]]
    if "windows" in needs:
        files["tiles"] = sample_tiles(wildcards)
    if "embeddings" in needs or "exemplars" in needs:
        files["embeddings"] = embeddings_of(fold)
        files["extractor"] = fold_extractor(fold)
    if "exemplars" in needs:
        files["exemplars"] = f"{R}/fold_{fold}/exemplars.npz"
        files["faiss"] = f"{R}/fold_{fold}/exemplars.faiss"
    return files
