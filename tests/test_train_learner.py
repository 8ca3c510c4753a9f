"""The PPO learner on a memory task: only an agent whose recurrent state is handled properly
(sequences replayed from their stored state, reset at episode starts) can solve it.

CueEnv: at an episode's first step every agent sees a cue (channel 0 all ones or all zeros);
afterwards the observation is blank. Each step, action 1 + cue earns +1. A memoryless policy
can earn at most the first step plus 1/2 per later step; a random one earns 1/8 per step.
"""

from __future__ import annotations

import numpy as np
import torch

from karmic.events import APPLE_EATEN, CAUSE_RESET, SPAWN, EventBatch
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

    def _events(self, mask: np.ndarray, etype: int) -> EventBatch:
        """One event per true cell of mask (B, N), numbered on from self.seq."""
        b, n = np.nonzero(mask)
        ev = EventBatch.empty(len(b))
        ev.env[:], ev.agent[:], ev.t[:] = b, n, self.t
        ev.episode[:] = 0
        ev.event_type[:] = etype
        ev.x[:], ev.y[:], ev.direction[:] = n, b, 0
        if etype == SPAWN:
            ev.spawn_cause[:] = CAUSE_RESET
        for i, e in enumerate(b):
            ev.seq[i] = self.seq[e]
            self.seq[e] += 1
        return ev

    def reset(self, seed=None, pairs=None):
        rng = np.random.default_rng(list(seed) if seed is not None else None)
        self.cue = rng.integers(0, 2, (self.B, self.N)).astype(np.uint8)
        self.t = 0
        self.seq = np.zeros(self.B, np.int64)
        self.ret = np.zeros((self.B, self.N), np.float32)
        self.reset_events = self._events(np.ones((self.B, self.N), bool), SPAWN)
        return self._obs(True)

    def step(self, actions):
        rew = (np.asarray(actions) == 1 + self.cue).astype(np.float32)
        self.ret += rew
        events = self._events(rew > 0, APPLE_EATEN)
        self.t += 1
        done = np.full(self.B, self.t >= self.config.max_steps)
        return self._obs(False), rew, done, events

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

    def begin_round(self, env, seeds, pairs) -> None:
        pass

    def record_actions(self, t, actions) -> None:
        pass

    def end_round(self, rnd, round_events, stats, max_steps, B, cfg, global_step):
        return EventBatch.concat(round_events)

    def new_ledger(self):
        return None


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


def _cue_trainer(lake, run_id, **kw):
    B = 4
    cfg = TrainConfig(num_envs=B, num_steps=8, seq_len=4, total_steps=B * 8 * 6, hidden=32,
                      latent=16, checkpoint_every=1, seed=5, run_id=run_id, threads=1, **kw)
    return Trainer(cfg, lake, env=CueEnv(B, max_steps=16))


def _events(lake, run_id):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((lake / "events" / f"run_id={run_id}").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files]).drop(["run_id"])
    return t.sort_by([("episode", "ascending"), ("seq", "ascending")])


def test_resume_is_exact_with_lake_events(tmp_path):
    """Stop at an episode boundary, resume: same parameters and same events, none duplicated."""
    from karmic.training.ppo import resumed_trainer

    whole = _cue_trainer(tmp_path, "whole")
    whole.run()
    part = _cue_trainer(tmp_path, "split")
    part.run(stop_after=2)  # 2 updates of 8 steps = one 16-step episode
    assert part.update == 2
    res = resumed_trainer("split", tmp_path, env=CueEnv(4, max_steps=16))
    assert (res.update, res.round, res.global_step) == (2, 1, 2 * 8 * 4)
    res.run()
    assert res.update == whole.update == 6
    for k, v in whole.agent.state_dict().items():
        assert torch.equal(v, res.agent.state_dict()[k]), k
    ew, es = _events(tmp_path, "whole"), _events(tmp_path, "split")
    assert ew.num_rows > 0 and ew.equals(es)
    assert sorted(set(ew.column("episode").to_pylist())) == list(range(3 * 4))
    # a round written but not checkpointed (killed in between) is re-run, not written twice
    from pipelines.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint

    ck = load_checkpoint(list_checkpoints(tmp_path, "whole")[0])
    assert ck["round"] == 1
    ck["run_id"] = ck["train_config"]["run_id"] = "again"
    import shutil

    for table in ("events", "episodes", "runs"):
        shutil.copytree(tmp_path / table / "run_id=whole", tmp_path / table / "run_id=again")
    save_checkpoint(tmp_path, "again", ck["update"], ck)
    resumed_trainer("again", tmp_path, env=CueEnv(4, max_steps=16)).run()
    assert _events(tmp_path, "again").equals(ew)
