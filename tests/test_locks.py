"""The CPU and CUDA locks (issue 37): the same pins but torch's build, every pin hashed, and the
Makefile choosing the pair for the machine (TORCH=cpu|cuda, auto from nvidia-smi)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton$)")


def _pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", text, re.M))
    # every pin carries at least one hash (pip's hash-checking mode installs nothing unhashed)
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text.split("\n", 6)[-1])
    assert all("--hash=sha256:" in b for b in blocks if re.match(r"[A-Za-z0-9_.\-]+==", b)), name
    return pins


@pytest.mark.parametrize("cuda, cpu", [("requirements.lock", "requirements-cpu.lock"),
                                       ("requirements-dev.lock", "requirements-dev-cpu.lock")])
def test_cpu_lock_is_the_cuda_lock_with_torch_cpu_and_no_nvidia(cuda, cpu):
    a, b = _pins(cuda), _pins(cpu)
    assert b.pop("torch") == a.pop("torch") + "+cpu"
    assert not [k for k in b if CUDA_ONLY.match(k)]
    assert {k: v for k, v in a.items() if not CUDA_ONLY.match(k)} == b
    assert [k for k in a if CUDA_ONLY.match(k)]  # the CUDA lock does carry them


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_makefile_picks_the_lock_for_the_torch_build():
    def dry(*args: str) -> str:
        p = subprocess.run(["make", "-n", *args, "VENV=/nonexistent/venv", "/nonexistent/venv/.installed-dev"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        return p.stdout + p.stderr

    assert "-r requirements-dev-cpu.lock" in dry("TORCH=cpu")
    out = dry("TORCH=cuda")
    assert "-r requirements-dev.lock" in out and "download.pytorch.org" not in out
    # where no folder of pip's holds the CPU wheel, TORCH_CPU_INDEX (pytorch.org's CPU index) is added
    p = subprocess.run(["make", "-n", "TORCH=cpu", "PIP_FIND_LINKS=", "TORCH_CPU_INDEX=https://example.invalid/cpu",
                        "VENV=/nonexistent/venv", "/nonexistent/venv/.installed"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert "--extra-index-url https://example.invalid/cpu -r requirements-cpu.lock" in p.stdout
    assert "TORCH must be cpu or cuda" in dry("TORCH=gpu")
