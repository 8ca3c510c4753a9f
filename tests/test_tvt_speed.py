"""TVT's faster method (docs/tvt-speed.md): the learner reading the rollout's selected rows
(``tvt_select = rollout``) and the lagged shard queue (``tvt_learn = lagged``)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from karmic.training.config import TrainConfig
from karmic.training.ppo import Trainer, resumed_trainer
from karmic.tvt.harvest import stream_times
from pipelines.trajectories import list_shards, read_shard, write_shard

pytest.importorskip("karmic.envs.core", reason="needs the Harvest env (karmic.envs.core)")

NEW = {"tvt_select": "rollout", "tvt_learn": "lagged"}


def _cfg(mode="full", **kw) -> TrainConfig:
    # threshold 0.5 and gamma 0.9 (a 10-step gap): learned transports from the first updates
    base = dict(mode=mode, grid_size=10, seed=5, num_envs=2, num_steps=20, seq_len=10, hidden=32,
                latent=16, total_steps=2 * 20 * 10, checkpoint_every=4, threads=1, memory_size=60,
                tvt_threshold=0.5, gamma=0.9, env_overrides={"max_steps": 20})
    base.update(kw)
    return TrainConfig(**base)


def _record_learns(tr: Trainer) -> list[tuple[int, np.ndarray]]:
    """Wrap the trainer's learner: (shard update, rewards) of every shard it learns."""
    seen: list[tuple[int, np.ndarray]] = []
    learn = tr.learn

    def spy(shard, rewards, **kw):
        seen.append((shard.update, np.array(rewards, copy=True)))
        return learn(shard, rewards, **kw)

    tr.learn = spy
    return seen


def test_the_learner_reads_the_rows_the_rollout_selected(tmp_path):
    """tvt_select = rollout: the offsets stored in the shard, mapped into the learner's bank,
    give the learner the rollout's log-probs (same parameters, fp32)."""
    tr = Trainer(_cfg(precision="fp32", tvt_select="rollout", memory_size=30), tmp_path)
    tr.run(stop_after=3, at_boundary=False)  # the memory (30 rows) spans earlier shards
    tr.rollout()
    shard = read_shard(write_shard(tmp_path, tr.make_shard()))
    off = shard.extra["tvt_sel_off"]
    k = min(tr.agent.tvt.top_k, 30)
    assert off.shape[-2:] == (tr.agent.tvt.heads, k)
    assert 0 <= off.min() and off.max() <= 30 and (off > 0).any()
    # every step read min(k, rows in its window) rows: the steps written before it, at most 30
    taus = stream_times(shard)
    assert ((off > 0).sum(-1) == np.minimum(k, np.minimum(taus, 30))[..., None]).all()
    hist = [read_shard(p) for p in list_shards(tmp_path, tr.run_id)[:-1]]
    tr.tvt.bank = tr.tvt._bank(hist[-tr.tvt.shards_needed:] + [shard])
    mem = tr.tvt.learner_memory(shard)
    idx = torch.arange(shard.n_rows)
    with torch.no_grad():
        logits, _, _, _ = tr.agent(
            torch.from_numpy(shard.obs).transpose(0, 1),
            (torch.from_numpy(shard.h0)[None], torch.from_numpy(shard.c0)[None]),
            torch.from_numpy(shard.start.astype(bool)).transpose(0, 1),
            torch.from_numpy(shard.rows["agent"].astype(np.int64)),
            memory=mem.memory(idx),
        )
    logp = torch.log_softmax(logits.transpose(0, 1), -1).gather(
        -1, torch.from_numpy(shard.action.astype(np.int64))[..., None])[..., 0]
    np.testing.assert_allclose(logp.numpy(), shard.logprob, atol=2e-5)


def _expected_rewards(lake, run_id, shard, lag: int) -> np.ndarray:
    """Known answer: the shard's env rewards plus every transport into it that the lake's
    ``tvt_transports`` says was made by update ``shard.update + lag`` at the latest."""
    t = pq.read_table(lake / "tvt_transports" / f"run_id={run_id}").to_pydict()
    out = np.array(shard.reward, np.float64)
    rows, L = shard.rows, shard.seq_len
    for u, agent, ep, tt, amt in zip(t["update"], t["agent"], t["target_episode"], t["target_t"], t["amount"],
                                     strict=True):
        if u > shard.update + lag:
            continue
        hit = np.flatnonzero((rows["episode"] == ep) & (rows["agent"] == int(agent.split("_")[1]))
                             & (rows["t0"] <= tt) & (tt < rows["t0"] + L))
        for r in hit:
            out[r, tt - rows["t0"][r]] += amt
    return out


