# Cross-validation folds and each fold's expression targets.


rule folds:
    input:
        sheet=f"{R}/samples.tsv",
        samples=sample_h5ads,
    output:
        f"{R}/folds.tsv",
    params:
        folds=config["folds"],
    log:
        f"{R}/logs/folds.log",
    benchmark:
        f"{R}/benchmarks/folds.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/folds.py"


rule expression:
    input:
        folds=f"{R}/folds.tsv",
        samples=sample_h5ads,
    output:
        f"{R}/fold_{{fold}}/{{protocol}}/expression.h5ad",
    params:
        expression=config["expression"],
    log:
        f"{R}/logs/expression/fold_{{fold}}_{{protocol}}.log",
    benchmark:
        f"{R}/benchmarks/expression/fold_{{fold}}_{{protocol}}.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/expression.py"
