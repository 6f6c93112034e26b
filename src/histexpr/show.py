"""Print a study's results tables: ``python -m histexpr.show results/<study>``."""

from __future__ import annotations

import os
import sys

import pandas as pd

from .metrics import format_table


def show(results_dir: str) -> int:
    path = os.path.join(results_dir, "metrics.tsv")
    if not os.path.exists(path):
        print(f"{path}: not found; run the workflow first", file=sys.stderr)
        return 1
    study = os.path.basename(os.path.normpath(results_dir))
    if os.path.exists(os.path.join("resources", "demo", "SYNTHETIC_DATA.txt")) and study == "demo":
        print("NOTE: the demo study is SYNTHETIC (see resources/demo/SYNTHETIC_DATA.txt).\n")
    print(f"Metrics table: {path}  (mean ± sd over test folds; per_slide = each test slide alone, then averaged)\n")
    print(format_table(pd.read_csv(path, sep="\t")))
    groups = os.path.join(results_dir, "metrics_by_group.tsv")
    if os.path.exists(groups):
        g = pd.read_csv(groups, sep="\t")
        g["PCC@M"] = [f"{a:.3f} ± {b:.3f}" if b == b else f"{a:.3f}" for a, b in zip(g["PCC@M"], g["PCC@M_sd"])]
        print(f"\nPCC by gene group: {groups}\n")
        print(g[["model", "group", "n_genes", "PCC@M", "PCC@S", "n_folds"]].to_string(index=False,
                                                                                  float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(show(sys.argv[1] if len(sys.argv) > 1 else "results/demo"))
