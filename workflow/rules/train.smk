# One job per (model, fold): train on the fold's training windows, select on
# its validation windows, predict its test windows.


rule train:
    input:
        unpack(model_inputs),
    output:
        predictions=f"{R}/{{model}}/fold_{{fold}}/predictions.h5ad",
        history=f"{R}/{{model}}/fold_{{fold}}/history.tsv",
        model=f"{R}/{{model}}/fold_{{fold}}/model.pt",
    params:
        train=config["train"],
        model_params=lambda wildcards: config["model_params"].get(wildcards.model, {}),
        window_px=config["tiling"]["window_px"],
    threads: 2
    log:
        f"{R}/logs/train/{{model}}/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{model}}/fold_{{fold}}.tsv"
    conda:
        ENV
    script:
        "../../scripts/train.py"
