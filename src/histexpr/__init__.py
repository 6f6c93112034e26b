"""histexpr: predict spatial gene expression from H&E histology.

The library behind the Snakemake workflow: readers (:mod:`histexpr.io`),
tiling, expression and folds (:mod:`histexpr.data`), models
(:mod:`histexpr.models`), training (:mod:`histexpr.train`), exemplar retrieval
(:mod:`histexpr.retrieval`) and metrics (:mod:`histexpr.metrics`). It never
imports Snakemake; the workflow's scripts call it.
"""

__version__ = "0.1.0"
