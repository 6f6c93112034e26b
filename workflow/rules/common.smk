# Helpers and validation. Everything else in workflow/rules/ is wiring.
import os
import sys

import pandas as pd

# The library lives in src/; its config and fold helpers need only the
# packages snakemake itself brings (jsonschema, yaml, pandas, numpy).
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from histexpr.config import validate as validate_config  # noqa: E402
from histexpr.data.folds import n_folds  # noqa: E402
from histexpr.models.catalog import MODEL_NEEDS  # noqa: E402

SCHEMAS = os.path.join(workflow.current_basedir, "..", "schemas")
ENV = "../../envs/histexpr.yaml"

config.update(
    validate_config(
        config,
        os.path.join(SCHEMAS, "config.schema.yaml"),
        ", ".join(map(str, workflow.configfiles)) or "config",
    )
)

R = f"results/{config['study']}"
PROTOCOLS = config["expression"]["protocols"]
REFERENCE = config["evaluation"]["reference"]
# The reference (colour_ridge by default) is in every study's table.
MODELS = config["models"] + ([REFERENCE] if REFERENCE and REFERENCE not in config["models"] else [])


wildcard_constraints:
    sample=r"[A-Za-z0-9_.-]+",
    fold=r"\d+",
    model="|".join(MODELS),
    protocol="|".join(PROTOCOLS),


def sheet_source():
    """The file or folder the sample sheet is made from."""
    samples = config["samples"]
    return samples if isinstance(samples, str) else samples["root"]


def sheet_layout():
    """``sheet`` for a sample sheet file, else the folder layout it is built from."""
    samples = config["samples"]
    return "sheet" if isinstance(samples, str) else samples["layout"]


_SHEETS = {}


def sample_table():
    """The validated sample sheet (after the sample_sheet checkpoint), read once."""
    path = checkpoints.sample_sheet.get().output[0]
    if path not in _SHEETS:
        _SHEETS[path] = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return _SHEETS[path]


def sample_names():
    return sample_table()["sample"].tolist()


def fold_ids():
    return list(range(1, n_folds(sample_table(), config["folds"]) + 1))


def tile_inputs(wildcards):
    row = sample_table().set_index("sample").loc[wildcards.sample]
    files = {"sheet": checkpoints.sample_sheet.get().output[0], "counts": row["counts"], "spots": row["spots"]}
    if row["image"]:
        files["image"] = row["image"]
    return files


def sample_h5ads(wildcards):
    return expand(f"{R}/samples/{{sample}}.h5ad", sample=sample_names())


def sample_tiles(wildcards):
    return expand(f"{R}/tiles/{{sample}}.npy", sample=sample_names())


def fold_spots(wildcards):
    """The fold's spot table (order and split); it is the same under every target protocol."""
    return f"{R}/fold_{wildcards.fold}/{PROTOCOLS[0]}/expression.h5ad"


def model_inputs(wildcards):
    """Only the files the model uses (see histexpr.models.catalog)."""
    needs = MODEL_NEEDS[wildcards.model]
    fold = f"{R}/fold_{wildcards.fold}"
    files = {"expression": f"{fold}/{wildcards.protocol}/expression.h5ad", "samples": sample_h5ads(wildcards)}
    if "windows" in needs:
        files["tiles"] = sample_tiles(wildcards)
    if "embeddings" in needs or "exemplars" in needs:
        files["embeddings"] = f"{fold}/embeddings.npy"
    if "exemplars" in needs:
        files["exemplars"] = f"{fold}/exemplars.npz"
    return files


def per_fold(name):
    """``name`` of every (model, protocol, fold)."""

    def files(wildcards):
        return expand(f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/{name}", model=MODELS, protocol=PROTOCOLS,
                      fold=fold_ids())

    return files


def gene_groups():
    path = config["evaluation"]["gene_groups"]
    return [path] if path else []


def final_targets(wildcards):
    return [f"{R}/metrics.tsv", f"{R}/genes.tsv", f"{R}/metrics_by_group.tsv"]
