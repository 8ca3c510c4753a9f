"""A study whose worker is killed with SIGKILL at a chosen moment, retried by the study's driver:
every table of every run equals the uninterrupted study's, row for row, and ``karmic lake check``
finds nothing. The kill is real (``KARMIC_CRASH_AT``: the worker sends itself SIGKILL at the
n-th time it reaches a point; ``KARMIC_CRASH_ONCE``: only the first worker to get there).

The study has the four kinds: ``full`` (TVT and the matchmaker: transports in every update),
``baseline`` and the scripted ``random`` policy, whose killed simulation is resumed in place.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from crash_util import assert_same_run

ROOT = Path(__file__).resolve().parent.parent

STUDY = """
[study]
name = "crash"
registered = "2026-12-04"
[factors]
conditions = ["full", "baseline", "random"]
grid_sizes = [10]
seeds = [1, 2]
[[levels]]
name = "x"
env = { max_steps = 10 }
[budget]
total_steps = 120
episodes = 6
train = { num_envs = 2, num_steps = 10, seq_len = 5, hidden = 16, latent = 8, checkpoint_every = 2, num_minibatches = 2, update_epochs = 2, memory_size = 30, gamma = 0.8, tvt_threshold = 0.0, precision = "fp32" }
[windows]
late = [0.5, 1.0]
"""


def _study(tmp: Path, lake: Path, crash: str | None = None) -> str:
    study = tmp / "crash.toml"
    study.write_text(textwrap.dedent(STUDY))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if crash:
        env.update(KARMIC_CRASH_AT=crash, KARMIC_CRASH_ONCE=str(tmp / f"crashed-{lake.name}"))
    p = subprocess.run([sys.executable, "-m", "karmic.cli", "study", "run", str(study), "--lake", str(lake),
                        "--workers", "1"], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    if crash:
        assert (tmp / f"crashed-{lake.name}").exists(), f"the kill at {crash} never happened"
    return p.stdout + p.stderr


def _runs(lake: Path) -> list[str]:
    return sorted(p.name.split("=", 1)[1] for p in (lake / "runs").glob("run_id=*"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("crash_clean")
    _study(tmp, tmp / "lake")
    return tmp / "lake"


def _same_lakes(a: Path, b: Path) -> None:
    import shutil

    assert _runs(a) == _runs(b)
    for run in _runs(a):  # compare the run of lake b against lake a's, inside one lake
        merged = b.parent / f"cmp-{run}"
        for t in ("runs", "events", "episodes", "actions", "tvt_transports", "trajectories"):
            for src, name in ((a, "whole"), (b, "split")):
                d = src / t / f"run_id={run}"
                if d.is_dir():
                    shutil.copytree(d, merged / t / f"run_id={name}")
        assert_same_run(merged, "whole", "split")


# a study runs 6 cells in a subprocess per try (about a minute each on a loaded 2-core machine):
# slow; make test has the same kills on single runs (test_crash_resume.py)
@pytest.mark.slow
@pytest.mark.parametrize("crash", [
    "write.tvt_transports:3",  # during a transport write
    "simulate.step:25",  # inside a scripted simulation
])
def test_study_worker_killed_resumes_every_table_exactly(clean, tmp_path, crash):
    from pipelines.lake_check import check_lake

    lake = tmp_path / "lake"
    out = _study(tmp_path, lake, crash)
    assert "retry" in out, out
    _same_lakes(clean, lake)
    assert check_lake(lake) == [] and check_lake(clean) == []


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["rollout.step:37", "learn.minibatch:11", "update.after_shard:4",
                                   "write.events:7", "write.episodes:2", "write.checkpoints:1",
                                   "simulate.step:0", "write.actions:9"])
def test_study_worker_killed_anywhere_resumes_every_table_exactly(clean, tmp_path, crash):
    from pipelines.lake_check import check_lake

    lake = tmp_path / "lake"
    _study(tmp_path, lake, crash)
    _same_lakes(clean, lake)
    assert check_lake(lake) == []