def test_the_lagged_queue_learns_every_shard_once_with_its_transports_across_a_resume(tmp_path):
    """tvt_learn = lagged, lag = the memory's span (60 rows / 20 steps: 3 updates): shards
    0..6 of a 10-update run are learned, each once and in order, with exactly the value
    transported into it by then; killed past a checkpoint and resumed, the run is the
    uninterrupted one (queue restored from the checkpoint, parameters equal)."""
    whole = Trainer(_cfg(run_id="whole", keep_trajectories=True, **NEW), tmp_path)
    seen = _record_learns(whole)
    infos: list[dict] = []
    whole.on_update = infos.append
    whole.run()
    assert whole.tvt.lag == 3
    assert [u for u, _ in seen] == list(range(7))
    assert [i.get("learned_update") for i in infos] == [None] * 3 + [float(u) for u in range(7)]
    transported = pq.read_table(tmp_path / "tvt_transports" / "run_id=whole")
    assert transported.num_rows > 0
    moved = 0.0
    for u, rewards in seen:
        shard = read_shard([p for p in list_shards(tmp_path, "whole") if p.stem.endswith(f"{u:06d}")][0])
        want = _expected_rewards(tmp_path, "whole", shard, 3)
        np.testing.assert_allclose(rewards, want, atol=1e-5)
        moved += float(np.abs(rewards - shard.reward).sum())
    assert moved > 0  # the check above compared transports, not only env rewards
    # killed 3 updates past its checkpoint at update 4, resumed from it
    part = Trainer(_cfg(run_id="split", **NEW), tmp_path)
    part.run(stop_after=7)
    resumed = resumed_trainer("split", tmp_path)
    assert resumed.update == 4 and sorted(resumed.tvt.pending) == [1, 2, 3]
    again = _record_learns(resumed)
    resumed.run()
    assert [u for u, _ in again] == [1, 2, 3, 4, 5, 6]
    for (u, a), (v, b) in zip(seen[1:], again, strict=True):
        assert u == v
        np.testing.assert_array_equal(a, b)
    for (k, a), b in zip(whole.agent.state_dict().items(), resumed.agent.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_the_options_round_trip_through_run_json_and_resume(tmp_path):
    cfg = _cfg(run_id="opts", tvt_select="rollout", tvt_learn="lagged", tvt_lag=1, total_steps=2 * 20 * 4,
               checkpoint_every=1)
    Trainer(cfg, tmp_path).run(stop_after=2)
    meta = json.loads(next((tmp_path / "runs").rglob("run.json")).read_text())
    got = TrainConfig.from_dict(meta["train_config"])
    assert (got.tvt_select, got.tvt_learn, got.tvt_lag) == ("rollout", "lagged", 1)
    resumed = resumed_trainer("opts", tmp_path)
    assert (resumed.cfg.tvt_select, resumed.cfg.tvt_learn, resumed.cfg.tvt_lag) == ("rollout", "lagged", 1)
    assert resumed.tvt.lag == 1 and "tvt_sel_off" in resumed.tvt.shapes
    # runs recorded before these fields existed read back as the method of old
    old = {k: v for k, v in meta["train_config"].items() if k not in ("tvt_select", "tvt_learn", "tvt_lag")}
    back = TrainConfig.from_dict(old)
    assert (back.tvt_select, back.tvt_learn, back.tvt_lag) == ("learner", "replay", None)


@pytest.mark.parametrize("field,value", [("tvt_select", "nope"), ("tvt_learn", "later"), ("tvt_lag", -1)])
def test_bad_options_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        _cfg(**{field: value}).validate()


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


@pytest.mark.slow  # 6 min on today's loaded 2-core machine: `make test-slow`
def test_the_new_method_learns_to_beat_random(tmp_path):
    """10x10, 50-step episodes (as tests/test_train.py's baseline check): a short `tvt` run in the
    new method (rollout selection, lagged queue) harvests clearly more than random play."""
    from karmic.agents import load_policy
    from karmic.envs.config import make_config
    from karmic.envs.core import HarvestVecEnv

    cfg = TrainConfig(mode="tvt", grid_size=10, seed=1, num_envs=8, num_steps=50, seq_len=25,
                      total_steps=16_000, hidden=64, latent=32, lr=1e-3, threads=1, memory_size=100,
                      checkpoint_every=10**6, env_overrides={"max_steps": 50}, run_id="learn", **NEW)
    tr = Trainer(cfg, tmp_path)
    seen = _record_learns(tr)
    tr.run()
    assert len(seen) == tr.n_updates - tr.tvt.lag  # the queue's last `lag` shards are not learned
    env = HarvestVecEnv(make_config(grid_size=10, max_steps=50), num_envs=8)
    rng = np.random.default_rng(0)
    random_return = _mean_return(env, lambda o: rng.integers(0, 8, o.shape[:2]))
    pol = load_policy(tmp_path / "checkpoints" / "run_id=learn", seed=0)
    trained_return = _mean_return(env, pol.act, on_reset=pol.reset)
    assert trained_return > 1.5 * random_return + 0.5, (trained_return, random_return)


def test_transported_per_agent_step_known_answer(tmp_path):
    """queries/study/metrics.sql's transported_amount: per episode, the |amount| summed over the
    lake's tvt_transports rows whose source step lies in it (computed here from the parquet)."""
    import pyarrow as pa

    from karmic.lake import connect, queries_dir, query_sql

    Trainer(_cfg(run_id="m", total_steps=2 * 20 * 6), tmp_path).run()
    t = pq.read_table(tmp_path / "tvt_transports" / "run_id=m").to_pydict()
    want: dict[int, float] = {}
    for ep, amt in zip(t["source_episode"], t["amount"], strict=True):
        want[ep] = want.get(ep, 0.0) + abs(amt)
    assert want
    con = connect(tmp_path)
    con.register("study_cells", pa.Table.from_pylist([{"run_id": "m", "condition": "full", "grid_size": 10,
                                                        "level": "x", "seed": 5, "scripted": False}]))
    con.execute(f"create temp view ledger_debt as {query_sql('ledger_debt').strip().rstrip(';')}")
    got = con.sql((queries_dir() / "study" / "metrics.sql").read_text()).to_arrow_table().to_pydict()
    assert len(got["episode"]) == 12  # 6 rounds x 2 envs
    for ep, amount in zip(got["episode"], got["transported_amount"], strict=True):
        assert amount == pytest.approx(want.get(ep, 0.0), abs=1e-9)


def test_the_tvt_speed_study_is_accepted_and_plans_every_method():
    """studies/tvt-speed.toml: `karmic study check` accepts it, `karmic study run tvt-speed`
    finds it by name, and every cell's training config is valid, with its level's method."""
    from pathlib import Path

    from typer.testing import CliRunner

    from karmic.cli import app
    from karmic.training.learners import config_from_dict
    from pipelines.study import find_study, manifest_for, parse_study

    root = Path(__file__).resolve().parent.parent
    path = find_study("tvt-speed", root)
    assert path == root / "studies" / "tvt-speed.toml"
    study = parse_study(path)
    res = CliRunner().invoke(app, ["study", "check", str(path)])
    assert res.exit_code == 0, res.output
    assert "24 cell(s)" in res.output and "16 prediction(s)" in res.output
    method = {"old": ("learner", "replay", 1), "new": ("rollout", "lagged", 1)}
    for cell in study.cells():
        cfg = config_from_dict(study.train_config(cell))
        cfg.validate()
        assert (cfg.tvt_select, cfg.tvt_learn, cfg.tvt_read_refresh) == method[cell.level]
        assert cfg.mode in ("tvt", "full") and cfg.precision == "fp32" and cfg.tvt_lag is None
    assert len(manifest_for(study)["tasks"]) == 24
    assert {p["metric"] for p in study.predictions} == {
        "predatory_hits_per_agent_step", "apples_per_agent_step", "zaps_fired_per_agent_step",
        "transported_per_agent_step"}


def test_train_cli_takes_the_method_and_refuses_a_bad_one(tmp_path):
    from typer.testing import CliRunner

    from karmic.cli import app

    tiny = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10", "--hidden", "32",
            "--set", "max_steps=20", "--threads", "1", "--memory-size", "40", "--lake", str(tmp_path)]
    res = CliRunner().invoke(app, ["train", "--mode", "tvt", "--total-steps", "160", "--tvt-select", "rollout",
                                   "--tvt-learn", "lagged", "--tvt-lag", "1", *tiny])
    assert res.exit_code == 0, res.output
    meta = json.loads(next((tmp_path / "runs").rglob("run.json")).read_text())["train_config"]
    assert (meta["tvt_select"], meta["tvt_learn"], meta["tvt_lag"]) == ("rollout", "lagged", 1)
    res = CliRunner().invoke(app, ["train", "--mode", "tvt", "--tvt-learn", "later", *tiny])
    assert res.exit_code == 2 and "Traceback" not in res.output and "--tvt-learn" in res.output


@pytest.mark.parametrize("mode", ["baseline", "hit-cost", "matchmaker"])
def test_the_method_fields_change_nothing_without_a_tvt_learner(tmp_path, mode):
    """A study level that selects the new method for every condition (studies/tvt-method.toml)
    leaves a plain agent's run as it was: the same events, episodes and parameters, bit for bit."""
    from golden import _model_digest, _table_digest

    from karmic.training.ppo import train

    got = {}
    for name, fields in (("old", {}), ("new", NEW)):
        run_id = f"{mode}-{name}"
        train(TrainConfig.from_dict(dict(mode=mode, grid_size=10, seed=5, num_envs=2, num_steps=20, seq_len=10,
                                         hidden=32, latent=16, total_steps=2 * 20 * 4, checkpoint_every=1,
                                         threads=1, precision="fp32", env_overrides={"max_steps": 20},
                                         run_id=run_id, **fields)), tmp_path)
        got[name] = (_table_digest(tmp_path, "events", run_id, ["episode", "t", "seq"]),
                     _table_digest(tmp_path, "episodes", run_id, ["episode", "agent"]),
                     _model_digest(tmp_path, run_id))
    assert got["new"] == got["old"]
