"""`karmic train` end to end on the real env and lake: tiny budgets, resume, bad input, policies."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from karmic.cli import app
from karmic.training.ppo import MODES, TrainConfig, Trainer, resumed_trainer

pytest.importorskip("karmic.envs.core", reason="needs the Harvest env (karmic.envs.core)")

TINY = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10",
        "--hidden", "32", "--set", "max_steps=20", "--threads", "1"]


def _read(lake, table, run_id) -> pa.Table:
    files = sorted((lake / table / f"run_id={run_id}").glob("*.parquet"))
    assert files, f"no {table} for {run_id}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def _tiny_cfg(mode="baseline", **kw) -> TrainConfig:
    base = dict(mode=mode, grid_size=10, seed=7, num_envs=2, num_steps=20, seq_len=10, hidden=32,
                latent=16, total_steps=2 * 20 * 4, checkpoint_every=1, threads=1,
                env_overrides={"max_steps": 20})
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("mode", list(MODES))
def test_tiny_run_writes_events_trajectories_checkpoint(tmp_path, mode):
    from karmic.conditions import get_condition

    extra = []
    if (partner := get_condition(mode).yoke) is not None:  # a yoked condition replays a finished partner run
        res = CliRunner().invoke(
            app, ["train", "--mode", partner, "--seed", "4", "--total-steps", "80", "--lake", str(tmp_path), *TINY])
        assert res.exit_code == 0, res.output
        extra = ["--tvt-yoke-run", res.stdout.strip().splitlines()[-1].split("\t")[0]]
    res = CliRunner().invoke(
        app, ["train", "--mode", mode, "--seed", "3", "--total-steps", "80", "--lake", str(tmp_path), *TINY, *extra]
    )
    assert res.exit_code == 0, res.output
    run_id = res.stdout.strip().splitlines()[-1].split("\t")[0]
    assert run_id.startswith(f"{mode}-g10-s3-")
    run = json.loads((tmp_path / "runs" / f"run_id={run_id}" / "run.json").read_text())
    assert run["condition"] == mode and run.get("status") == "completed"
    ev = _read(tmp_path, "events", run_id)
    eps = _read(tmp_path, "episodes", run_id)
    # 80 env steps = 2 rounds of 2 envs x 20 steps; episodes numbered round * B + env
    assert sorted(set(eps.column("episode").to_pylist())) == [0, 1, 2, 3]
    assert eps.num_rows == 4 * 5
    assert set(ev.column("episode").to_pylist()) == {0, 1, 2, 3}
    # (episode, seq) unique; global_step = (round * max_steps + t) * B
    keys = list(zip(ev.column("episode").to_pylist(), ev.column("seq").to_pylist(), strict=True))
    assert len(keys) == len(set(keys))
    g = np.asarray(ev.column("global_step"))
    e = np.asarray(ev.column("episode"))
    t = np.asarray(ev.column("t"))
    np.testing.assert_array_equal(g, ((e // 2) * 20 + t) * 2)
    assert (tmp_path / "trajectories" / f"run_id={run_id}").is_dir()
    assert list((tmp_path / "checkpoints" / f"run_id={run_id}").glob("ckpt-*.pt"))
    if mode == "memory":  # the TVT agent without transport: it never moves value
        assert not (tmp_path / "tvt_transports").exists()
    # per (episode, agent), returns in `episodes` follow from the events and the config
    cfg = run["config"]
    ep_l, ag_l = ev.column("episode").to_pylist(), ev.column("agent").to_pylist()
    tg_l, et_l = ev.column("target").to_pylist(), ev.column("event_type").to_pylist()
    expect: dict[tuple[int, str], float] = {}
    for e_, a_, tg, et in zip(ep_l, ag_l, tg_l, et_l, strict=True):
        if et == "APPLE_EATEN":
            expect[(e_, a_)] = expect.get((e_, a_), 0.0) + cfg["apple_reward"]
        elif et == "ZAP_FIRED":
            expect[(e_, a_)] = expect.get((e_, a_), 0.0) + cfg["fire_cost"]
        elif et == "ZAP_HIT":
            expect[(e_, tg)] = expect.get((e_, tg), 0.0) + cfg["hit_penalty"]
    for e_, a_, r_ in zip(eps.column("episode").to_pylist(), eps.column("agent").to_pylist(),
                          eps.column("return").to_pylist(), strict=True):
        assert r_ == pytest.approx(expect.get((e_, a_), 0.0)), (e_, a_)


def _params(agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}


def _events_sorted(lake, run_id) -> pa.Table:
    t = _read(lake, "events", run_id).drop(["run_id"])
    return t.sort_by([("episode", "ascending"), ("seq", "ascending")])


@pytest.mark.parametrize("mode", ["matchmaker", "full"])
def test_resume_reproduces_uninterrupted_run(tmp_path, mode):
    """Stop after 2 updates, resume: same parameters and same events as one uninterrupted run."""
    full = Trainer(_tiny_cfg(mode, run_id="whole"), tmp_path)
    full.run()
    part = Trainer(_tiny_cfg(mode, run_id="split"), tmp_path)
    part.run(stop_after=2)
    assert part.update == 2
    resumed = resumed_trainer("split", tmp_path)
    assert resumed.update == 2 and resumed.round == 2
    resumed.run()
    assert resumed.update == full.update == 4
    pa_, pb = _params(full.agent), _params(resumed.agent)
    for k in pa_:
        torch.testing.assert_close(pa_[k], pb[k], rtol=0, atol=0)
    ea, eb = _events_sorted(tmp_path, "whole"), _events_sorted(tmp_path, "split")
    assert ea.num_rows > 0 and ea.equals(eb)
    # the rigged spawns after the resume came from the ledger rebuilt from the lake
    if mode == "matchmaker":
        for a, b in zip(full.ledger.ledgers, resumed.ledger.ledgers, strict=True):
            np.testing.assert_array_equal(a.debts, b.debts)
        assert any(led.total_debt > 0 for led in full.ledger.ledgers)
        assert "rigged" in ea.column("spawn_cause").to_pylist()


def test_resume_after_kill_between_write_and_checkpoint(tmp_path):
    """A round already in the lake but not checkpointed is re-run, not written twice."""
    full = Trainer(_tiny_cfg(run_id="whole", checkpoint_every=100), tmp_path)
    full.run()
    part = Trainer(_tiny_cfg(run_id="split", checkpoint_every=100), tmp_path)
    part.run(stop_after=2)  # round 0 checkpointed? no: only the final update checkpoints
    from pipelines.checkpoints import list_checkpoints, save_checkpoint

    assert not list_checkpoints(tmp_path, "split")
    # simulate a checkpoint after round 0 that an earlier, killed process left
    early = Trainer(_tiny_cfg(run_id="early", checkpoint_every=1), tmp_path)
    early.run(stop_after=1)
    ck = early.checkpoint_payload()
    ck["run_id"], ck["train_config"]["run_id"] = "split", "split"
    save_checkpoint(tmp_path, "split", 1, ck)
    resumed = resumed_trainer("split", tmp_path)
    resumed.run()
    assert _events_sorted(tmp_path, "whole").equals(_events_sorted(tmp_path, "split"))


def test_checkpoint_policy_acts_on_env_observations(tmp_path):
    from karmic.agents import load_policy

    tr = Trainer(_tiny_cfg(run_id="pol", total_steps=40), tmp_path)
    tr.run()
    pol = load_policy(tmp_path / "checkpoints" / "run_id=pol")
    obs = tr.env.reset(seed=1)
    a = pol.act(obs)
    assert a.shape == obs.shape[:2] and a.min() >= 0 and a.max() < 8
    # same seed, same actions
    pol2 = load_policy(tmp_path / "checkpoints" / "run_id=pol")
    np.testing.assert_array_equal(pol2.act(obs), a)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a karmic policy checkpoint"):
        load_policy(bad)
    # the run's checkpoint directory as `karmic simulate --policy` (the run id is named after it)
    res = CliRunner().invoke(app, ["simulate", "--policy", str(tmp_path / "checkpoints" / "run_id=pol"),
                                   "--episodes", "1", "--grid-size", "10", "--lake", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert list(tmp_path.glob("runs/run_id=sim-pol-g10-s*/run.json"))


def _mean_return(env, act, on_reset=None, episodes=4, seed=1000) -> float:
    B, out = env.num_envs, []
    for ep in range(episodes):
        obs = env.reset(seed=[seed + ep * B + b for b in range(B)])
        if on_reset is not None:
            on_reset(B, env.n_agents)
        done = np.zeros(B, bool)
        while not done.all():
            obs, _, done, _ = env.step(act(obs))
        out.append(float(env.episode_stats()["return"].mean()))
    return float(np.mean(out))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_baseline_learns_to_beat_random(tmp_path, precision):
    """10x10, 50-step episodes: a short baseline run harvests clearly more than random play."""
    from karmic.agents import load_policy
    from karmic.envs.config import make_config
    from karmic.envs.core import HarvestVecEnv

    cfg = TrainConfig(grid_size=10, seed=1, num_envs=8, num_steps=50, seq_len=25,
                      total_steps=16_000, hidden=64, latent=32, lr=1e-3, threads=1, precision=precision,
                      checkpoint_every=10**6, env_overrides={"max_steps": 50}, run_id="learn")
    Trainer(cfg, tmp_path).run()
    env = HarvestVecEnv(make_config(grid_size=10, max_steps=50), num_envs=8)
    rng = np.random.default_rng(0)
    random_return = _mean_return(env, lambda o: rng.integers(0, 8, o.shape[:2]))
    pol = load_policy(tmp_path / "checkpoints" / "run_id=learn", seed=0)
    trained_return = _mean_return(env, pol.act, on_reset=pol.reset)
    # measured: random ~2.6, trained ~5 after 16k env steps
    assert trained_return > 1.5 * random_return + 0.5, (trained_return, random_return)


def test_cli_resume_extends_a_finished_run(tmp_path):
    res = CliRunner().invoke(app, ["train", "--total-steps", "40", "--lake", str(tmp_path), *TINY])
    assert res.exit_code == 0, res.output
    run_id = res.stdout.strip().splitlines()[-1].split("\t")[0]
    res = CliRunner().invoke(
        app, ["train", "--resume", run_id, "--total-steps", "80", "--lake", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    assert "steps=80" in res.stdout
    assert sorted(set(_read(tmp_path, "episodes", run_id).column("episode").to_pylist())) == [0, 1, 2, 3]


def test_a_tvt_run_killed_updates_after_its_checkpoint_resumes_exactly(tmp_path):
    """Killed 3 updates past its last checkpoint: the shards its memory needs at that checkpoint
    are still in the lake (retention keeps them), and the resumed run is the uninterrupted one,
    events and parameters, although it re-runs rounds the lake already holds."""
    kw = dict(total_steps=2 * 20 * 10, checkpoint_every=4, memory_size=60)  # memory: 3 shards
    full = Trainer(_tiny_cfg("full", run_id="whole", **kw), tmp_path)
    full.run()
    part = Trainer(_tiny_cfg("full", run_id="split", **kw), tmp_path)
    part.run(stop_after=7)  # checkpoint at update 4, shards written up to update 6
    resumed = resumed_trainer("split", tmp_path)
    assert resumed.update == 4
    resumed.run()
    pa_, pb = _params(full.agent), _params(resumed.agent)
    for k in pa_:
        torch.testing.assert_close(pa_[k], pb[k], rtol=0, atol=0)
    ea, eb = _events_sorted(tmp_path, "whole"), _events_sorted(tmp_path, "split")
    assert ea.num_rows > 0 and ea.equals(eb)


def test_a_tvt_resume_whose_memory_shards_are_gone_says_so(tmp_path):
    from pipelines.trajectories import list_shards

    kw = dict(total_steps=2 * 20 * 10, checkpoint_every=4, memory_size=60)
    Trainer(_tiny_cfg("full", run_id="split", **kw), tmp_path).run(stop_after=5)
    [p for p in list_shards(tmp_path, "split") if p.stem.endswith("000002")][0].unlink()
    with pytest.raises(ValueError, match=r"cannot resume run split.*shard 2"):
        resumed_trainer("split", tmp_path)
