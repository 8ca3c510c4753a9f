"""DRQN: recurrent Q-learning in the R2D2 style, replaying sequences from the lake (``--algo drqn``).

The seed's baseline learner (Hausknecht & Stone 2015), in the form of R2D2 (Kapturowski et al.
2019; rlpyt's ``r2d1.py`` and Acme's R2D2 have the same parts):

- **Network** (:class:`QAgent`): ``KarmicAgent``'s CNN + LSTM torso; its 8-way head is read as
  ``Q(s, a)``. Acting, the agent returns the log-probabilities of the epsilon-greedy policy over
  Q (so the PPO trainer's rollout, which samples from those with its seeded generator, acts
  epsilon-greedily unchanged) and ``max_a Q`` as the value (what the shard's ``value`` column
  holds, and what TVT reads as ``V``).
- **Replay buffer = the lake**: every update's rollout is written as a trajectory shard with the
  PPO writer and schema (``logprob`` is the behaviour policy's, ``value`` is ``max_a Q``); the
  learner samples from the last ``replay_shards`` shards up to the current update, never from a
  shard a killed run left beyond it. A sampled *window* is two consecutive rows (sequences of
  ``seq_len`` steps) of one slot, ``2 * seq_len`` steps, unrolled from the LSTM state stored at
  its start: the first ``burn_in`` steps only warm the state, the next ``seq_len`` are trained,
  and the rest supply n-step bootstraps (``burn_in + n_step <= seq_len``). Every stored step
  but a shard's first ``burn_in`` is trained by some window.
- **Targets**: n-step double Q, ``sum_{k<n} gamma^k r_{t+k} + gamma^n Q_target(t+n, argmax_a
  Q_online(t+n, a))``, cut at an episode end (a start flag: no bootstrap through it, as PPO's GAE);
  trained steps after an episode end inside the window are masked out (R2D2 / rlpyt ``valid``).
  Target network copied every ``target_period`` gradient steps; Huber loss; global gradient clip.
- **Epsilon** decays linearly from ``eps_start`` to ``eps_end`` over the first ``eps_fraction`` of
  the run's env steps, set before each rollout from ``global_step`` (so resume needs no state).
- **TVT** (every condition with a transport: ``tvt``, ``full``, ``sham``, ``tvt-learned``; the
  ``hit-cost`` shaping reaches the learner the same way, as rewards added to the shard): the rollout is PPO's (memory ring, reads, role tags); the
  transport (``karmic.tvt.harvest.transport_rewards``) takes ``V = max_a Q`` from the shard; the
  learned transport's ``V(t2)`` is therefore ``max_a Q(t2, a)`` and semantic matching moves
  ``alpha * delta(t2)`` with ``delta`` the one-step TD error ``r + gamma max Q(t+1) - max Q(t)``
  (GAE at ``gae_lambda = 0``, this config's default). The transported value is added to the
  rewards of the replayed steps it targets and stays with their shard for every later sample;
  every transport is logged to ``tvt_transports``. The Q network reads a memory bank built from
  the kept shards' stored words, as PPO's learner does.
- **Resume**: checkpoints add the target network, the gradient-step counter and the transported
  value still attached to kept shards; the kept shards themselves are re-read from the lake, and
  sampling uses the trainer's checkpointed generator, so a resumed run is bit-for-bit the
  uninterrupted one (``tests/test_drqn.py``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from karmic.agents.network import KarmicAgent
from karmic.envs.kernels import N_ACTIONS
from karmic.rl import nstep_double_q_targets
from karmic.training.config import DRQNConfig  # noqa: F401  (torch-free, so the CLI reads it)
from karmic.training.ppo import Trainer


def epsilon_at(cfg: DRQNConfig, step: int, total: int) -> float:
    """Linear decay from eps_start to eps_end over the first eps_fraction of ``total`` env steps."""
    frac = min(1.0, step / max(1.0, cfg.eps_fraction * total))
    return float(cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start))


class QAgent(KarmicAgent):
    """KarmicAgent whose head is Q; ``forward`` acts epsilon-greedily (see the module docstring)."""

    epsilon: float = 1.0

    def q(self, obs, state, starts, agent_ids=None, memory=None):
        """-> (q (T, B, A), new_state, z)."""
        q, _, state, z = super().forward(obs, state, starts, agent_ids, memory=memory)
        return q, state, z

    def forward(self, obs, state, starts, agent_ids=None, memory=None):
        q, state, z = self.q(obs, state, starts, agent_ids, memory)
        probs = torch.full_like(q, self.epsilon / self.n_actions)
        probs.scatter_add_(-1, q.argmax(-1, keepdim=True),
                           torch.full_like(q[..., :1], 1.0 - self.epsilon))
        return probs.log(), q.max(-1).values, state, z


# --- the learning rule (pure functions, tested on hand-made cases) -----------------------------
def train_mask(start: torch.Tensor, burn_in: int, trained: int, mask_after_done: bool) -> torch.Tensor:
    """(W, M) bool: steps ``burn_in .. burn_in + trained - 1`` of the window, minus (if asked) those
    after an episode end inside that range (a start at j > burn_in masks j onwards)."""
    W, M = start.shape
    m = torch.zeros(W, M, dtype=torch.bool)
    m[burn_in : burn_in + trained] = True
    if mask_after_done:
        s = start.clone().to(torch.int64)
        s[: burn_in + 1] = 0  # a start at or before the first trained step ends nothing trained
        m &= s.cumsum(0) == 0
    return m


def window_index(updates: list[int], chunks: int, slots: int) -> np.ndarray:
    """Every window the kept shards ``updates`` (ascending) offer: rows (u_a, row_a, u_b, row_b),
    row = chunk * slots + slot, the second row the same slot's next sequence (in the next shard
    for a shard's last chunk, if that shard is kept). Nothing past the last kept update."""
    kept = set(updates)
    out = []
    s = np.arange(slots)
    for u in updates:
        for k in range(chunks):
            if k + 1 < chunks:
                nxt = (u, k + 1)
            elif u + 1 in kept:
                nxt = (u + 1, 0)
            else:
                continue
            out.append(np.stack([np.full(slots, u), k * slots + s, np.full(slots, nxt[0]),
                                 nxt[1] * slots + s], 1))
    return np.concatenate(out) if out else np.zeros((0, 4), np.int64)


