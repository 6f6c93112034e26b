"""One table per study: every model under every target protocol, per test section (the headline) and pooled,
with its margin over the reference model; per-section, per-gene and per-gene-group tables."""

import pandas as pd

from histexpr.metrics import (
    ablation_table,
    aggregate_folds,
    format_table,
    gene_table,
    group_margins,
    load_predictions,
    margins_over_reference,
    model_notes,
    summarise_groups,
    sweep_table,
)
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

inp, params = snakemake.input, snakemake.params
per_fold = pd.concat([pd.read_csv(p, sep="\t") for p in inp.metrics], ignore_index=True)
genes = pd.concat([pd.read_csv(p, sep="\t") for p in inp.genes], ignore_index=True)
groups = pd.read_csv(inp.groups[0], sep="\t") if inp.groups else None
table = aggregate_folds(per_fold)
sections = per_fold[per_fold["scope"] == "slide"].rename(columns={"slide": "section"}).drop(columns="scope")
if params.reference:
    predictions, predicted_genes = load_predictions(inp.predictions, with_genes=True)
    margins, by_section = margins_over_reference(predictions, params.reference, params.bootstrap, params.seed,
                                                 min_sections=params.section_bootstrap_min, with_sections=True)
    for _, m in margins.drop_duplicates("evaluation").iterrows():
        log.info("margins over %s (%s): %d paired bootstrap replicates, %s resampled", params.reference,
                 m["evaluation"], params.bootstrap, m["resampled"])
    ahead = (by_section.assign(ahead=by_section["dPCC@M"] > 0).groupby(["model", "protocol"])["ahead"].sum()
             .rename("n_sections_ahead").reset_index().assign(evaluation="per_slide"))
    table = (table.merge(margins.drop(columns="n_boot"), on=["model", "protocol", "evaluation"], how="left")
             .merge(ahead, on=["model", "protocol", "evaluation"], how="left"))
    table["margin_over"] = params.reference
    sections = sections.merge(by_section.drop(columns=["PCC@M", "n_windows"]),
                              on=["model", "protocol", "fold", "section"], how="left")
    sections["margin_over"] = params.reference
notes = model_notes(inp.predictions)
if len(notes):
    table = table.merge(notes, on=["model", "protocol"], how="left")
    for _, n in notes.iterrows():
        log.warning("%s (%s): %s", n["model"], n["protocol"], n["note"])
log.info("metrics (per section: mean ± sd over test sections; pooled: mean ± sd over folds):\n%s",
         format_table(table))
write_table(sections, snakemake.output.by_section)
pooled = genes[genes["scope"] == "pooled"]
by_group = summarise_groups(pooled, groups)
if params.reference:  # each group's margin over the floor, on the group's genes
    if groups is None:
        by_group = by_group.merge(margins[margins["evaluation"] == "pooled"].drop(columns=["evaluation", "n_boot"]),
                                  on=["model", "protocol"], how="left")
    else:
        by_group = by_group.merge(group_margins(predictions, predicted_genes, groups, params.reference,
                                                params.bootstrap, params.seed), on=["model", "protocol", "group"],
                                  how="left")
    by_group["margin_over"] = params.reference
log.info("PCC by gene group:\n%s", by_group.to_string(index=False))
write_table(table, snakemake.output.metrics)
write_table(gene_table(pooled), snakemake.output.genes)
write_table(by_group, snakemake.output.by_group)
ablations, sweeps = ablation_table(table), sweep_table(table)
if len(ablations):
    log.info("EGN ablations (Table 4):\n%s", ablations[["setting", "protocol", "evaluation", "MSE", "MAE", "PCC@M"]]
             .to_string(index=False))
write_table(ablations, snakemake.output.ablations)
write_table(sweeps, snakemake.output.sweeps)
