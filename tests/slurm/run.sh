#!/usr/bin/env bash
# make test-slurm: start a single-node SLURM cluster on localhost, run the cluster tests against it, and
# stop its daemons by their pid files whatever happens (failure, Ctrl-C, timeout's TERM).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
trap 'bash tests/slurm/cluster.sh stop' EXIT
bash tests/slurm/cluster.sh start
"$PY" -m pytest -q -m slurm tests/test_slurm.py "$@"
