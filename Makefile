# histexpr: two commands do all setup.
#   make demo   create .venv, install, run the workflow on the embedded (synthetic) demo study
#   make test   create .venv, install, run the test suite
#   make test-slurm  the workflow through profiles/slurm on a single-node SLURM cluster started on localhost
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slurm test-fast lint config-docs clean-results help

help:
	@echo "make demo | make test | make test-slurm | make test-fast | make lint | make config-docs | make clean-results"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import torch, timm, faiss, openslide, scanpy, snakemake" 
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP)

# --logger histexpr: a line per finished rule, the jobs' epoch lines and warnings, the verdict at the end.
demo: install
	$(BIN)/snakemake --cores $(CORES) --show-failed-logs --logger histexpr

test: install
	$(BIN)/python -m pytest -q -m "not slurm" --durations=20 tests

# A real SLURM cluster on localhost (installs slurm-wlm + munge with apt when missing; needs root), the demo
# study submitted through profiles/slurm, the same metrics as a local run; the daemons stop afterwards.
test-slurm: install
	PYTHON=$(BIN)/python bash tests/slurm/run.sh

test-fast: install
	$(BIN)/python -m pytest -q -m "not workflow" tests

# ruff (configured in pyproject.toml) on the library, scripts, tests and benchmarks; Snakemake's own linter.
lint: install
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

# config/README.md from workflow/schemas/ (tests/test_config_docs.py fails when they differ)
config-docs: install
	$(BIN)/python -m histexpr.schema_doc > config/README.md

clean-results:
	rm -rf results/demo resources/demo .snakemake
