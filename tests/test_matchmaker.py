"""The Conspiring Matchmaker: the live ledger and rigged spawns through the ParallelEnv wrapper."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest

import karmic
from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv
from karmic.events import CAUSE_RESET, CAUSE_RIGGED, SPAWN, EventBatch
from karmic.ledger import Ledger
from karmic.matchmaker import KarmicMatchmaker

ZAP = 7


def test_original_api_and_rigged_spawns_follow_the_debts():
    env = KarmicMatchmaker(pettingzoo.make("parallel", "KarmicHarvest-v0", grid_size=10, max_steps=300))
    assert karmic.KarmicMatchmaker is KarmicMatchmaker
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    events = []
    while env.agents:  # half the actions are zaps, the rest moves and turns
        acts = np.where(rng.random(5) < 0.5, ZAP, rng.integers(1, 7, 5))
        env.step({a: int(acts[i]) for i, a in enumerate(env.agents)})
        events.append(env.unwrapped.core.last_events)
    led = Ledger(5, 0.95)
    led.fold(EventBatch.concat(events), n_episodes=1)
    np.testing.assert_allclose(env.ledger.debts, led.debts)  # live == fold of the same events
    pairs = env.ledger.pairs()
    assert pairs, "zapping agents should have run up debts"
    obs, infos = env.reset()
    spawns = [e for e in infos["agent_0"]["social_events"] if e["event_type"] == "SPAWN"]
    rigged = {e["agent"]: e for e in spawns if e["spawn_cause"] == "rigged"}
    pos = env.unwrapped.core.state.pos[0]
    for a, c in pairs:
        ea, ec = rigged[f"agent_{a}"], rigged[f"agent_{c}"]
        assert ea["target"] == f"agent_{c}" and (ea["target_x"], ea["target_y"]) == (ec["x"], ec["y"])
        assert abs(pos[a] - pos[c]).sum() == 1  # adjacent ...
        assert obs[f"agent_{a}"][4, 5, 2] == 1  # ... facing each other: the partner is right ahead
        assert obs[f"agent_{c}"][4, 5, 2] == 1


@pytest.mark.parametrize("grid", [10, 15, 20, 25, 30])
@pytest.mark.parametrize("n_agents", [2, 3, 5, 8])
def test_rigged_pairs_adjacent_in_every_reset(grid, n_agents):
    B = 400
    env = HarvestVecEnv(make_config(grid_size=grid, n_agents=n_agents), num_envs=B)
    rng = np.random.default_rng(grid * 100 + n_agents)
    for seed in range(3):
        # random debts -> the ledger's greedy pairs, one ledger per env
        pairs = []
        for _ in range(B):
            led = Ledger(n_agents)
            led.debts[:] = rng.random((n_agents, n_agents)) * (rng.random((n_agents, n_agents)) < 0.5)
            np.fill_diagonal(led.debts, 0)
            pairs.append(led.pairs())
        env.reset(seed=seed * B, pairs=pairs)
        pos = env.state.pos
        for b in range(B):
            for a, c in pairs[b]:
                assert np.abs(pos[b, a] - pos[b, c]).sum() == 1
            cells = {tuple(p) for p in pos[b]}
            assert len(cells) == n_agents  # never two agents on one cell
        ev = env.reset_events
        n_pairs = sum(len(p) for p in pairs)
        assert (ev.spawn_cause == CAUSE_RIGGED).sum() == 2 * n_pairs


def test_no_room_falls_back_to_random_spawn_and_says_so():
    # a checkerboard of walls leaves free cells but no two adjacent ones: every pair falls back
    env = HarvestVecEnv(make_config(grid_size=10, n_agents=6), num_envs=50)
    yy, xx = np.mgrid[0:10, 0:10]
    env.walls = (xx + yy) % 2 == 1
    env.apple_cells = np.zeros_like(env.apple_cells)
    env.reset(seed=1, pairs=[[(0, 1), (2, 3)]] * 50)
    ev = env.reset_events
    assert (ev.event_type == SPAWN).all() and (ev.spawn_cause == CAUSE_RESET).all()
    assert (ev.target == -1).all()
    for b in range(50):
        assert len({tuple(p) for p in env.state.pos[b]}) == 6
        assert not env.walls[env.state.pos[b, :, 1], env.state.pos[b, :, 0]].any()


def test_crowded_boards_never_overlap():
    env = HarvestVecEnv(make_config(grid_size=6, n_agents=16), num_envs=300)
    env.reset(seed=3, pairs=[[(i, i + 1) for i in range(0, 16, 2)]] * 300)
    ev = env.reset_events
    for b in range(300):
        assert len({tuple(p) for p in env.state.pos[b]}) == 16
        for i in np.flatnonzero((ev.env == b) & (ev.spawn_cause == CAUSE_RIGGED)):
            assert np.abs(env.state.pos[b, ev.agent[i]] - env.state.pos[b, ev.target[i]]).sum() == 1
