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
    table = pd.read_csv(path, sep="\t")
    print(f"Metrics table: {path}  (mean ± sd over test folds; per_slide = each test slide alone, then averaged)")
    print("Target protocols: raw = log1p + min-max of counts (EGN); library_size = counts per 10k first (ST-Net, "
          "TCGN).\npPCC@M = partial PCC given the spot's log total count (what is predicted beyond cellularity).")
    if "margin_over" in table:
        print(f"ΔPCC@M = margin over {table['margin_over'].iloc[0]} on the same windows, 95% paired bootstrap "
              "interval over windows.")
    print()
    print(format_table(table))
    groups = os.path.join(results_dir, "metrics_by_group.tsv")
    if os.path.exists(groups):
        g = pd.read_csv(groups, sep="\t")
        g["PCC@M"] = [f"{a:.3f} ± {b:.3f}" if b == b else f"{a:.3f}" for a, b in zip(g["PCC@M"], g["PCC@M_sd"])]
        print(f"\nPCC by gene group: {groups}\n")
        cols = [c for c in ("model", "protocol", "group", "n_genes", "PCC@M", "PCC@S", "n_folds") if c in g]
        print(g[cols].to_string(index=False,
                                                                                  float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(show(sys.argv[1] if len(sys.argv) > 1 else "results/demo"))
