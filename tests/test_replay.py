"""Replay from the action log: simulate and every training condition regenerate their events
exactly; tampered events and actions are caught; bad input is one line; episodes render."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from karmic.cli import app
from karmic.training.ppo import MODES, TrainConfig, Trainer
from pipelines.replay import ReplayMismatch, check_episode, check_run, render_episode
from pipelines.simulate import simulate


def _read(lake, table, run_id) -> pa.Table:
    files = sorted((lake / table / f"run_id={run_id}").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _rewrite(lake, table, run_id, fn) -> None:
    """Apply ``fn(table) -> table`` to the run's (single-part here) table, in place."""
    files = sorted((lake / table / f"run_id={run_id}").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files])
    for f in files:
        f.unlink()
    pq.write_table(fn(t), files[0])


@pytest.fixture(scope="module")
def sim_lake(tmp_path_factory):
    lake = tmp_path_factory.mktemp("replay_sim")
    simulate(lake, grid_size=10, episodes=3, policy="mixed", matchmaker=True, seed=5,
             max_steps=120, run_id="sim", flush_episodes=10)
    return lake


def test_simulate_replays_exactly_and_logs_its_resets(sim_lake):
    assert check_run(sim_lake, "sim") == (3, None)
    acts = _read(sim_lake, "actions", "sim")
    assert acts.num_rows == 3 * 5  # one row per episode and agent
    assert set(pc.list_value_length(acts.column("actions")).to_pylist()) == {120}
    assert set(acts.column("steps").to_pylist()) == {120}
    # the matchmaker rigged a later reset, and the pairs it was given are logged
    pairs = [p for p in acts.column("pairs").to_pylist() if p]
    assert pairs, "no rigged reset in this run: pick another seed"
    spawns = _read(sim_lake, "events", "sim").filter(pc.equal(pc.field("spawn_cause"), "rigged"))
    assert spawns.num_rows > 0
    n_events, mismatch = check_episode(sim_lake, "sim", 2)
    assert mismatch is None and n_events > 5


def test_actions_view_is_queryable(sim_lake):
    from karmic.lake import connect

    con = connect(sim_lake)
    n, steps = con.execute("select count(*), sum(len(actions)) from actions where run_id = 'sim'").fetchone()
    assert (n, steps) == (15, 15 * 120)
    zaps = con.execute("select count(*) from (select unnest(actions) a from actions) where a = 7").fetchone()[0]
    fired = con.execute("select count(*) from events where event_type = 'ZAP_FIRED'").fetchone()[0]
    assert zaps >= fired  # a removed agent's zap fires nothing


