"""The PPO learner on a memory task: only an agent whose recurrent state is handled properly
(sequences replayed from their stored state, reset at episode starts) can solve it.

CueEnv: at an episode's first step every agent sees a cue (channel 0 all ones or all zeros);
afterwards the observation is blank. Each step, action 1 + cue earns +1. A memoryless policy
can earn at most the first step plus 1/2 per later step; a random one earns 1/8 per step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from karmic.events import EventBatch
from karmic.training.ppo import TrainConfig, Trainer


class _Cfg:
    def __init__(self, max_steps: int, n_agents: int) -> None:
        self.max_steps = max_steps
        self.n_agents = n_agents

    def to_dict(self) -> dict:
        return {"max_steps": self.max_steps, "n_agents": self.n_agents}


class CueEnv:
    def __init__(self, num_envs: int, max_steps: int = 8, n_agents: int = 2, v: int = 7) -> None:
        self.config = _Cfg(max_steps, n_agents)
        self.B, self.N, self.v = num_envs, n_agents, v
        self.reset_events = EventBatch.empty()

    def _obs(self, show: bool) -> np.ndarray:
        obs = np.zeros((self.B, self.N, self.v, self.v, 3), np.uint8)
        if show:
            obs[..., 0] = self.cue[:, :, None, None]
        return obs

    def reset(self, seed=None, pairs=None):
        rng = np.random.default_rng(list(seed) if seed is not None else None)
        self.cue = rng.integers(0, 2, (self.B, self.N)).astype(np.uint8)
        self.t = 0
        self.ret = np.zeros((self.B, self.N), np.float32)
        return self._obs(True)

    def step(self, actions):
        rew = (np.asarray(actions) == 1 + self.cue).astype(np.float32)
        self.ret += rew
        self.t += 1
        done = np.full(self.B, self.t >= self.config.max_steps)
        return self._obs(False), rew, done, EventBatch.empty()

    def episode_stats(self):
        z = np.zeros((self.B, self.N), np.int64)
        return {"return": self.ret.copy(), "apples": z, "zaps_fired": z, "zaps_hit": z,
                "times_hit": z, "frozen_steps": z, "steps": z + self.t}


class NullIO:
    """Stands in for the lake's events / episodes / run.json side (shards still go to disk)."""

    def __init__(self, *args) -> None:
        pass

    def run_exists(self) -> bool:
        return False

    def start_run(self, total_steps) -> None:
        pass

    def set_status(self, status) -> None:
        pass

    def end_round(self, rnd, round_events, stats, max_steps, B, cfg, global_step):
        return EventBatch.concat(round_events)

    def new_ledger(self):
        return None


@pytest.mark.timeout(120)
def test_recurrent_ppo_learns_memory_task(tmp_path):
    torch.set_num_threads(1)  # robust timing on a shared 2-core machine
    B, T, L, ms = 8, 16, 8, 8
    cfg = TrainConfig(num_envs=B, num_steps=T, seq_len=L, total_steps=B * T * 60, hidden=64,
                      latent=32, lr=1e-3, ent_coef=0.003, checkpoint_every=10**6, seed=3)
    tr = Trainer(cfg, tmp_path, env=CueEnv(B, max_steps=ms), io_factory=NullIO)
    info = tr.run()
    assert info["update"] == tr.n_updates
    # memoryless ceiling: 1 + 7/2 = 4.5; random: 1. A recurrent agent gets close to 8.
    assert info["mean_return"] > 5.5, info
    # trajectories kept: the last K shards only
    from pipelines.trajectories import list_shards

    assert len(list_shards(tmp_path, tr.run_id)) == cfg.keep_shards
