# Metrics per (model, protocol, fold), then one table per study with every
# model's margin over the reference (colour_ridge).


rule evaluate:
    input:
        f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/predictions.h5ad",
    output:
        metrics=f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/metrics.tsv",
        genes=f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/genes.tsv",
    log:
        f"{R}/logs/evaluate/{{model}}/{{protocol}}/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{model}}/{{protocol}}/fold_{{fold}}.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/evaluate.py"


rule spatialdata_store:
    input:
        f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/predictions.h5ad",
    output:
        directory(f"{R}/{{model}}/{{protocol}}/fold_{{fold}}/predictions.zarr"),
    log:
        f"{R}/logs/spatialdata_store/{{model}}/{{protocol}}/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/spatialdata_store/{{model}}/{{protocol}}/fold_{{fold}}.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/spatialdata_store.py"


rule aggregate:
    input:
        metrics=per_fold("metrics.tsv"),
        genes=per_fold("genes.tsv"),
        predictions=per_fold("predictions.h5ad"),
        groups=gene_groups(),
    output:
        metrics=f"{R}/metrics.tsv",
        genes=f"{R}/genes.tsv",
        by_group=f"{R}/metrics_by_group.tsv",
        by_section=f"{R}/metrics_by_section.tsv",
        ablations=f"{R}/ablations.tsv",
        sweeps=f"{R}/sweeps.tsv",
    params:
        reference=REFERENCE,
        bootstrap=config["evaluation"]["bootstrap"],
        section_bootstrap_min=config["evaluation"]["section_bootstrap_min"],
        seed=config["evaluation"]["seed"],
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/aggregate.py"


rule sweep_figure:
    input:
        f"{R}/sweeps.tsv",
    output:
        report(f"{R}/figures/sweeps.png", caption="../report/sweeps.rst", category="Sweeps"),
    log:
        f"{R}/logs/sweep_figure.log",
    benchmark:
        f"{R}/benchmarks/sweep_figure.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/sweep_figure.py"


rule latent_figure:
    input:
        latent_predictions,
    output:
        figure=report(
            f"{R}/figures/latent_fold{{fold}}_{{protocol}}.png",
            caption="../report/latent.rst",
            category="Latent space",
        ),
        table=f"{R}/figures/latent_fold{{fold}}_{{protocol}}.tsv",
    params:
        models=LATENT_RUNS,
        seed=config["evaluation"]["seed"],
    log:
        f"{R}/logs/latent_figure/fold_{{fold}}_{{protocol}}.log",
    benchmark:
        f"{R}/benchmarks/latent_figure/fold_{{fold}}_{{protocol}}.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/latent_figure.py"
