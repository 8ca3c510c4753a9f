"""Kill a run at many moments, resume it, and get the uninterrupted run back, row for row.

Property-style: for each condition kind (plain PPO, TVT, the matchmaker, DRQN with TVT) and each
kill point of ``pipelines.faults`` (inside a rollout, inside a learner update, between the shard
write and the checkpoint, inside the atomic write of each table), the hit at which the run dies is
drawn from the number of times an uninterrupted run reaches that point. The killed run is then
resumed the way ``karmic train --resume`` and a study do (from its last checkpoint, or from scratch
under the same run id when it has none), and every table it wrote must equal the uninterrupted
run's: events, episodes, actions, tvt_transports, the kept trajectory shards and run.json
(wall-clock fields aside). ``karmic lake check`` must then find nothing.

In-process kills raise ``faults.InjectedCrash`` (a BaseException: no ``except Exception`` in the
code sees it); ``test_sigkill_*`` kill real processes with SIGKILL.
"""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from crash_util import assert_same_run

from karmic.training.learners import make_trainer, resumed_trainer
from karmic.training.ppo import TrainConfig
from pipelines import faults
from pipelines.checkpoints import latest_checkpoint, list_checkpoints, load_checkpoint

pytest.importorskip("karmic.envs.core", reason="needs the Harvest env (karmic.envs.core)")

KINDS = {"plain": "baseline", "tvt": "tvt", "matchmaker": "matchmaker", "full": "full"}
POINTS = ("rollout.step", "learn.minibatch", "update.after_shard", "update.before_checkpoint",
          "write.events", "write.actions", "write.episodes", "write.tvt_transports",
          "write.trajectories", "write.checkpoints", "commit.events", "commit.episodes",
          "commit.actions", "commit.tvt_transports")


def _cfg(mode: str, run_id: str) -> TrainConfig:
    # 6 updates of one 10-step round, 2 envs on a 10x10 grid; a checkpoint every 2 updates, so a
    # kill can land 0 or 1 updates past the last one. TVT's memory spans 3 shards, and gamma 0.8
    # (a transport spans >= 5 steps) with threshold 0 makes every update write transports
    return TrainConfig(mode=mode, grid_size=10, seed=11, num_envs=2, num_steps=10, seq_len=5,
                       hidden=16, latent=8, total_steps=2 * 10 * 6, checkpoint_every=2,
                       num_minibatches=2, update_epochs=2, threads=1, memory_size=30, gamma=0.8,
                       tvt_threshold=0.0, precision="fp32", env_overrides={"max_steps": 10},
                       run_id=run_id)


_whole: dict[str, tuple] = {}  # kind -> (lake, hits per point): one uninterrupted run per kind


def _uninterrupted(kind: str, tmp_root) -> tuple:
    if kind not in _whole:
        lake = tmp_root / f"lake-{kind}"
        faults.arm("never")  # counts how often each point is reached
        try:
            make_trainer(_cfg(KINDS[kind], "whole"), lake).run()
            hits = {p: faults.hits(p) for p in POINTS}
        finally:
            faults.disarm()
        _whole[kind] = (lake, hits)
    return _whole[kind]


def _resume(lake, run_id: str, mode: str) -> None:
    """What a study's retry does: from the last checkpoint, else from scratch, same run id."""
    if list_checkpoints(lake, run_id):
        resumed_trainer(run_id, lake).run()
    else:
        make_trainer(_cfg(mode, run_id), lake).run()


def _kill_and_resume(lake, kind: str, point: str, hit: int) -> None:
    faults.arm(point, hit)
    try:
        with pytest.raises(faults.InjectedCrash):
            make_trainer(_cfg(KINDS[kind], "split"), lake).run()
    finally:
        faults.disarm()
    _resume(lake, "split", KINDS[kind])


def _draws(kind: str, point: str, hits: int, k: int) -> list[int]:
    """``k`` kill moments among the ``hits`` times the point is reached, drawn reproducibly."""
    rng = random.Random(f"{kind}/{point}")
    return sorted(rng.sample(range(hits), min(k, hits)))


def _same_params(lake, a: str, b: str) -> None:
    pa_ = load_checkpoint(latest_checkpoint(lake, a))["model"]
    pb = load_checkpoint(latest_checkpoint(lake, b))["model"]
    for k in pa_:
        torch.testing.assert_close(pa_[k], pb[k], rtol=0, atol=0)


