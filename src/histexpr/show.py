"""Print a study's results: ``python -m histexpr.show results/<study>`` (``--readme``: the README's demo
table and printout).

A verdict line per target protocol (the best model over test sections, and whether it beats the floor), then
the models by PCC@M, best first, per protocol: per section (the headline), then pooled; each section's own rows
when a fold tests more than one; the gene groups with their margins. At most 120 columns; every number with its
sd is in ``metrics.tsv``, ``metrics_by_section.tsv`` and ``metrics_by_group.tsv``.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from .metrics import EVALUATION_NAMES, display_blocks, display_groups, display_sections, group_verdicts, verdicts

WIDTH = 120
TEXT = ("protocol", "group", "model", "section", "setting")


def as_text(table: pd.DataFrame) -> str:
    """A table with its name columns left-aligned, as a terminal reader expects."""
    table = table.copy()
    for c in TEXT:
        if c in table:
            width = max(len(c), *(len(str(v)) for v in table[c]))
            table[c] = [str(v).ljust(width) for v in table[c]]
            table = table.rename(columns={c: c.ljust(width)})
    return table.to_string(index=False)


def closing_lines(results_dir: str) -> list[str]:
    """What the end of a run prints: the study's verdict lines and where its table is (expression or
    classification); empty when the run made no table."""
    metrics, accuracy = os.path.join(results_dir, "metrics.tsv"), os.path.join(results_dir, "accuracy.tsv")
    sweep = os.path.join(results_dir, "spot_sweep.tsv")
    if os.path.exists(sweep) and not os.path.exists(metrics):  # a spot-size sweep: each spot size's own verdicts
        points = sorted(pd.read_csv(sweep, sep="\t")["spot_um"].unique())
        lines = [f"{os.path.basename(os.path.normpath(results_dir))}: {sweep} (per-section PCC@M against "
                 f"pseudo-spot size; figure: {os.path.join(results_dir, 'figures', 'spot_sweep.png')})"]
        for spot in points:
            lines += ["  " + line for line in closing_lines(os.path.join(results_dir, f"spot_{spot:g}um"))]
        return lines
    if os.path.exists(metrics):
        lines, table = verdicts(pd.read_csv(metrics, sep="\t")), metrics
        groups = os.path.join(results_dir, "metrics_by_group.tsv")
        by_group = pd.read_csv(groups, sep="\t") if os.path.exists(groups) else None
        if by_group is not None and by_group["group"].nunique() > 1:  # gene groups first: what each group shows
            lines = (["by gene group (metrics_by_group.tsv; pooled over each fold's sections):"]
                     + ["  " + line for line in group_verdicts(by_group)]
                     + ["all genes, per test section:"] + ["  " + line for line in lines]
                     + ["PCC@M: the mean over genes of each gene's Pearson r between predicted and measured "
                        "expression."])
    elif os.path.exists(accuracy):
        from .classification import accuracy_verdict

        lines, table = accuracy_verdict(pd.read_csv(accuracy, sep="\t")), accuracy
    else:
        return []
    return ([f"{os.path.basename(os.path.normpath(results_dir))}: {table}"] + ["  " + line for line in lines] +
            [f"  every model and number: python -m histexpr.show {results_dir}"])


def _floor(table: pd.DataFrame) -> str | None:
    """The model a table's margins are over (its ``margin_over`` column), or None."""
    if "margin_over" in table and table["margin_over"].notna().any():
        return table["margin_over"].dropna().iloc[0]
    return None


