"""The report's tables, per-gene PCC, spatial maps and training curves for one study."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821  (the library, also under --use-conda)

from histexpr.utils import setup_logging  # noqa: E402

log = setup_logging(snakemake.log[0])  # noqa: F821

from histexpr.report import write_report_figures  # noqa: E402

inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
write_report_figures(inp.metrics, inp.genes, inp.by_group, list(inp.predictions), list(inp.histories),
                     out.tables, out.pcc, out.spatial, out.curves, study=params.study, reference=params.reference,
                     models=params.models, n_genes=params.n_genes)
log.info("report figures written; `snakemake --report results/report.html` collects them")
