# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP) $@

# The main job in miniature on the default lake (./data_lake): a simulated population with the
# matchmaker, then studies/demo.toml (baseline, tvt, matchmaker, full and the random policy at
# 10x10, 2 seeds, a smoke budget) run and reported with its verdicts. About 4 min on 2 cores.
demo: $(STAMP)
	$(BIN)/karmic simulate --policy mixed --episodes 10 --grid-size 10 --matchmaker --seed 1
	$(BIN)/karmic query zap_counts
	$(BIN)/karmic study run demo
	$(BIN)/karmic study report demo --out reports/demo-study
	$(BIN)/karmic report --out reports/demo

test: $(DEVSTAMP)
	$(BIN)/ruff check karmic pipelines tests benchmarks
	$(BIN)/python -m pytest -x -m "not slow"

lint: $(DEVSTAMP)
	$(BIN)/ruff check karmic pipelines tests benchmarks
	$(BIN)/ruff format --check karmic pipelines tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
