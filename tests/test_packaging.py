"""Packaging a newcomer meets (issue 36): a LICENSE and its SPDX name in pyproject.toml, `make
install`, lock headers that name the file `make lock` writes, `karmic --version`."""

from __future__ import annotations

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


def _make_n(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("no make")
    return subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_make_install_is_the_install_step_alone():
    out = _make_n("install")
    assert "pip install -q --force-reinstall -r requirements.lock" in out and "pip install -q --no-deps -e ." in out
    assert "pytest" not in out and "karmic " not in out


def test_make_lock_headers_name_the_file_written():
    out = [ln for ln in _make_n("lock").splitlines() if "pip-compile -q" in ln]
    assert len(out) == 2
    for line, lock in zip(out, ("requirements.lock", "requirements-dev.lock"), strict=True):
        assert f'CUSTOM_COMPILE_COMMAND="make lock, writing {lock}"' in line and f"-o {lock}" in line
