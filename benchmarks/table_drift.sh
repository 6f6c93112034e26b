#!/usr/bin/env bash
# How the HER2ST tables move between commits: the same study (benchmarks/table_drift.yaml) run at each commit
# given, in a worktree with that commit's code, then each model's pooled PCC@M and margin over colour_ridge side
# by side, and whether the windows are byte-identical.
#   bash benchmarks/table_drift.sh 68366e7 5210af6 0edebc8        (docs/inputs.md quotes this run)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-$(mktemp -d)}
root=$(cd "$repo/../shared/data/her2st" && pwd)
sed "s|root: .*|root: $root|" "$repo/benchmarks/table_drift.yaml" > "$work/config.yaml"
for c in "$@"; do
  [ -d "$work/wt_$c" ] || git -C "$repo" worktree add -f -q "$work/wt_$c" "$c"
  if [ ! -f "$work/run_$c/results/drift/metrics.tsv" ]; then
    echo "== $c"
    # the commit's own library, not the installed one (scripts copied by Snakemake would import that)
    PYTHONPATH="$work/wt_$c/src" PATH="$repo/.venv/bin:$PATH" snakemake -s "$work/wt_$c/Snakefile" \
      -d "$work/run_$c" --cores 2 --configfile "$work/config.yaml" > "$work/run_$c.log" 2>&1 || {
      echo "$c failed: $work/run_$c.log"; exit 1; }
  fi
done
"$repo/.venv/bin/python" - "$work" "$@" <<'PY'
import sys

import numpy as np
import pandas as pd

work, commits = sys.argv[1], sys.argv[2:]
rows = []
for c in commits:
    m = pd.read_csv(f"{work}/run_{c}/results/drift/metrics.tsv", sep="\t")
    for _, r in m[(m.evaluation == "pooled") & m.model.isin(["colour_ridge", "ridge", "vit"])].iterrows():
        margin = "" if r["model"] == "colour_ridge" else \
            f" {r['dPCC@M']:+.3f} [{r['dPCC@M_lo']:+.3f}, {r['dPCC@M_hi']:+.3f}]"
        rows.append({"protocol": r["protocol"], "model": r["model"], "commit": c, "v": f"{r['PCC@M']:.3f}{margin}"})
print(pd.DataFrame(rows).pivot(index=["protocol", "model"], columns="commit", values="v")[commits].to_string())
for a, b in zip(commits, commits[1:]):
    same = all(np.array_equal(np.load(f"{work}/run_{a}/results/drift/tiles/{s}.npy"),
                              np.load(f"{work}/run_{b}/results/drift/tiles/{s}.npy")) for s in ("A1", "C2", "C3", "C4", "C5"))
    print(f"windows {a} -> {b}: {'byte-identical' if same else 'differ'}")
PY
