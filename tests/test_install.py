"""The package installed from a wheel, run from a folder outside the repository (issue 34).

The wheel is built once (``pip wheel --no-deps --no-build-isolation`` from a copy of the working
tree) and installed with ``--no-deps`` into a temporary venv whose only other path is this
interpreter's site-packages (for the dependencies: nothing is downloaded). Every command then runs
from an empty temporary folder, with no PYTHONPATH: ``simulate``, ``query``, ``sql``, ``train``,
``replay``, ``study run`` and ``study report`` on a study file given by path, ``study report
--from-results`` on a results folder given by path, ``lake check``, and ``study run demo`` finds
the study the package ships.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

STUDY = """
[study]
name = "outside"
registered = "2026-12-04"
[factors]
conditions = ["baseline", "random"]
grid_sizes = [10]
seeds = [1, 2]
[[levels]]
name = "x"
env = { max_steps = 20 }
[budget]
total_steps = 80
episodes = 2
train = { num_envs = 2, num_steps = 20, seq_len = 10, hidden = 16, latent = 8, checkpoint_every = 1 }
[windows]
late = [0.5, 1.0]
[[predictions]]
id = "above-random"
metric = "zaps_fired_per_agent_step"
test = "greater"
a = { condition = "baseline" }
b = { condition = "random" }
"""

IGNORE = shutil.ignore_patterns(".git", ".venv*", "data_lake", "build", "dist", "*.egg-info", "__pycache__",
                                "results", "reports", "runs", "plots", ".pytest_cache", ".ruff_cache", "*.gif")


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """(venv bin folder, environment, working folder outside the repository)."""
    tmp = tmp_path_factory.mktemp("install")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KARMIC_LAKE", "KARMIC_QUERIES")}
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=IGNORE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "wheel"), str(src)], check=True, capture_output=True, env=clean)
    wheel = next((tmp / "wheel").glob("karmic_rl-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, env=clean)
    # the dependencies: this interpreter's site-packages, after the venv's own (a plain path in a
    # .pth file: that folder's own .pth files, an editable karmic among them, are not run)
    venv_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    deps = [p for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"]) if Path(p).is_dir()]
    (venv_site / "zz_karmic_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    env = {**clean, "NUMBA_CACHE_DIR": str(tmp / "numba")}
    env["NUMBA_CACHE_DIR"] = str(tmp / "numba")  # compiled once for all the commands below
    work = tmp / "elsewhere"
    work.mkdir()
    return venv / "bin", env, work


def _karmic(outside, *args: str, ok: bool = True) -> str:
    bindir, env, work = outside
    p = subprocess.run([str(bindir / "karmic"), *args], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)
    if ok:
        assert p.returncode == 0, f"karmic {' '.join(args)}: {p.stdout}{p.stderr}"
    return p.stdout


def test_the_wheel_runs_every_command_outside_the_repository(outside):
    bindir, env, work = outside
    where = subprocess.run([str(bindir / "python"), "-c", "import karmic, pipelines; print(karmic.__file__); "
                            "print(pipelines.__file__)"], cwd=work, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert all(str(bindir.parent) in w for w in where), where  # the installed copy, not the checkout
    lake = str(work / "lake")
    _karmic(outside, "simulate", "--episodes", "2", "--grid-size", "10", "--max-steps", "20", "--seed", "1",
            "--lake", lake)
    assert "zaps" in _karmic(outside, "query", "zap_counts", "--lake", lake).lower()
    n = int(_karmic(outside, "sql", "select count(*) as n from events", "--format", "csv", "--lake", lake)
            .splitlines()[-1])
    assert n > 0
    _karmic(outside, "train", "--mode", "baseline", "--seed", "3", "--total-steps", "80", "--grid-size", "10",
            "--num-envs", "2", "--num-steps", "20", "--seq-len", "10", "--hidden", "16", "--set",
            "max_steps=20", "--threads", "1", "--lake", lake)
    sim = _karmic(outside, "sql", "select run_id from runs where kind = 'simulate'", "--format", "csv",
                  "--lake", lake).splitlines()[-1]
    _karmic(outside, "replay", sim, "--check", "--lake", lake)
    # a study file and a results folder given by path, neither under the working folder
    study = work.parent / "studies-elsewhere" / "outside.toml"
    study.parent.mkdir()
    study.write_text(textwrap.dedent(STUDY))
    out = work.parent / "results-elsewhere"
    _karmic(outside, "study", "run", str(study), "--lake", lake, "--workers", "1", "--compact")
    assert list((Path(lake) / "events" / "_compacted").glob("*.parquet"))  # --compact, then read as before
    _karmic(outside, "study", "report", str(study), "--lake", lake, "--out", str(out), "--no-episodes")
    before = (out / "verdicts.json").read_bytes()
    _karmic(outside, "study", "report", str(study), "--from-results", "--out", str(out))
    assert (out / "verdicts.json").read_bytes() == before and (out / "report.md").is_file()
    assert _karmic(outside, "lake", "check", "--lake", lake).startswith("OK: ")
    # the shipped studies and every query folder are in the package
    assert "demo" in _karmic(outside, "study", "status", "demo", "--lake", lake)
    assert "retribution_ratio" in _karmic(outside, "query", "--list")
