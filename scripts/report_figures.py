"""The report's tables, per-gene PCC, spatial maps and training curves for one study."""

from histexpr.report import write_report_figures
from histexpr.utils import setup_logging

log = setup_logging(snakemake.log[0])

inp, out, params = snakemake.input, snakemake.output, snakemake.params
write_report_figures(inp.metrics, inp.genes, inp.by_group, list(inp.predictions), list(inp.histories),
                     out.tables, out.pcc, out.spatial, out.curves, study=params.study, reference=params.reference,
                     models=params.models, n_genes=params.n_genes, by_section=inp.by_section,
                     gene_groups=inp.gene_groups[0] if inp.get("gene_groups") else None)
log.info("report figures written; `snakemake --report results/report.html` collects them")
