#!/usr/bin/env bash
# Issue 37's GPU targets in one command on a GPU machine (benchmarks/gpu_check.py; docs/devices.md).
#
# The lent H200s have python3 3.12 with torch (2.11.0+cu130 as last seen), numba, pyarrow, typer,
# rich and matplotlib, but not duckdb, pettingzoo, gymnasium or farama-notifications, and reach no
# package index. So, once, on a machine that reaches PyPI, in the repo's root:
#     bash benchmarks/gpu_check.sh --fetch
# (cp312 manylinux wheels of those four, at the versions of requirements.lock, into .whl/, which .gitignore ignores: 25 MB).
# Then on the GPU machine (the device tool: carry [".whl"], timeout_s 600), two calls that fit a
# 15-minute lease with the machine's start:
#     bash benchmarks/gpu_check.sh --sections tests,throughput,scaling
#     bash benchmarks/gpu_check.sh --sections study --study-minutes 6
# and TVT's methods (old, new, new-r8; ~5 minutes):
#     bash benchmarks/gpu_check.sh --sections tvt-methods --updates 3
# Results: $OUT/gpu_check.json (+ gpu_check.log, study_run.log); without $OUT, ./gpu_check_out.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fetch" ]; then
  pins=$(grep -E '^(duckdb|pettingzoo|gymnasium|farama-notifications)==' requirements.lock | sed 's/ .*//')
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $pins
  exit 0
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
nvidia-smi -L || true
set -o pipefail
timeout 570 python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
