# Metrics per (model, fold), then one table per study.


rule evaluate:
    input:
        f"{R}/{{model}}/fold_{{fold}}/predictions.h5ad",
    output:
        metrics=f"{R}/{{model}}/fold_{{fold}}/metrics.tsv",
        genes=f"{R}/{{model}}/fold_{{fold}}/genes.tsv",
    log:
        f"{R}/logs/evaluate/{{model}}/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{model}}/fold_{{fold}}.tsv"
    conda:
        ENV
    script:
        "../../scripts/evaluate.py"


rule aggregate:
    input:
        metrics=per_fold_metrics,
        genes=per_fold_genes,
        groups=gene_groups(),
    output:
        metrics=f"{R}/metrics.tsv",
        genes=f"{R}/genes.tsv",
        by_group=f"{R}/metrics_by_group.tsv",
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    conda:
        ENV
    script:
        "../../scripts/aggregate.py"
