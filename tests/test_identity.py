"""Identity in observations (HarvestConfig.identity) and the per-step encounter count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test, parallel_seed_test

from karmic.agents.network import KarmicAgent
from karmic.envs import harvest_v0
from karmic.envs.config import PRESETS, make_config
from karmic.envs.core import HarvestVecEnv

NOOP = 0


def test_identity_is_off_by_default_and_in_the_id_presets():
    assert make_config().identity == "none"
    for name in PRESETS:
        want = "onehot" if name.endswith("-id") else "none"
        assert make_config(name).identity == want, name
    # the -id presets are their calibrated world plus identity, nothing else
    for base in ("karmic-small", "karmic-big"):
        a, b = make_config(base).to_dict(), make_config(base + "-id").to_dict()
        assert {k for k in a if a[k] != b[k]} == {"identity"}
    with pytest.raises(ValueError, match="HarvestConfig.identity"):
        make_config(identity="colour")


def test_onehot_observation_differs_by_agent_and_marks_who_is_where():
    env = HarvestVecEnv(make_config(grid_size=10, n_agents=3, identity="onehot"))
    env.reset(seed=0)
    env.state.apples[:] = 0
    # 0 at (2, 5) facing right, 1 two cells ahead of it, 2 far away (out of 0's view? no: in view)
    env.state.pos[0] = [(2, 5), (4, 5), (8, 8)]
    env.state.dirs[0] = [1, 3, 0]
    obs, *_ = env.step(np.zeros((1, 3), np.int64))
    assert obs.shape == (1, 3, 11, 11, 3 + 3)
    c = 5  # the observer sits at the centre, facing up
    for k in range(3):
        assert obs[0, k, c, c, 3 + k] == 1  # each agent sees its own id at its own cell
        assert obs[0, k, c, c, 2] == 0  # ... and not itself as "other agent"
    # agent 0 faces right: agent 1, two cells ahead, is two rows up in its window, as id 1
    assert obs[0, 0, c - 2, c, 2] == 1 and obs[0, 0, c - 2, c, 3 + 1] == 1
    assert obs[0, 0, c - 2, c, 3 + 0] == 0 and obs[0, 0, c - 2, c, 3 + 2] == 0
    # the identity channels mark exactly the agents' cells the "other agent" channel marks, plus self
    for k in range(3):
        ids = obs[0, k, :, :, 3:]
        assert (ids.sum(-1) <= 1).all()
        assert ids.sum() == obs[0, k, :, :, 2].sum() + 1
    assert not np.array_equal(obs[0, 0], obs[0, 1])
    # the first three channels are those of an env without identity, bit for bit
    plain = HarvestVecEnv(make_config(grid_size=10, n_agents=3))
    plain.reset(seed=0)
    plain.state.apples[:] = 0
    plain.state.pos[0] = env.state.pos[0]
    plain.state.dirs[0] = env.state.dirs[0]
    plain.state.removed[0] = env.state.removed[0]
    from karmic.envs import kernels as K

    K.observe_kernel(plain.walls, plain.state.apples, plain.state.pos, plain.state.dirs,
                     plain.state.removed, plain._obs, False)
    assert np.array_equal(plain._obs, obs[..., :3])


def test_identity_events_equal_those_without_it():
    """Identity changes what agents see, never the dynamics: same seed, same actions, same events."""
    rng = np.random.default_rng(1)
    acts = rng.integers(0, 8, (60, 2, 5))
    out = []
    for identity in ("none", "onehot"):
        env = HarvestVecEnv(make_config("karmic-small", identity=identity, max_steps=60), num_envs=2)
        env.reset(seed=3)
        rows = []
        for t in range(60):
            *_, ev = env.step(acts[t])
            rows.append(np.stack([ev.t, ev.event_type, ev.agent, ev.target, ev.x, ev.y], 1))
        out.append((np.concatenate(rows), env.episode_stats()))
    assert np.array_equal(out[0][0], out[1][0])
    for k in out[0][1]:
        assert np.array_equal(out[0][1][k], out[1][1][k])


def test_pettingzoo_api_and_seed_with_identity():
    parallel_api_test(harvest_v0.parallel_env(preset="karmic-small-id", max_steps=40), num_cycles=50)
    parallel_seed_test(lambda: harvest_v0.parallel_env(preset="karmic-small-id", max_steps=40), num_cycles=30)
    env = harvest_v0.parallel_env(preset="karmic-small-id")
    assert env.observation_space("agent_0").shape == (11, 11, 8)


def test_the_network_takes_identity_channels_and_a_run_trains_on_them(tmp_path):
    env = HarvestVecEnv(make_config("karmic-small-id", max_steps=20), num_envs=2)
    obs = env.reset(seed=0)
    agent = KarmicAgent(env.obs_shape, hidden=16, latent=8)
    assert agent.encoder[0].in_channels == 8
    x = torch.from_numpy(obs.reshape(1, 10, *env.obs_shape))
    logits, value, _, _ = agent(x, agent.initial_state(10), torch.ones(1, 10, dtype=torch.bool))
    assert logits.shape == (1, 10, 8) and value.shape == (1, 10)
    # the trainer reads the channel count from the env: a short run on the -id preset
    from karmic.agents.policy import load_policy
    from karmic.training.ppo import TrainConfig, train
    from pipelines.checkpoints import latest_checkpoint

    cfg = TrainConfig(mode="baseline", preset="karmic-small-id", seed=1, num_envs=2, num_steps=20, seq_len=10,
                      hidden=16, latent=8, total_steps=80, checkpoint_every=1, threads=1, precision="fp32",
                      env_overrides={"max_steps": 20}, run_id="ident")
    train(cfg, tmp_path)
    pol = load_policy(latest_checkpoint(tmp_path, "ident"))
    assert pol.obs_shape == (11, 11, 8)
    assert pol.act(obs).shape == (2, 5)
    with pytest.raises(ValueError, match="expects observations"):
        pol.act(obs[..., :3])


# --- encounters --------------------------------------------------------------------------------
def _blank(n_agents, grid=15, **kw):
    env = HarvestVecEnv(make_config(grid_size=grid, n_agents=n_agents, **kw))
    env.reset(seed=0)
    env.state.apples[:] = 0
    env.apple_cells = np.zeros_like(env.apple_cells)
    return env


@pytest.mark.parametrize("dx, dy, width, met", [
    (5, 0, 1, True), (6, 0, 1, False), (0, 5, 1, True), (1, 1, 1, False),
    (1, 1, 3, True), (1, 5, 3, True), (2, 1, 3, True), (2, 2, 3, False), (1, 6, 3, False),
])
def test_an_encounter_is_another_agent_within_zap_range(dx, dy, width, met):
    env = _blank(2, beam_width=width)
    env.state.pos[0] = [(3, 3), (3 + dx, 3 + dy)]
    env.step(np.zeros((1, 2), np.int64))
    assert env.episode_stats()["encounters"].tolist() == [[int(met), int(met)]]


def test_encounters_count_steps_on_the_board_only():
    env = _blank(3, removal_steps=2)
    env.state.pos[0] = [(3, 3), (5, 3), (12, 12)]
    env.state.dirs[0] = [1, 0, 0]
    env.step(np.array([[7, NOOP, NOOP]]))  # 0 met 1 and zaps it: both counted this step
    env.step(np.zeros((1, 3), np.int64))  # 1 is off the board: nobody meets
    env.step(np.zeros((1, 3), np.int64))
    st = env.episode_stats()
    assert st["times_hit"][0].tolist() == [0, 1, 0]
    assert st["encounters"][0].tolist() == [1, 1, 0]
    assert st["encounters"].dtype == np.int64
