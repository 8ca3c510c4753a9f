# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo install test test-slow lint bench clean lock lock-cpu docs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Installs take the exact files of a lock (versions and sha256 hashes), then the project itself
# without resolving anything again. Two builds of torch, one lock pair each:
# - TORCH=cuda: requirements.lock / requirements-dev.lock, torch from PyPI (its CUDA build, with
#   ~15 nvidia-* packages: a 5.5 GB venv). The build results/ was produced with (on the CPU).
# - TORCH=cpu: requirements-cpu.lock / requirements-dev-cpu.lock, the same versions of everything
#   else and torch's CPU build (X+cpu, no nvidia packages). PyPI has no CPU build: pip takes it
#   from a folder pip's own config points at (find-links) where one holds it, else from
#   pytorch.org's CPU index (TORCH_CPU_INDEX); the hash in the lock decides either way.
# TORCH defaults to cuda where an NVIDIA driver answers (`nvidia-smi -L`), else cpu; choose with
# `make test TORCH=cuda` (or cpu). Switching reinstalls the venv from the other lock.
# `make lock` refreshes all four from pyproject.toml to the newest releases its ranges allow:
# the CUDA pair against the package index alone (no local wheel folder from pip's machine
# config), then the CPU pair seeded from them, so both pairs pin the same versions but torch.
TORCH ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
ifeq ($(TORCH),cuda)
LOCK := requirements.lock
DEVLOCK := requirements-dev.lock
TORCH_SOURCE :=
else ifeq ($(TORCH),cpu)
LOCK := requirements-cpu.lock
DEVLOCK := requirements-dev-cpu.lock
# the folders pip already searches (PIP_FIND_LINKS, its config's find-links) hold the CPU wheel?
PIP_LINKS := $(PIP_FIND_LINKS) $(shell $(PY) -m pip config get global.find-links 2>/dev/null)
TORCH_CPU_INDEX ?= $(if $(strip $(foreach d,$(PIP_LINKS),$(wildcard $(d)/torch-*+cpu-*.whl))),,https://download.pytorch.org/whl/cpu)
TORCH_SOURCE := $(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX))
else
$(error TORCH must be cpu or cuda, got '$(TORCH)')
endif
FLAVOR := $(VENV)/.torch-$(TORCH)
LOCKENV := .venv-lock
# CUSTOM_COMPILE_COMMAND: the header of each lock names the command and the file it writes (the
# default header is pip-compile's own command line, which names wherever the file was first written)
COMPILE = env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock, writing $(1)" \
	$(LOCKENV)/bin/pip-compile -q \
	--strip-extras --allow-unsafe --generate-hashes --no-emit-find-links --no-emit-index-url
# the CPU pair: where the CPU wheel lies when the lock is made (a folder or an index page of it)
TORCH_CPU_LINKS ?= $(or $(firstword $(foreach d,$(PIP_FIND_LINKS) $(shell $(PY) -m pip config get global.find-links 2>/dev/null),$(if $(wildcard $(d)/torch-*+cpu-*.whl),$(d)))),https://download.pytorch.org/whl/cpu/torch/)

# the venv's torch build: a switch of TORCH drops the stamps, so the other lock is installed
$(FLAVOR): | $(BIN)/python
	rm -f $(VENV)/.torch-* $(STAMP) $(DEVSTAMP)
	touch $@

# --force-reinstall: an installed build of the same version (2.13.0+cpu vs 2.13.0) would count as
# satisfied
$(STAMP): pyproject.toml $(LOCK) $(FLAVOR) | $(BIN)/python
	$(BIN)/pip install -q --force-reinstall $(TORCH_SOURCE) -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(DEVSTAMP): pyproject.toml $(DEVLOCK) $(FLAVOR) | $(BIN)/python
	$(BIN)/pip install -q --force-reinstall $(TORCH_SOURCE) -r $(DEVLOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP) $@

# the install step alone: the locked dependencies and karmic itself into .venv (no tests, no demo)
install: $(STAMP)

# `make lock LOCK_UPGRADE=` keeps every pin the locks have and only adds what pyproject.toml
# newly needs (a new dependency), instead of moving everything to the newest release
LOCK_UPGRADE ?= --upgrade

# pip-tools lives in its own venv so it never changes the versions in .venv
$(LOCKENV)/bin/pip-compile:
	$(PY) -m venv $(LOCKENV) && $(LOCKENV)/bin/pip install -q pip-tools

lock: | $(LOCKENV)/bin/pip-compile
	$(call COMPILE,requirements.lock) $(LOCK_UPGRADE) -o requirements.lock pyproject.toml
	$(call COMPILE,requirements-dev.lock) $(LOCK_UPGRADE) --extra dev -o requirements-dev.lock pyproject.toml
	$(MAKE) lock-cpu

# the CPU pair alone, seeded from the CUDA pair's pins (no --upgrade): torch's CPU build
# (torch-cpu.in) from TORCH_CPU_LINKS, everything else as in the CUDA pair
lock-cpu: | $(LOCKENV)/bin/pip-compile
	cp requirements.lock requirements-cpu.lock
	$(call COMPILE,requirements-cpu.lock) --find-links $(TORCH_CPU_LINKS) -o requirements-cpu.lock pyproject.toml torch-cpu.in
	cp requirements-dev.lock requirements-dev-cpu.lock
	$(call COMPILE,requirements-dev-cpu.lock) --find-links $(TORCH_CPU_LINKS) --extra dev -o requirements-dev-cpu.lock pyproject.toml torch-cpu.in

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
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site
	$(BIN)/python -m pytest -x -m "not slow" -n 2 --durations=15

# the long scientific checks (TVT learning key-to-door at a reduced budget; SSD reproduction with
# KARMIC_SSD_SRC set), kept out of make test's 10 minutes
test-slow: $(DEVSTAMP)
	$(BIN)/python -m pytest -m slow

# the code is formatted by hand under ruff check's rules (E501 off), not by `ruff format`, which would
# rewrite most files; lint is what `make test` runs first, without the suite
lint: $(DEVSTAMP)
	$(BIN)/ruff check karmic pipelines tests benchmarks
	$(BIN)/lint-imports

# The documentation site (mkdocs.yml, docs/) into site/: the results pages and the CLI reference are
# generated at build time by docs/hooks.py; --strict fails on a broken link or anchor. Nothing is
# downloaded while building (no web fonts, no social cards).
docs: $(DEVSTAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) $(LOCKENV) .pytest_cache site
