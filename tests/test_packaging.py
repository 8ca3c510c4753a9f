"""Packaging a newcomer meets (issue 36): a LICENSE and its SPDX name in pyproject.toml, `make
install`, lock headers that name the file `make lock` writes, `karmic --version`."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

import karmic

ROOT = Path(__file__).resolve().parent.parent


def test_license_file_and_pyproject_agree():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert meta["version"] == karmic.__version__  # what `karmic --version` prints


def _make_n(target: str, *args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("no make")
    return subprocess.run(["make", "-n", "-B", target, *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("torch_build, lock", [("cuda", "requirements.lock"), ("cpu", "requirements-cpu.lock")])
def test_make_install_is_the_install_step_alone(torch_build, lock):

    # TORCH: the torch build (issue 37); the CPU one may add pytorch.org's index before -r
    out = _make_n("install", f"TORCH={torch_build}")
    assert re.search(rf"pip install -q --force-reinstall +(--extra-index-url \S+ )?-r {re.escape(lock)}\n", out)
    assert "pip install -q --no-deps -e ." in out
    assert "pytest" not in out and "karmic " not in out


def test_make_lock_headers_name_the_file_written():
    out = [ln for ln in _make_n("lock").splitlines() if "pip-compile -q" in ln]
    locks = ("requirements.lock", "requirements-dev.lock", "requirements-cpu.lock", "requirements-dev-cpu.lock")
    assert len(out) == len(locks)
    for line, lock in zip(out, locks, strict=True):
        assert f'CUSTOM_COMPILE_COMMAND="make lock, writing {lock}"' in line and f"-o {lock}" in line