def group_table_markdown(by_group: pd.DataFrame) -> str:
    """``metrics_by_group.tsv`` as the README's Markdown table: a row a model (the floor first), a column a gene
    group, pooled PCC@M ± sd over folds (one protocol: the first)."""
    from .models.catalog import ORACLES

    part = by_group[by_group["protocol"] == by_group["protocol"].iloc[0]]
    groups = list(dict.fromkeys(part["group"]))
    floor = _floor(part)
    models = list(dict.fromkeys(part["model"]))
    models = ([floor] if floor in models else []) + [m for m in models if m != floor]

    def cell(v: pd.Series) -> str:
        return f"{v['PCC@M']:.3f} ± {v['PCC@M_sd']:.3f}".replace("-", "−")

    label = {floor: f"{floor} (the floor)", **{m: f"{m} (reads test counts)" for m in ORACLES}}
    rows = ["| model | " + " | ".join(f"{g} genes" for g in groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for m in models:
        by = part[part["model"] == m].set_index("group")
        rows.append(f"| {label.get(m, m)} | " + " | ".join(cell(by.loc[g]) if g in by.index else "" for g in groups)
                    + " |")
    return "\n".join(rows)


def show_classification(results_dir: str) -> int:
    from .classification import FLOOR, accuracy_verdict, format_accuracy

    path = os.path.join(results_dir, "accuracy.tsv")
    summary = pd.read_csv(path, sep="\t")
    print(f"{os.path.basename(os.path.normpath(results_dir))}: {path}")
    for line in accuracy_verdict(summary):
        print("  " + line)
    print(f"\ntest accuracy: the mean over test images, patch draws and training seeds; its sd over draws (each "
          "draw's accuracy), over seeds ('1 run' with one) and over folds, in points. Δ vs uniform (sampling at the "
          f"same P and N) and Δ vs {FLOOR}: paired over test images and seeds, 95% bootstrap interval resampling "
          "both. attention max / mean: the largest attention cell over the mean cell (1 = uniform), entropy / "
          "uniform: 1 = uniform; medians over test images.")
    print(as_text(format_accuracy(summary)))
    return 0


def show_spot_sweep(results_dir: str) -> int:
    """A spot-size sweep: each spot size's verdicts, then per-section PCC@M with the interval over the floor."""
    table = pd.read_csv(os.path.join(results_dir, "spot_sweep.tsv"), sep="\t")
    for line in closing_lines(results_dir):
        print(line)
    print("\nper section and pseudo-spot side (um): PCC@M, and in brackets its margin over the floor with a 95% "
          "interval resampling the section's windows (each spot size is its own study).")
    cell = [f"{p:.3f}" + (f" ({d:+.3f} [{lo:+.3f}, {hi:+.3f}])" if d == d else "")
            for p, d, lo, hi in zip(table["PCC@M"], table["dPCC@M"], table["dPCC@M_lo"], table["dPCC@M_hi"])]
    wide = table.assign(cell=cell).pivot_table(index=["protocol", "section", "model"], columns="spot_um",
                                               values="cell", aggfunc="first", sort=False)
    wide.columns = [f"{c:g} um" for c in wide.columns]
    print(as_text(wide.reset_index()))
    return 0


def show(results_dir: str) -> int:
    path = os.path.join(results_dir, "metrics.tsv")
    if not os.path.exists(path) and os.path.exists(os.path.join(results_dir, "accuracy.tsv")):
        return show_classification(results_dir)
    if not os.path.exists(path) and os.path.exists(os.path.join(results_dir, "spot_sweep.tsv")):
        return show_spot_sweep(results_dir)
    if not os.path.exists(path):
        print(f"{path}: not found; run the workflow first", file=sys.stderr)
        return 1
    study = os.path.basename(os.path.normpath(results_dir))
    if os.path.exists(os.path.join("resources", "demo", "SYNTHETIC_DATA.txt")) and study == "demo":
        print("NOTE: the demo study is SYNTHETIC (see resources/demo/SYNTHETIC_DATA.txt).\n")
    table = pd.read_csv(path, sep="\t")
    floor = _floor(table)
    for line in closing_lines(results_dir)[:-1]:  # the verdict lines the run ended with
        print(line)
    print("\nper section: each test section scored on its own spots, mean ± sd over the study's test sections "
          "(the verdict);\npooled: all test spots of a fold correlated at once, mean ± sd over folds (it also "
          "scores how sections differ).")
    print("PCC@M / PCC@S / PCC@F: mean / median / first quartile over genes of each gene's Pearson r between "
          "predicted\n  and measured expression.")
    print("raw targets: log1p + min-max of counts (EGN); library_size: counts per 10k first (ST-Net, TCGN).")
    print("pPCC@M: partial PCC given the spot's log total count (what is predicted beyond cellularity).")
    if floor:
        how = ""
        if "resampled" in table:
            r = table[(table["evaluation"] == "per_slide") & table["resampled"].notna()]
            how = f" (per section: {r['resampled'].iloc[0]} resampled)" if len(r) else ""
        print(f"ΔPCC@M: margin over {floor}, the floor, on the same windows;\n  95% paired bootstrap interval{how}.\n"
              f"ahead: the test sections on which the model beats the floor.")
    if "depth_oracle" in set(table["model"]):
        print("depth_oracle (oracle): each gene from the test spot's own measured log total count, fitted on "
              "training spots;\n  it reads test data, so it is a ceiling for depth alone, not a method.")
    for protocol, evaluation, block in display_blocks(table):
        name = EVALUATION_NAMES.get(evaluation, evaluation)
        print(f"\n{protocol} targets, {name}" if protocol else f"\n{name}")
        print(as_text(block))
    if "note" in table and table["note"].notna().any():
        print("\nnotes")
        for (model, protocol), n in table.dropna(subset=["note"]).groupby(["model", "protocol"], sort=False)["note"]:
            print(f"  {model} ({protocol}): {n.iloc[0]}")
    sections = os.path.join(results_dir, "metrics_by_section.tsv")
    if os.path.exists(sections):
        by_section = pd.read_csv(sections, sep="\t")
        per_fold = by_section.groupby("fold")["section"].nunique() if len(by_section) else pd.Series(dtype=int)
        if len(per_fold) and per_fold.max() > 1:
            print("\neach test section (metrics_by_section.tsv; the margin's interval resamples the section's windows)")
            print(as_text(display_sections(by_section)))
    groups = os.path.join(results_dir, "metrics_by_group.tsv")
    if os.path.exists(groups):
        print("\nPCC by gene group (pooled; metrics_by_group.tsv)")
        print(as_text(display_groups(pd.read_csv(groups, sep="\t"))))
    return 0


def readme(results_dir: str) -> int:
    """The README's demo table and printout from a run (``--readme``), to paste when re-recording the demo."""
    groups = os.path.join(results_dir, "metrics_by_group.tsv")
    if not os.path.exists(groups):
        print(f"{groups}: not found; run the workflow first", file=sys.stderr)
        return 1
    print(group_table_markdown(pd.read_csv(groups, sep="\t")))
    print("\n```\n" + "\n".join(closing_lines(results_dir)) + "\n```")
    return 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--readme"]
    target = args[0] if args else "results/demo"
    sys.exit(readme(target) if "--readme" in sys.argv[1:] else show(target))
