# What `snakemake --report results/report.html` shows for an expression study: the tables, per-gene PCC,
# spatial maps of measured vs predicted expression per test slide, training curves (and the rule graph,
# which Snakemake adds itself).


rule report_figures:
    input:
        metrics=f"{R}/metrics.tsv",
        genes=f"{R}/genes.tsv",
        by_group=f"{R}/metrics_by_group.tsv",
        by_section=f"{R}/metrics_by_section.tsv",
        predictions=per_fold("predictions.h5ad"),
        histories=per_fold("history.tsv"),
        gene_groups=gene_groups(),
    output:
        tables=report(f"{R}/report/metrics.html", caption="../report/metrics.rst", category="Metrics"),
        pcc=report(f"{R}/report/pcc_per_gene.png", caption="../report/pcc.rst", category="Per-gene PCC"),
        spatial=report(
            directory(f"{R}/report/spatial"),
            patterns=["{protocol}/{slide}.png"],
            caption="../report/spatial.rst",
            category="Spatial maps",
            subcategory="{protocol}",
            labels={"slide": "{slide}", "targets": "{protocol}"},
        ),
        curves=report(
            directory(f"{R}/report/curves"),
            patterns=["{protocol}/{model}.png"],
            caption="../report/curves.rst",
            category="Training curves",
            subcategory="{protocol}",
            labels={"model": "{model}", "targets": "{protocol}"},
        ),
    params:
        study=config["study"],
        reference=REFERENCE,
        models=config["report"]["models"],
        n_genes=config["report"]["genes"],
    log:
        f"{R}/logs/report_figures.log",
    benchmark:
        f"{R}/benchmarks/report_figures.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/report_figures.py"
