# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo install test test-slow lint bench clean lock

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Installs take the exact files of the lock (requirements.lock, and requirements-dev.lock with the
# dev extra: versions and sha256 hashes), then the project itself without resolving anything
# again; `make lock` refreshes both locks from pyproject.toml to the newest releases its ranges
# allow. The lock is compiled against the package index alone (no local wheel folder from pip's
# machine config): torch==2.13.0 is then the index's build, the one results/ was produced with,
# and the hashes keep pip from taking a local build of the same version (2.13.0+cpu) instead.
LOCK := requirements.lock
DEVLOCK := requirements-dev.lock
LOCKENV := .venv-lock
# CUSTOM_COMPILE_COMMAND: the header of each lock names the command and the file it writes (the
# default header is pip-compile's own command line, which names wherever the file was first written)
COMPILE = env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock, writing $(1)" \
	$(LOCKENV)/bin/pip-compile -q --upgrade \
	--strip-extras --allow-unsafe --generate-hashes --no-emit-find-links --no-emit-index-url

# --force-reinstall: an installed build of the same version (2.13.0+cpu) would count as satisfied
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q --force-reinstall -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(DEVSTAMP): pyproject.toml $(DEVLOCK) | $(BIN)/python
	$(BIN)/pip install -q --force-reinstall -r $(DEVLOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP) $@

# the install step alone: the locked dependencies and karmic itself into .venv (no tests, no demo)
install: $(STAMP)

# pip-tools lives in its own venv so it never changes the versions in .venv; one target per lock
# file so each header names its own file
lock: lock-main lock-dev

$(LOCKENV)/bin/pip-compile:
	$(PY) -m venv $(LOCKENV) && $(LOCKENV)/bin/pip install -q pip-tools

.PHONY: lock-main lock-dev
lock-main: | $(LOCKENV)/bin/pip-compile
	$(call COMPILE,$(LOCK)) -o $(LOCK) pyproject.toml
lock-dev: | $(LOCKENV)/bin/pip-compile
	$(call COMPILE,$(DEVLOCK)) --extra dev -o $(DEVLOCK) pyproject.toml

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
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -x -m "not slow" -n 2

# the long scientific checks (TVT learning key-to-door at a reduced budget; SSD reproduction with
# KARMIC_SSD_SRC set), kept out of make test's 10 minutes
test-slow: $(DEVSTAMP)
	$(BIN)/python -m pytest -m slow

lint: $(DEVSTAMP)
	$(BIN)/ruff check karmic pipelines tests benchmarks
	$(BIN)/ruff format --check karmic pipelines tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) $(LOCKENV) .pytest_cache
