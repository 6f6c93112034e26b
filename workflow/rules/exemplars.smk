# FAISS exemplar index per fold: for every window, its k nearest training
# windows from other patients.


rule exemplars:
    input:
        embeddings=fold_embeddings,
        expression=fold_spots,
    output:
        table=f"{R}/fold_{{fold}}/exemplars.tsv",
        arrays=f"{R}/fold_{{fold}}/exemplars.npz",
        index=f"{R}/fold_{{fold}}/exemplars.faiss",
    params:
        exemplars=config["exemplars"],
    log:
        f"{R}/logs/exemplars/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/exemplars/fold_{{fold}}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/exemplars.py"
