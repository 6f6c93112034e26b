# One job per (model, target protocol, fold): train on the fold's training
# windows, select on its validation windows, predict its test windows.
# `train` runs the networks; `fit` the fitted models (knn, ridge, colour_ridge: seconds on one CPU), so a
# cluster profile can size each by rule.


rule train:
    input:
        unpack(model_inputs),
    output:
        predictions=f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/predictions.h5ad",
        history=f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/history.tsv",
        model=f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/model.pt",
    params:
        train=config["train"],
        model_params=run_params,
        window_px=config["tiling"]["window_px"],
    wildcard_constraints:
        model=runs_pattern(NETWORK_RUNS),
    threads: 1
    resources:
        gpu=train_gpus,
    log:
        f"{R}/logs/train/{{model}}/{{protocol}}/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{model}}/{{protocol}}/fold_{{fold}}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/train.py"


# A fitted model reads only the seed of the training settings: changing train.epochs replans no fit job.
use rule train as fit with:
    params:
        train={"seed": config["train"]["seed"]},
        model_params=run_params,
        window_px=config["tiling"]["window_px"],
    wildcard_constraints:
        model=runs_pattern(FITTED_RUNS),
    threads: 1
    resources:
        gpu=0,