def test_interrupted_simulate_episode_replays(tmp_path, monkeypatch):
    import signal

    from karmic.envs.core import HarvestVecEnv

    step = HarvestVecEnv.step
    calls = {"n": 0}

    def step_then_ctrl_c(self, actions):
        calls["n"] += 1
        if calls["n"] == 40 + 10:  # Ctrl-C during episode 1's 10th step
            signal.raise_signal(signal.SIGINT)
        return step(self, actions)

    monkeypatch.setattr(HarvestVecEnv, "step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        simulate(tmp_path, grid_size=10, episodes=3, policy="random", seed=2, max_steps=40, run_id="cut")
    acts = _read(tmp_path, "actions", "cut")
    assert sorted(set(zip(acts.column("episode").to_pylist(), acts.column("steps").to_pylist(),
                          strict=True))) == [(0, 40), (1, 10)]
    assert check_run(tmp_path, "cut") == (2, None)


def _tiny(mode: str, seed: int = 4) -> TrainConfig:
    return TrainConfig(mode=mode, grid_size=10, seed=seed, num_envs=2, num_steps=20, seq_len=10,
                       hidden=32, latent=16, total_steps=2 * 40 * 3, checkpoint_every=100,
                       threads=1, memory_size=40, env_overrides={"max_steps": 40})


@pytest.mark.parametrize("mode", list(MODES))
def test_every_training_condition_replays_exactly(tmp_path, mode):
    from karmic.conditions import get_condition

    cfg = _tiny(mode)
    if (partner := get_condition(mode).yoke) is not None:  # a yoked run replays a finished partner's transports
        first = Trainer(_tiny(partner, seed=5), tmp_path)
        first.run()
        cfg.tvt_yoke_run = first.run_id
    tr = Trainer(cfg, tmp_path)
    tr.run()
    run_id = tr.run_id
    n_eps = len(set(_read(tmp_path, "episodes", run_id).column("episode").to_pylist()))
    assert n_eps == 6
    assert check_run(tmp_path, run_id) == (n_eps, None)
    if MODES[mode][1]:  # matchmaker conditions: some reset was rigged, and it replays
        pairs = [p for p in _read(tmp_path, "actions", run_id).column("pairs").to_pylist() if p]
        assert pairs, "no rigged reset in this run: pick another seed"


def test_resumed_matchmaker_run_replays_without_duplicate_actions(tmp_path):
    """A round in the lake but not checkpointed is re-run on resume and not written again."""
    from karmic.training.ppo import resumed_trainer
    from pipelines.checkpoints import save_checkpoint

    def cfg(run_id, every):
        c = _tiny("matchmaker")
        c.run_id, c.checkpoint_every = run_id, every
        return c

    Trainer(cfg("split", 100), tmp_path).run(stop_after=4)  # rounds 0 and 1, no checkpoint
    early = Trainer(cfg("early", 1), tmp_path)
    early.run(stop_after=2)  # the checkpoint after round 0 that a killed process left
    ck = early.checkpoint_payload()
    ck["run_id"], ck["train_config"]["run_id"] = "split", "split"
    save_checkpoint(tmp_path, "split", 2, ck)
    resumed_trainer("split", tmp_path).run()
    acts = _read(tmp_path, "actions", "split")
    keys = list(zip(acts.column("episode").to_pylist(), acts.column("agent").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == 6 * 5
    assert check_run(tmp_path, "split") == (6, None)


def test_tampered_event_is_caught_with_one_line(sim_lake, tmp_path):
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(sim_lake, lake)

    def shift_x(t: pa.Table) -> pa.Table:
        t = t.sort_by([("episode", "ascending"), ("seq", "ascending")])
        i = int(np.flatnonzero((t.column("episode").to_numpy() == 1)
                               & (t.column("event_type").to_numpy(zero_copy_only=False) == "APPLE_EATEN"))[0])
        x = t.column("x").to_numpy().copy()
        x[i] = (x[i] + 1) % 10
        return t.set_column(t.schema.get_field_index("x"), "x", pa.array(x, pa.int16()))

    _rewrite(lake, "events", "sim", shift_x)
    n, mismatch = check_run(lake, "sim")
    assert mismatch is not None and "episode 1" in mismatch and "APPLE_EATEN" in mismatch and "x " in mismatch
    res = CliRunner().invoke(app, ["replay", "sim", "--check", "--lake", str(lake)])
    assert res.exit_code == 1
    assert len(res.stderr.strip().splitlines()) == 1 and "episode 1" in res.stderr
    res = CliRunner().invoke(app, ["replay", "sim", "1", "--lake", str(lake), "--out", str(tmp_path / "a.gif")])
    assert res.exit_code == 1 and not (tmp_path / "a.gif").exists()
    # the other episodes still replay
    assert check_episode(lake, "sim", 0)[1] is None


def test_tampered_action_is_caught(sim_lake, tmp_path):
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(sim_lake, lake)

    def change_first_action(t: pa.Table) -> pa.Table:
        rows = t.to_pylist()
        r = next(r for r in rows if r["episode"] == 2 and r["agent"] == "agent_3")
        r["actions"][0] = 5 if r["actions"][0] == 7 else 7  # a zap (or a turn instead of one) at t=0
        return pa.Table.from_pylist(rows, schema=t.schema)

    _rewrite(lake, "actions", "sim", change_first_action)
    n, mismatch = check_run(lake, "sim")
    assert mismatch is not None and "episode 2" in mismatch
    with pytest.raises(ReplayMismatch):
        render_episode(lake, "sim", 2, tmp_path / "x.gif")


def test_bad_input_is_one_line_exit_2(sim_lake, tmp_path):
    r = CliRunner()
    for args in (["replay", "nope", "--check"], ["replay", "sim", "99"], ["replay", "sim"],
                 ["replay", "sim", "0", "--agent", "agent_9"], ["replay", "sim", "0", "--out", "x.txt"],
                 ["replay", "sim", "0", "--fps", "0"], ["replay", "sim", "0", "--check"]):
        res = r.invoke(app, [*args, "--lake", str(sim_lake)])
        assert res.exit_code == 2, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: "), res.stderr
    # a run written before the lake kept actions
    import shutil

    lake = tmp_path / "old"
    shutil.copytree(sim_lake, lake)
    shutil.rmtree(lake / "actions")
    res = r.invoke(app, ["replay", "sim", "--check", "--lake", str(lake)])
    assert res.exit_code == 2 and "no action log" in res.stderr


def test_render_gif_png_and_cli(sim_lake, tmp_path):
    from PIL import Image

    gif = render_episode(sim_lake, "sim", 1, tmp_path / "ep.gif", agent="agent_2", max_frames=12)
    with Image.open(gif) as im:
        assert im.n_frames == 12
    png = render_episode(sim_lake, "sim", 1, tmp_path / "ep.png")
    with Image.open(png) as im:
        assert im.size[0] > 4 * im.size[1]  # a strip of frames side by side
    res = CliRunner().invoke(app, ["replay", "sim", "0", "--lake", str(sim_lake), "--max-frames", "5",
                                   "--out", str(tmp_path / "c.gif"), "--fps", "4"])
    assert res.exit_code == 0, res.output
    assert "events equal to the lake" in res.stdout and (tmp_path / "c.gif").is_file()
    res = CliRunner().invoke(app, ["replay", "sim", "--check", "--lake", str(sim_lake)])
    assert res.exit_code == 0 and "3 episodes replayed" in res.stdout


def test_versions_compare_with_the_lock(tmp_path):
    import torch

    from pipelines.versions import LOCKS, compare_with_lock, lock_versions
    from pipelines.writer import versions

    pins, python = lock_versions()
    assert pins["torch"].startswith("2.13.0") and python
    # make installs from the lock, so what runs the tests is what the lock says
    assert compare_with_lock({**versions(), "torch": torch.__version__}) == []
    diff = compare_with_lock({"python": "2.7.18", "numpy": "1.0.0", "torch": "2.13.0",
                              "karmic": "9", "not-locked": "1"})
    assert diff == ["numpy 1.0.0 (lock " + pins["numpy"] + ")", f"python 2.7.18 (lock {python})"]
    assert compare_with_lock({"numpy": "1"}, paths=[tmp_path / "none.lock"])[0].startswith("no lock")
    # the lock is a pip-compile of pyproject.toml that keeps the torch pin
    text = LOCKS[0].read_text()
    assert "pip-compile" in text and "torch==2.13.0" in text
