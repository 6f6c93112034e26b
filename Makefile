# histexpr: two commands do all setup.
#   make demo   create .venv, install, run the workflow on the embedded (synthetic) demo study
#   make test   create .venv, install, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean-results help

help:
	@echo "make demo | make test | make test-fast | make lint | make clean-results"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import torch, timm, faiss, openslide, scanpy, snakemake" 
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/snakemake --cores $(CORES) --show-failed-logs
	@echo
	$(BIN)/python -m histexpr.show results/demo

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not workflow" tests

lint: install
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results/demo resources/demo .snakemake