class DRQNTrainer(Trainer):
    """The PPO trainer's rollout, lake, matchmaker and checkpoints, with the DRQN learner."""

    def __init__(self, cfg: DRQNConfig, lake, on_update=None, tensorboard=False,
                 resume_from: dict[str, Any] | None = None, env=None, io_factory=None) -> None:
        # the learner's tensors are the CPU's (issue 37 moved PPO's acting and learning only)
        cfg.device = "cpu" if cfg.device == "auto" else cfg.device
        if cfg.device != "cpu":
            raise ValueError(f"drqn runs on the CPU only, not {cfg.device}: use --device cpu (or --algo ppo)")
        super().__init__(cfg, lake, on_update=on_update, tensorboard=tensorboard, resume_from=None,
                         env=env, io_factory=io_factory)
        torch.manual_seed(cfg.seed)
        self.agent = QAgent(self.obs_shape, n_actions=N_ACTIONS, use_tvt=self.use_tvt, hidden=cfg.hidden,
                            latent=cfg.latent, n_agents=self.N if cfg.agent_id else 0,
                            memory_size=cfg.memory_size)
        self.target = copy.deepcopy(self.agent).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
        self.keep_shards = max(self.keep_shards, cfg.replay_shards)
        self.grad_step = 0
        self.cache: dict[int, Any] = {}  # update -> TrajectoryShard, the kept shards
        self.added: dict[int, np.ndarray] = {}  # update -> (rows, L) transported value
        if resume_from is not None:
            self._restore(resume_from)

    # -- state ---------------------------------------------------------------------------------
    def _restore(self, ck: dict[str, Any]) -> None:
        super()._restore(ck)
        self.target.load_state_dict(ck["target"])
        self.grad_step = int(ck["grad_step"])
        self.added = {int(u): np.asarray(a) for u, a in ck.get("added", {}).items()}

    def checkpoint_payload(self) -> dict[str, Any]:
        out = super().checkpoint_payload()
        out.update(algo="drqn", target=self.target.state_dict(), grad_step=self.grad_step,
                   added={u: a for u, a in self.added.items() if u in self.cache})
        return out

    def rollout(self) -> None:
        total = self.n_updates * self.cfg.num_steps * self.B
        self.agent.epsilon = epsilon_at(self.cfg, self.global_step, total)
        super().rollout()

    # -- replay ----------------------------------------------------------------------------------
    def _sync_cache(self, shard) -> list[int]:
        """Keep the last ``keep_shards`` shards up to this update in memory (earlier ones re-read
        from the lake after a resume); returns the updates replay samples from."""
        from pipelines.trajectories import list_shards, read_shard, shard_update

        self.cache[shard.update] = shard
        paths = {shard_update(p): p for p in list_shards(self.lake, self.run_id)}
        earlier = sorted(u for u in paths if u < shard.update)
        want = earlier[max(0, len(earlier) - (self.keep_shards - 1)):]
        for u in want:
            if u not in self.cache:
                self.cache[u] = read_shard(paths[u])
        keep = set(want) | {shard.update}
        self.cache = {u: self.cache[u] for u in sorted(keep)}
        self.added = {u: a for u, a in self.added.items() if u in keep}
        return sorted(keep)[-self.cfg.replay_shards:]

    def _rewards(self, u: int) -> np.ndarray:
        r = self.cache[u].reward
        return r + self.added[u] if u in self.added else r

    def learn_replay(self, shard, added: np.ndarray) -> float:
        """Transported value for an earlier, still kept shard: it stays with the shard's rewards."""
        rows = shard.from_time_major(added.astype(np.float32))
        self.added[shard.update] = self.added.get(shard.update, 0.0) + rows
        return 0.0

    def _window_batch(self, win: np.ndarray) -> dict[str, torch.Tensor]:
        def cat(get):
            return np.concatenate([np.stack([get(self.cache[int(u)], int(r)) for u, r in win[:, 0:2]]),
                                   np.stack([get(self.cache[int(u)], int(r)) for u, r in win[:, 2:4]])], 1)

        tm = lambda a: torch.from_numpy(np.ascontiguousarray(np.swapaxes(a, 0, 1)))  # noqa: E731
        rew = np.concatenate([np.stack([self._rewards(int(u))[int(r)] for u, r in win[:, 0:2]]),
                              np.stack([self._rewards(int(u))[int(r)] for u, r in win[:, 2:4]])], 1)
        first = [(self.cache[int(u)], int(r)) for u, r in win[:, 0:2]]
        batch = {
            "obs": tm(cat(lambda sh, r: sh.obs[r])),
            "act": tm(cat(lambda sh, r: sh.action[r]).astype(np.int64)),
            "rew": tm(rew.astype(np.float32)),
            "start": tm(cat(lambda sh, r: sh.start[r]).astype(bool)),
            "h0": torch.from_numpy(np.stack([sh.h0[r] for sh, r in first]))[None],
            "c0": torch.from_numpy(np.stack([sh.c0[r] for sh, r in first]))[None],
            "ids": torch.from_numpy(np.array([sh.rows["agent"][r] for sh, r in first], np.int64)),
            "slot": torch.from_numpy(np.array([sh.rows["slot"][r] for sh, r in first], np.int64)),
            "tau0": np.array([sh.rows["global_step"][r] // sh.num_envs for sh, r in first], np.int64),
        }
        if self.use_tvt:
            batch["prev_a"] = tm(cat(lambda sh, r: sh.extra["tvt_prev_action"][r]).astype(np.int64))
            batch["prev_r"] = tm(cat(lambda sh, r: sh.extra["tvt_prev_reward"][r]))
        return batch

    def _memory(self, batch, W: int):
        if not self.use_tvt:
            return None
        from karmic.tvt.harvest import memory_bank
        from karmic.tvt.memory import window_valid

        if getattr(self, "_bank_key", None) != tuple(self.cache):
            words, times = memory_bank(list(self.cache.values()), self.S, self.agent.tvt.word)
            self._bank = (torch.from_numpy(words), torch.from_numpy(times))
            self._bank_key = tuple(self.cache)
        words, times = self._bank
        taus = torch.from_numpy(batch["tau0"][:, None] + np.arange(W)[None]).T  # (W, M)
        valid = window_valid(times[None].expand(taus.shape[1], -1), taus, self.cfg.memory_size)
        return words[batch["slot"]], valid

    def q_loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Huber loss of one batch of windows (see the module docstring)."""
        cfg = self.cfg
        W = batch["obs"].shape[0]
        memory = self._memory(batch, W)
        state = (batch["h0"], batch["c0"])
        q, _, z = self.agent.q(batch["obs"], state, batch["start"], batch["ids"], memory=memory)
        strength = self.agent.last_read.strength if self.use_tvt else None
        with torch.no_grad():
            q_t, _, _ = self.target.q(batch["obs"], state, batch["start"], batch["ids"], memory=memory)
        target, ok = nstep_double_q_targets(batch["rew"], batch["start"], q.detach(), q_t,
                                            cfg.gamma, cfg.n_step)
        mask = train_mask(batch["start"], cfg.burn_in, cfg.seq_len, cfg.mask_after_done) & ok
        q_a = q.gather(-1, batch["act"][..., None])[..., 0]
        err = nn.functional.huber_loss(q_a, target, reduction="none", delta=cfg.huber_delta)
        m = mask.to(err.dtype)
        loss = (err * m).sum() / m.sum().clamp(min=1.0)
        if self.use_tvt:
            tvt = self.agent.tvt
            words = tvt.write(z, batch["prev_a"], batch["prev_r"])
            obs_flat = batch["obs"].reshape(*words.shape[:2], -1).float() / 255.0
            aux = tvt.losses(words, obs_flat, batch["prev_a"], batch["prev_r"], strength,
                             power=cfg.tvt_read_power, tolerance=cfg.tvt_read_tolerance)
            loss = loss + cfg.tvt_recon_cost * aux["recon"] + cfg.tvt_read_cost * aux["read_reg"]
        stats = {"q_loss": float((err.detach() * m).sum() / m.sum().clamp(min=1.0)),
                 "q_mean": float((q_a.detach() * m).sum() / m.sum().clamp(min=1.0))}
        return loss, stats

    def learn(self, shard, rewards: np.ndarray) -> dict[str, float]:
        """``grad_steps`` gradient steps on windows sampled from the kept shards."""
        cfg = self.cfg
        added = rewards - shard.reward
        if np.any(added):
            self.added[shard.update] = added.astype(np.float32)
        updates = self._sync_cache(shard)
        chunks = shard.n_rows // shard.slots
        index = window_index(updates, chunks, shard.slots)
        stats: dict[str, list[float]] = {"q_loss": [], "q_mean": []}
        if not len(index):  # one one-chunk shard: no window yet
            return {"q_loss": float("nan"), "q_mean": float("nan"), "epsilon": self.agent.epsilon}
        for _ in range(cfg.grad_steps):
            win = index[self.rng.integers(0, len(index), cfg.batch_size)]
            loss, st = self.q_loss(self._window_batch(win))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.grad_step += 1
            if self.grad_step % cfg.target_period == 0:
                self.target.load_state_dict(self.agent.state_dict())
            for k, v in st.items():
                stats[k].append(v)
        return {**{k: float(np.mean(v)) for k, v in stats.items()}, "epsilon": self.agent.epsilon}


__all__ = ["DRQNConfig", "DRQNTrainer", "QAgent", "epsilon_at", "nstep_double_q_targets",
           "train_mask", "window_index"]

