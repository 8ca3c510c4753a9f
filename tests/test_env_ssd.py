"""The ``ssd`` preset against SSD's harvest, rule by rule; every other config pinned bit for bit.

The SSD-only rules sit behind HarvestConfig fields whose defaults keep the original Karmic
dynamics; only the ``ssd`` preset sets them. The digests below pin those defaults: a change to the
kernels that alters any non-ssd episode (events, rewards, observations, board) fails here.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv


def episode_digest(cfg, episodes: int = 2) -> str:
    """sha256 over two batched episodes of random actions (rigged pairs included)."""
    env = HarvestVecEnv(cfg, num_envs=3)
    env.record_events = True
    h = hashlib.sha256()
    rng = np.random.default_rng(2024)
    for ep in range(episodes):
        env.reset(seed=100 + 7 * ep, pairs=[[(0, 1)], [(2, 3), (1, 4)], []])
        for _ in range(env.max_steps):
            obs, rew, _, _ = env.step(rng.integers(0, 8, (3, cfg.n_agents)))
            h.update(rew.tobytes())
        h.update(obs.tobytes())
        for k, v in sorted(env.take_recorded().columns().items()):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v).tobytes())
        h.update(env.state.apples.tobytes())
        h.update(env.state.pos.tobytes())
    return h.hexdigest()[:16]


# computed before the SSD rules were added; they must never change
PINNED = {
    "default": ("b102f45015e906fd", {}),
    "small": ("40aa8cfba0ce0987", {"preset": "small"}),
    "medium": ("b102f45015e906fd", {"preset": "medium"}),
    "big": ("3b4a6270f0c51d3d", {"preset": "big"}),
    "seed": ("40aa8cfba0ce0987", {"preset": "seed"}),
    "wide-beam": ("52c5d6cacff372c8", {"grid_size": 10, "beam_width": 3, "fire_cost": -1.0}),
}


@pytest.mark.parametrize("name", list(PINNED))
def test_non_ssd_configs_are_bit_identical(name):
    want, kw = PINNED[name]
    kw = dict(kw)
    assert episode_digest(make_config(kw.pop("preset", None), **kw)) == want


# --- one test per SSD rule -------------------------------------------------------------------
NOOP, FORWARD, BACKWARD, LEFT, RIGHT, TURN_LEFT, TURN_RIGHT, ZAP = range(8)
SSD_RULES = ("spawn_on_points", "zap_after_moves", "beam_sides_beside", "simultaneous_moves")


def test_the_ssd_preset_sets_every_ssd_rule_and_nothing_else_does():
    from karmic.envs.config import PRESETS

    ssd = make_config("ssd")
    assert all(getattr(ssd, f) for f in SSD_RULES)
    for name in PRESETS:
        if name != "ssd":
            assert not any(getattr(make_config(name), f) for f in SSD_RULES), name
    assert not any(getattr(make_config(), f) for f in SSD_RULES)
    with pytest.raises(ValueError, match="spawn_on_points"):
        make_config(spawn_on_points=True)  # the patches layout has no 'P' cells


def test_ssd_map_is_ssd_harvest_map():
    """maps.py HARVEST_MAP of sequential_social_dilemma_games, row 13 included (an earlier
    transcription had shifted two of its apples)."""
    from karmic.envs.config import SSD_HARVEST_MAP

    assert SSD_HARVEST_MAP[13] == "@ A    A     AAA  A  P          A    @"
    assert sum(r.count("A") for r in SSD_HARVEST_MAP) == 155
    assert sum(r.count("P") for r in SSD_HARVEST_MAP) == 20
    assert {len(r) for r in SSD_HARVEST_MAP} == {38} and len(SSD_HARVEST_MAP) == 16


def blank(n_agents=2, grid=12, num_envs=1, **kw) -> HarvestVecEnv:
    """No apples, agents placed by hand, SSD rules chosen by keyword."""
    env = HarvestVecEnv(make_config(grid_size=grid, n_agents=n_agents, **kw), num_envs=num_envs)
    env.reset(seed=0)
    env.state.apples[:] = 0
    env.apple_cells = np.zeros_like(env.apple_cells)
    return env


def place(env, n, x, y, d):
    env.state.pos[:, n] = (x, y)
    env.state.dirs[:, n] = d


def act(env, *actions):
    return env.step(np.tile(np.array(actions), (env.num_envs, 1)))


def test_spawn_on_points_resets_and_respawns_on_p_cells_only():
    from karmic.events import CAUSE_RESPAWN, SPAWN

    cfg = make_config("ssd", n_agents=20)  # as many agents as P cells: a fresh draw each reset
    env = HarvestVecEnv(cfg, num_envs=200)
    env.reset(seed=5)
    p = env.spawn_ok
    assert p.sum() == 20
    pos = env.state.pos
    assert p[pos[..., 1], pos[..., 0]].all()
    assert all(len({tuple(xy) for xy in row}) == 20 for row in pos)  # one agent per point
    assert len({tuple(d) for d in env.state.dirs[:, :5]}) > 100  # random facing
    # the default map is the free cells; with removal on, respawns also land on P cells
    cfg = make_config("ssd", removal_steps=2)
    env = HarvestVecEnv(cfg, num_envs=300)
    env.reset(seed=1)
    assert make_config("big").spawn_on_points is False
    rng = np.random.default_rng(0)
    spawns = 0
    for _ in range(200):
        _, _, _, ev = env.step(rng.integers(0, 8, (300, 5)))
        sp = ev.take(np.nonzero((ev.event_type == SPAWN) & (ev.spawn_cause == CAUSE_RESPAWN))[0])
        spawns += len(sp)
        assert p[sp.y, sp.x].all()
    assert spawns > 50


def test_zap_after_moves_hits_the_new_position_after_eating():
    from karmic.events import APPLE_EATEN, ZAP_HIT

    for after, hit in ((False, False), (True, True)):
        env = blank(2, zap_after_moves=after)
        place(env, 0, 1, 5, 1)  # facing right, beam covers x = 2..6 on row 5
        place(env, 1, 4, 6, 0)  # facing up: steps into the beam's row this step
        env.state.apples[0, 5, 4] = 1
        _, rew, _, ev = act(env, ZAP, FORWARD)
        assert ((ev.event_type == ZAP_HIT).sum() == 1) == hit
        assert (ev.event_type == APPLE_EATEN).sum() == 1  # the victim eats either way
        if after:  # SSD: eating comes before the zaps, so it is listed first
            assert list(ev.event_type).index(APPLE_EATEN) < list(ev.event_type).index(ZAP_HIT)
            assert rew[0, 1] == 1.0 - 0.5
    # and a victim that steps out of the beam escapes it
    for after, hit in ((False, True), (True, False)):
        env = blank(2, zap_after_moves=after)
        place(env, 0, 1, 5, 1)
        place(env, 1, 4, 5, 0)
        _, _, _, ev = act(env, ZAP, FORWARD)
        assert ((ev.event_type == ZAP_HIT).sum() == 1) == hit


@pytest.mark.parametrize(
    "beside, victim, hit",
    [
        (False, (5, 6), False),  # directly beside the shooter (right of facing up)
        (True, (5, 6), True),
        (False, (5, 1), True),  # side lane, 5 ahead
        (True, (5, 1), False),  # SSD's side lanes stop 4 ahead
        (True, (5, 2), True),
        (True, (4, 1), True),  # centre lane, 5 ahead, either way
        (False, (4, 1), True),
    ],
)
def test_beam_sides_beside_covers_ssd_cells(beside, victim, hit):
    from karmic.events import ZAP_HIT

    env = blank(2, beam_width=3, beam_sides_beside=beside)
    place(env, 0, 4, 6, 0)  # facing up
    place(env, 1, *victim, 0)
    _, _, _, ev = act(env, ZAP, NOOP)
    assert ((ev.event_type == ZAP_HIT).sum() == 1) == hit


def test_beam_sides_beside_stops_at_a_wall_beside_the_shooter():
    from karmic.events import ZAP_HIT

    env = blank(2, beam_width=3, beam_sides_beside=True)
    place(env, 0, 0, 6, 0)  # facing up against the west wall: its left lane is the wall
    place(env, 1, 1, 6, 0)  # beside it on the right
    _, _, _, ev = act(env, ZAP, NOOP)
    assert (ev.event_type == ZAP_HIT).sum() == 1


@pytest.mark.parametrize("simultaneous", [False, True])
def test_simultaneous_moves_chains_cycles_swaps(simultaneous):
    B = 2000
    # a chain: agent 0 follows agent 1 into the cell it leaves
    env = blank(2, num_envs=B, simultaneous_moves=simultaneous)
    place(env, 0, 3, 5, 1)
    place(env, 1, 4, 5, 1)
    act(env, FORWARD, FORWARD)
    followed = (env.state.pos[:, 0, 0] == 4).mean()
    assert (env.state.pos[:, 1, 0] == 5).all()
    if simultaneous:
        assert followed == 1.0  # SSD: always
    else:
        assert 0.4 < followed < 0.6  # only when agent 1 happens to move first
    # a cycle of four around a 2x2 block: all move together in SSD, none in random order
    env = blank(4, simultaneous_moves=simultaneous)
    for n, (x, y, d) in enumerate([(3, 3, 1), (4, 3, 2), (4, 4, 3), (3, 4, 0)]):
        place(env, n, x, y, d)
    before = env.state.pos.copy()
    act(env, FORWARD, FORWARD, FORWARD, FORWARD)
    moved = (env.state.pos != before).any(-1)
    assert moved.all() if simultaneous else not moved.any()
    assert len({tuple(p) for p in env.state.pos[0]}) == 4
    # a swap never happens; a contested cell has a fair winner; a turner blocks
    env = blank(2, num_envs=B, simultaneous_moves=simultaneous)
    place(env, 0, 3, 5, 1)
    place(env, 1, 4, 5, 3)
    act(env, FORWARD, FORWARD)
    assert (env.state.pos[:, 0, 0] == 3).all() and (env.state.pos[:, 1, 0] == 4).all()
    env = blank(2, num_envs=B, simultaneous_moves=simultaneous)
    place(env, 0, 3, 5, 1)
    place(env, 1, 5, 5, 3)
    act(env, FORWARD, FORWARD)
    at = env.state.pos[:, :, 0] == 4
    assert (at.sum(1) == 1).all() and 0.45 < at[:, 0].mean() < 0.55
    env = blank(2, simultaneous_moves=simultaneous)
    place(env, 0, 3, 5, 1)
    place(env, 1, 4, 5, 0)
    act(env, FORWARD, TURN_LEFT)
    assert tuple(env.state.pos[0, 0]) == (3, 5) and env.state.dirs[0, 1] == 3


# --- statistical fidelity against SSD's own code ------------------------------------------------
# Random policy, 5 agents, 1000 steps: per-episode mean and sd over 400 episodes of SSD's own
# HarvestEnv (sequential_social_dilemma_games at 0207821, run unmodified by
# `python benchmarks/ssd_fidelity.py --ssd-src PATH --episodes 400`, numpy seeds 0..399).
SSD_RANDOM_POLICY = {
    "eaten": (299.31, 44.12),  # apples eaten per episode
    "hits": (63.93, 25.34),  # beam hits per episode
    "left": (116.28, 9.53),  # apples on the board after step 1000
}
SSD_EPISODES = 400


def _z_scores(figures: dict[str, list[int]]) -> dict[str, float]:
    z = {}
    for k, (m, sd) in SSD_RANDOM_POLICY.items():
        v = np.asarray(figures[k], dtype=float)
        se = np.sqrt(v.var(ddof=1) / len(v) + sd**2 / SSD_EPISODES)
        z[k] = float((v.mean() - m) / se)
    return z


def test_ssd_preset_matches_ssd_under_a_random_policy():
    """Apples eaten, beam hits and apples left at t=1000 agree with SSD's within 3.5 standard
    errors (200 seeded episodes here, 400 of SSD's); the preset without SSD's spawn points (the
    rule that mattered most) fails the same test, so the test can tell."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from ssd_fidelity import ours_figures

    z = _z_scores(ours_figures(200, seed0=1000))
    assert all(abs(v) < 3.5 for v in z.values()), z
    from karmic.envs import config as C

    saved = dict(C.PRESETS["ssd"])
    try:
        C.PRESETS["ssd"]["spawn_on_points"] = False
        z_free = _z_scores(ours_figures(200, seed0=1000))
    finally:
        C.PRESETS["ssd"].clear()
        C.PRESETS["ssd"].update(saved)
    assert z_free["eaten"] > 3.5, z_free


@pytest.mark.slow
def test_pinned_ssd_figures_reproduce_from_ssd_source():
    """Reruns SSD's own code (KARMIC_SSD_SRC = a checkout of sequential_social_dilemma_games) for
    40 episodes and checks the pinned figures against it."""
    import os
    import sys
    from pathlib import Path

    src = os.environ.get("KARMIC_SSD_SRC")
    if not src:
        pytest.skip("set KARMIC_SSD_SRC to a checkout of sequential_social_dilemma_games")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from ssd_fidelity import ssd_figures

    z = _z_scores(ssd_figures(Path(src), 40, seed0=5000))
    assert all(abs(v) < 3.5 for v in z.values()), z
