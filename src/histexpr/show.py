"""Print a study's results: ``python -m histexpr.show results/<study>``.

A verdict line per target protocol (the best model, and whether it beats the floor), then the models by
PCC@M, best first, per protocol and evaluation, and the gene groups with their margins. At most 120
columns; every number with its sd is in ``metrics.tsv`` and ``metrics_by_group.tsv``.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from .metrics import display_blocks, display_groups, verdicts

WIDTH = 120
TEXT = ("protocol", "group", "model")


def as_text(table: pd.DataFrame) -> str:
    """A table with its name columns left-aligned, as a terminal reader expects."""
    table = table.copy()
    for c in TEXT:
        if c in table:
            width = max(len(c), *(len(str(v)) for v in table[c]))
            table[c] = [str(v).ljust(width) for v in table[c]]
            table = table.rename(columns={c: c.ljust(width)})
    return table.to_string(index=False)


def show(results_dir: str) -> int:
    path = os.path.join(results_dir, "metrics.tsv")
    if not os.path.exists(path):
        print(f"{path}: not found; run the workflow first", file=sys.stderr)
        return 1
    study = os.path.basename(os.path.normpath(results_dir))
    if os.path.exists(os.path.join("resources", "demo", "SYNTHETIC_DATA.txt")) and study == "demo":
        print("NOTE: the demo study is SYNTHETIC (see resources/demo/SYNTHETIC_DATA.txt).\n")
    table = pd.read_csv(path, sep="\t")
    floor = table["margin_over"].dropna().iloc[0] if "margin_over" in table and table["margin_over"].notna().any() \
        else None
    print(f"{study}: {path}")
    for line in verdicts(table):
        print("  " + line)
    print("\nmean ± sd over test folds. pooled: all test spots of a fold; per_slide: each test slide, then averaged.")
    print("raw targets: log1p + min-max of counts (EGN); library_size: counts per 10k first (ST-Net, TCGN).")
    print("pPCC@M: partial PCC given the spot's log total count (what is predicted beyond cellularity).")
    if floor:
        print(f"ΔPCC@M: margin over {floor}, the floor, on the same windows; 95% paired bootstrap interval "
              "over windows.")
    if "depth_oracle" in set(table["model"]):
        print("depth_oracle (oracle): each gene from the test spot's own measured log total count, fitted on "
              "training spots;\n  it reads test data, so it is a ceiling for depth alone, not a method.")
    for protocol, evaluation, block in display_blocks(table):
        print(f"\n{protocol} targets, {evaluation}" if protocol else f"\n{evaluation}")
        print(as_text(block))
    groups = os.path.join(results_dir, "metrics_by_group.tsv")
    if os.path.exists(groups):
        print("\nPCC by gene group (pooled; metrics_by_group.tsv)")
        print(as_text(display_groups(pd.read_csv(groups, sep="\t"))))
    return 0


if __name__ == "__main__":
    sys.exit(show(sys.argv[1] if len(sys.argv) > 1 else "results/demo"))
