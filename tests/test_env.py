"""The Harvest environment: PettingZoo conformance, each rule, determinism, rigged spawns."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test

import karmic
from karmic.envs import harvest_v0
from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv
from karmic.events import APPLE_EATEN, CAUSE_RESPAWN, CAUSE_RIGGED, SPAWN, ZAP_FIRED, ZAP_HIT

NOOP, FORWARD, BACKWARD, LEFT, RIGHT, TURN_LEFT, TURN_RIGHT, ZAP = range(8)


# --- PettingZoo's own tests -------------------------------------------------------------------
@pytest.mark.parametrize("grid", [10, 20, 30])
def test_pettingzoo_api(grid):
    parallel_api_test(harvest_v0.parallel_env(grid_size=grid, max_steps=40), num_cycles=50)
    parallel_seed_test(lambda: harvest_v0.parallel_env(grid_size=grid, max_steps=40), num_cycles=30)
    api_test(harvest_v0.env(grid_size=grid, max_steps=20), num_cycles=25)
    render_test(lambda render_mode=None: harvest_v0.env(grid_size=grid, max_steps=20, render_mode=render_mode))


def test_registered_and_spaces_are_stable():
    import pettingzoo

    env = pettingzoo.make("parallel", "KarmicHarvest-v0", grid_size=30)
    assert env.config.grid_size == 30
    assert karmic.make("KarmicHarvest-v0", preset="small").config.episode_length == 500
    assert env.observation_space("agent_0") is env.observation_space("agent_0")
    assert env.observation_space("agent_0").shape == (11, 11, 3)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"grid_size": 2}, "grid_size"),
        ({"regrowth_probs": (0.0, 1.5)}, "regrowth_probs"),
        ({"preset": "nope"}, "preset"),
        ({"beam_width": 2}, "beam_width"),
        ({"view_size": 10}, "view_size"),
        ({"n_agents": 60}, "n_agents"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        harvest_v0.parallel_env(**kwargs)


def test_presets():
    assert make_config("small").grid_size == 10 and make_config("small").episode_length == 500
    assert make_config("medium").episode_length == 1000
    ssd = make_config("ssd")
    assert ssd.beam_width == 3 and ssd.hit_penalty == -50 and ssd.removal_steps == 0
    env = HarvestVecEnv(ssd)
    env.reset(seed=0)
    assert env.walls.shape == (14, 36) and env.apple_cells.sum() > 100


# --- helpers ----------------------------------------------------------------------------------
def blank_env(n_agents=2, grid=10, num_envs=1, **kw) -> HarvestVecEnv:
    """An env with no apples and agents placed by hand."""
    env = HarvestVecEnv(make_config(grid_size=grid, n_agents=n_agents, **kw), num_envs=num_envs)
    env.reset(seed=0)
    env.state.apples[:] = 0
    env.apple_cells = np.zeros_like(env.apple_cells)
    return env


def place(env, n, x, y, d, b=slice(None)):
    env.state.pos[b, n] = (x, y)
    env.state.dirs[b, n] = d


def act(env, *actions):
    return env.step(np.tile(np.array(actions), (env.num_envs, 1)))


# --- moves, turns, collisions -----------------------------------------------------------------
def test_moves_are_relative_to_facing_and_turns():
    env = blank_env(1)
    place(env, 0, 5, 5, 1)  # facing right
    act(env, FORWARD)
    assert tuple(env.state.pos[0, 0]) == (6, 5)
    act(env, LEFT)  # step left of "right" = up
    assert tuple(env.state.pos[0, 0]) == (6, 4)
    act(env, BACKWARD)
    assert tuple(env.state.pos[0, 0]) == (5, 4)
    act(env, TURN_LEFT)
    assert env.state.dirs[0, 0] == 0
    act(env, TURN_LEFT)
    assert env.state.dirs[0, 0] == 3
    act(env, TURN_RIGHT)
    act(env, TURN_RIGHT)
    assert env.state.dirs[0, 0] == 1
    place(env, 0, 9, 0, 1)
    act(env, FORWARD)  # the wall stops it
    assert tuple(env.state.pos[0, 0]) == (9, 0)


def test_collisions_have_a_fair_random_winner():
    env = blank_env(2, num_envs=4000)
    place(env, 0, 3, 5, 1)  # both step into (4, 5)
    place(env, 1, 5, 5, 3)
    act(env, FORWARD, FORWARD)
    at = env.state.pos[:, :, 0] == 4
    assert (at.sum(1) == 1).all()  # exactly one wins, never both
    share = at[:, 0].mean()
    assert 0.45 < share < 0.55  # fair: each wins about half the time


def test_blocked_by_a_staying_agent():
    env = blank_env(2)
    place(env, 0, 3, 5, 1)
    place(env, 1, 4, 5, 0)
    act(env, FORWARD, NOOP)
    assert tuple(env.state.pos[0, 0]) == (3, 5)


# --- beam geometry, removal and respawn -------------------------------------------------------
@pytest.mark.parametrize("dist, hit", [(1, True), (5, True), (6, False)])
def test_beam_length(dist, hit):
    env = blank_env(2, grid=15)
    place(env, 0, 1, 7, 1)
    place(env, 1, 1 + dist, 7, 0)
    _, _, _, ev = act(env, ZAP, NOOP)
    assert (ev.event_type == ZAP_FIRED).sum() == 1
    assert ((ev.event_type == ZAP_HIT).sum() == 1) == hit


def test_beam_stops_at_first_agent_and_walls():
    env = blank_env(3, grid=15)
    place(env, 0, 1, 7, 1)
    place(env, 1, 3, 7, 0)
    place(env, 2, 4, 7, 0)
    _, rew, _, ev = act(env, ZAP, NOOP, NOOP)
    hits = ev.take(np.nonzero(ev.event_type == ZAP_HIT)[0])
    assert list(hits.target) == [1]
    assert rew[0, 1] == -0.5 and rew[0, 2] == 0
    env = blank_env(2, grid=15)
    place(env, 0, 13, 7, 1)  # facing the east wall, the victim "behind" it cannot exist
    place(env, 1, 12, 7, 1)
    _, _, _, ev = act(env, ZAP, NOOP)
    assert (ev.event_type == ZAP_HIT).sum() == 0


def test_wide_beam_hits_side_lanes():
    env = blank_env(2, grid=15, beam_width=3)
    place(env, 0, 5, 7, 1)
    place(env, 1, 8, 8, 0)  # one lane to the right of "facing right" = down
    _, _, _, ev = act(env, ZAP, NOOP)
    assert (ev.event_type == ZAP_HIT).sum() == 1


def test_removal_and_respawn_after_timeout():
    env = blank_env(2, grid=15)
    place(env, 0, 1, 7, 1)
    place(env, 1, 3, 7, 0)
    act(env, ZAP, NOOP)
    assert env.state.removed[0, 1] == 25
    respawned_at = None
    for k in range(1, 30):
        obs, rew, _, ev = act(env, NOOP, FORWARD)
        if env.state.removed[0, 1] > 0:
            assert obs[0, 1].sum() == 0  # a removed agent sees nothing
        sp = ev.take(np.nonzero(ev.event_type == SPAWN)[0])
        if len(sp):
            assert list(sp.agent) == [1] and list(sp.spawn_cause) == [CAUSE_RESPAWN]
            respawned_at = k
            break
    assert respawned_at == 25
    assert env.episode_stats()["frozen_steps"][0, 1] == 25


# --- regrowth --------------------------------------------------------------------------------
@pytest.mark.parametrize("n_nbr, p", [(0, 0.0), (1, 0.005), (2, 0.02), (3, 0.05), (5, 0.05)])
def test_regrowth_follows_probability_table(n_nbr, p):
    B = 20000
    env = blank_env(1, grid=10, num_envs=B)
    place(env, 0, 0, 0, 0)
    cells = np.zeros((10, 10), np.uint8)
    cells[5, 5] = 1  # the cell under test, empty
    nbrs = [(4, 5), (6, 5), (5, 4), (5, 6), (4, 4)][:n_nbr]  # all within radius 2
    for x, y in nbrs:
        cells[y, x] = 1
        env.state.apples[:, y, x] = 1
    env.apple_cells = cells
    env.state.apples[:, 5, 5] = 0
    act(env, NOOP)
    grown = env.state.apples[:, 5, 5].mean()
    sd = np.sqrt(max(p * (1 - p), 1e-12) / B)
    assert abs(grown - p) <= 5 * sd + 1e-12
    # nothing grows outside apple cells
    outside = env.state.apples[:, ~cells.astype(bool)]
    assert outside.sum() == 0


def test_apples_can_be_depleted_for_good():
    env = blank_env(1, grid=10)
    env.apple_cells = np.ones((10, 10), np.uint8)
    for _ in range(300):
        act(env, NOOP)
    assert env.state.apples.sum() == 0


# --- events and rewards -----------------------------------------------------------------------
def run_random(env, seed, steps):
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    out = [env.reset_events]
    obs_all, rew_all = [], []
    for _ in range(steps):
        obs, rew, _, ev = env.step(rng.integers(0, 8, (env.num_envs, env.n_agents)))
        out.append(ev)
        obs_all.append(obs.copy())
        rew_all.append(rew.copy())
    return out, np.array(obs_all), np.array(rew_all)


def test_rewards_agree_with_events():
    cfg = make_config(grid_size=10, fire_cost=-0.1, max_steps=300)
    env = HarvestVecEnv(cfg, num_envs=3)
    evs, _, rews = run_random(env, 7, 300)
    from karmic.events import EventBatch

    ev = EventBatch.concat(evs)
    expect = np.zeros((3, 5))
    np.add.at(expect, (ev.env[ev.event_type == APPLE_EATEN], ev.agent[ev.event_type == APPLE_EATEN]), 1.0)
    np.add.at(expect, (ev.env[ev.event_type == ZAP_HIT], ev.target[ev.event_type == ZAP_HIT]), -0.5)
    np.add.at(expect, (ev.env[ev.event_type == ZAP_FIRED], ev.agent[ev.event_type == ZAP_FIRED]), -0.1)
    assert np.allclose(rews.sum(0), expect, atol=1e-4)
    assert np.allclose(env.episode_stats()["return"], expect, atol=1e-6)
    assert (ev.event_type == ZAP_HIT).sum() > 0 and (ev.event_type == APPLE_EATEN).sum() > 0
    # seq is 0.. per env and episode, without gaps
    for b in range(3):
        assert list(ev.seq[ev.env == b]) == list(range((ev.env == b).sum()))


def test_determinism_and_batched_equals_singles():
    cfg = make_config(grid_size=10, max_steps=100)
    a = run_random(HarvestVecEnv(cfg, 1), 3, 100)
    b = run_random(HarvestVecEnv(cfg, 1), 3, 100)
    c = run_random(HarvestVecEnv(cfg, 1), 4, 100)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    from karmic.events import EventBatch

    ea, eb = EventBatch.concat(a[0]), EventBatch.concat(b[0])
    for k, v in ea.columns().items():
        assert np.array_equal(v, getattr(eb, k)), k
    assert not np.array_equal(a[1], c[1])
    # batched: env b with seed s_b equals a single env with seed s_b (same actions)
    seeds = [11, 12, 13]
    batch = HarvestVecEnv(cfg, 3)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 8, (50, 3, 5))
    batch.reset(seed=seeds)
    bobs = []
    for k in range(50):
        bobs.append(batch.step(acts[k])[0].copy())
    for i, s in enumerate(seeds):
        single = HarvestVecEnv(cfg, 1)
        single.reset(seed=s)
        for k in range(50):
            o = single.step(acts[k, i : i + 1])[0]
            assert np.array_equal(o[0], bobs[k][i])


# --- rigged spawns ----------------------------------------------------------------------------
@pytest.mark.parametrize("grid, n_agents", [(10, 2), (10, 5), (10, 8), (20, 5), (30, 5), (30, 10)])
def test_rigged_pairs_always_adjacent(grid, n_agents):
    B = 500
    env = HarvestVecEnv(make_config(grid_size=grid, n_agents=n_agents), num_envs=B)
    pairs = [(i, i + 1) for i in range(0, n_agents - 1, 2)]
    for seed in range(4):
        env.reset(seed=seed * B, pairs=[pairs] * B)
        pos = env.state.pos
        for a, c in pairs:
            d = np.abs(pos[:, a] - pos[:, c]).sum(-1)
            assert (d == 1).all()
            # facing each other
            fwd = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])
            assert (pos[:, a] + fwd[env.state.dirs[:, a]] == pos[:, c]).all()
        # never two agents on one cell
        flat = pos[:, :, 1] * grid + pos[:, :, 0]
        assert all(len(set(r)) == n_agents for r in flat)
        ev = env.reset_events
        rig = ev.spawn_cause == CAUSE_RIGGED
        assert rig.sum() == 2 * len(pairs) * B
        assert (ev.target[rig] >= 0).all()


def test_infos_carry_social_events():
    env = harvest_v0.parallel_env(grid_size=10, max_steps=200)
    obs, infos = env.reset(seed=1, options={"pairs": [(0, 1)]})
    spawns = infos["agent_0"]["social_events"]
    rig = [e for e in spawns if e["spawn_cause"] == "rigged"]
    assert {e["agent"] for e in rig} == {"agent_0", "agent_1"}
    assert rig[0]["target"] in {"agent_0", "agent_1"}
    seen = set()
    while env.agents:
        _, _, _, _, infos = env.step({a: ZAP for a in env.agents})
        seen |= {e["event_type"] for e in infos["agent_0"]["social_events"]}
    assert "ZAP_FIRED" in seen


def test_render_modes_and_gif(tmp_path):
    from karmic.envs.render import record_episode

    env = harvest_v0.parallel_env(grid_size=10, max_steps=10, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (12 * 8, 12 * 8, 3) and frame.dtype == np.uint8
    text = harvest_v0.parallel_env(grid_size=10, render_mode="ansi")
    text.reset(seed=0)
    assert len(text.render().splitlines()) == 12
    n = record_episode(env, str(tmp_path / "ep.gif"), seed=0)
    assert n == 11 and (tmp_path / "ep.gif").stat().st_size > 0


def test_recorded_episode_equals_the_per_step_events():
    from karmic.events import EventBatch

    cfg = make_config(grid_size=10, max_steps=80)
    env = HarvestVecEnv(cfg, num_envs=3)
    env.record_events = True
    steps, _, _ = run_random(env, 5, 80)
    rec = env.take_recorded()
    per_step = EventBatch.concat(steps)
    per_step = per_step.take(np.lexsort((per_step.seq, per_step.env)))
    for k, v in per_step.columns().items():
        assert np.array_equal(v, getattr(rec, k)), k
    assert len(env.take_recorded()) == 0  # taking clears the record
