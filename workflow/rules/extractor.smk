# The unsupervised extractor: trained on the fold's training windows, then
# every window of the study embedded as its "global view".


rule train_extractor:
    input:
        expression=fold_spots,
        tiles=sample_tiles,
    output:
        model=f"{R}/fold_{{fold}}/extractor/model.pt",
        history=f"{R}/fold_{{fold}}/extractor/history.tsv",
    params:
        extractor=config["extractor"],
        seed=config["train"]["seed"],
        device=config["train"]["device"],
    threads: 2
    log:
        f"{R}/logs/train_extractor/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/train_extractor/fold_{{fold}}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/train_extractor.py"


rule embed:
    input:
        model=f"{R}/fold_{{fold}}/extractor/model.pt",
        expression=fold_spots,
        tiles=sample_tiles,
    output:
        f"{R}/fold_{{fold}}/embeddings.npy",
    params:
        device=config["train"]["device"],
    threads: 2
    log:
        f"{R}/logs/embed/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/embed/fold_{{fold}}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/embed.py"
