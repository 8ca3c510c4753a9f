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

demo: $(STAMP)
	$(BIN)/karmic simulate --policy mixed --episodes 20 --grid-size 20 --matchmaker --seed 1
	$(BIN)/karmic query zap_counts

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
