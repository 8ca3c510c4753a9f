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