def _check(kind: str, point: str, k: int, tmp_path_factory) -> None:
    root = tmp_path_factory.getbasetemp()
    whole_lake, hits = _uninterrupted(kind, root)
    if hits[point] == 0:
        pytest.skip(f"{kind} never reaches {point}")
    for hit in _draws(kind, point, hits[point], k):
        lake = tmp_path_factory.mktemp(f"{kind}-{point}-{hit}")
        shutil.copytree(whole_lake, lake, dirs_exist_ok=True)
        _kill_and_resume(lake, kind, point, hit)
        counts = assert_same_run(lake, "whole", "split")
        assert counts["events"] > 0 and counts["episodes"] > 0 and counts["actions"] > 0
        if kind in ("tvt", "full"):  # transports in every update: a kill anywhere re-runs some
            assert hits["write.tvt_transports"] == 6, hits
        _same_params(lake, "whole", "split")
        from pipelines.lake_check import check_lake

        assert check_lake(lake) == [], f"killed at {point} hit {hit}"


# make test: every kill point once, each with one kind (a moment drawn per case); the whole
# matrix, four moments per case, is the slow test below
FAST = [("plain", "rollout.step"), ("plain", "commit.events"), ("tvt", "commit.tvt_transports"), ("plain", "update.before_checkpoint"), ("plain", "write.episodes"),
        ("plain", "write.checkpoints"), ("tvt", "learn.minibatch"), ("tvt", "write.tvt_transports"),
        ("tvt", "update.after_shard"), ("tvt", "write.actions"), ("tvt", "update.before_checkpoint"),
        ("matchmaker", "write.events"), ("matchmaker", "write.trajectories"),
        ("matchmaker", "rollout.step")]


@pytest.mark.parametrize(("kind", "point"), FAST)
def test_killed_anywhere_a_resumed_run_is_the_uninterrupted_one(kind, point, tmp_path_factory):
    _check(kind, point, 1, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_killed_anywhere_many_moments(kind, point, tmp_path_factory):
    _check(kind, point, 4, tmp_path_factory)


def test_sigkill_during_a_transport_write_then_resume(tmp_path_factory):
    """A real kill -9 in the middle of writing an update's transports (the temporary file written,
    not yet renamed), then ``resumed_trainer``: the uninterrupted run's tables, and the temporary
    file the killed writer left is gone."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    whole_lake, _ = _uninterrupted("full", tmp_path_factory.getbasetemp())
    lake = tmp_path_factory.mktemp("sigkill-full")
    shutil.copytree(whole_lake, lake, dirs_exist_ok=True)
    tests = Path(__file__).resolve().parent
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_crash_resume import _cfg; "
            "from karmic.training.learners import make_trainer; make_trainer(_cfg('full', 'split'), sys.argv[2]).run()")
    env = {**os.environ, "PYTHONPATH": str(tests.parent), faults.ENV: "write.tvt_transports:3"}
    p = subprocess.run([sys.executable, "-c", code, str(tests), str(lake)], env=env, capture_output=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    left = list((lake / "tvt_transports" / "run_id=split").glob(".*.tmp-*"))
    assert left, "the kill was to land between the write and the rename"
    from pipelines.lake_check import check_lake

    assert any(x.startswith("torn: ") for x in check_lake(lake))
    _resume(lake, "split", "full")
    assert not list((lake / "tvt_transports" / "run_id=split").glob(".*.tmp-*"))
    assert_same_run(lake, "whole", "split")
    assert check_lake(lake) == []


# --- scripted runs: a study's retry resumes the killed simulation in place ----------------------------
def _sim_payload(lake, run_id: str) -> dict:
    return {"lake": str(lake), "run_id": run_id, "grid_size": 10, "seed": 4,
            "simulate": {"episodes": 6, "policy": "random", "env_overrides": {"max_steps": 15}}}


@pytest.mark.parametrize("point", ["simulate.step", "write.events", "write.actions", "write.episodes"])
def test_a_killed_scripted_run_resumes_in_place_to_the_uninterrupted_one(tmp_path, point):
    from pipelines.lake_check import check_lake
    from pipelines.sweep import run_simulate_task

    out: dict = {}
    faults.arm("never")
    try:
        run_simulate_task(_sim_payload(tmp_path, "whole"), out)
        hits = faults.hits(point)
    finally:
        faults.disarm()
    assert out["status"] == "completed" and hits > 0
    for hit in _draws("scripted", point, hits, 2):
        lake = tmp_path / f"k{hit}"
        shutil.copytree(tmp_path / "runs", lake / "runs")
        for t in ("events", "episodes", "actions"):
            shutil.copytree(tmp_path / t, lake / t)
        faults.arm(point, hit)
        try:
            with pytest.raises(faults.InjectedCrash):
                run_simulate_task(_sim_payload(lake, "split"), {})
        finally:
            faults.disarm()
        out = {}
        run_simulate_task(_sim_payload(lake, "split"), out)
        assert out["status"] == "completed" and out["run_id"] == "split", out
        assert_same_run(lake, "whole", "split", tables=("events", "episodes", "actions"))
        assert check_lake(lake) == []
