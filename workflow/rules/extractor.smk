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
    threads: 1
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
    threads: 1
    log:
        f"{R}/logs/embed/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/embed/fold_{{fold}}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/embed.py"


# A frozen encoder (extractor.kind resnet50, alexnet_lpips or timm) has nothing to train: its weights are
# checked once, and every window of the study is embedded once, for all folds.
rule frozen_extractor:
    output:
        model=f"{R}/extractor/model.pt",
    params:
        extractor=config["extractor"],
    log:
        f"{R}/logs/frozen_extractor.log",
    benchmark:
        f"{R}/benchmarks/frozen_extractor.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/frozen_extractor.py"


use rule embed as embed_study with:
    input:
        model=f"{R}/extractor/model.pt",
        tiles=sample_tiles,
    output:
        f"{R}/embeddings.npy",
    log:
        f"{R}/logs/embed_study.log",
    benchmark:
        f"{R}/benchmarks/embed_study.tsv"
