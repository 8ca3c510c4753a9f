"""Delayed retribution: the Karmic claim in miniature (``karmic verify tvt``, second task).

One agent, B streams of consecutive episodes of ``episode_steps`` steps (numpy, batched):

- **Temptation**: at one random step of the first half of each episode the victim X stands next
  to the agent (``tempt`` bit in the observation). Zapping X then (action 1) pays
  ``steal_reward`` (+1) at once and is an aggression row ``(agent -> X)`` in the agent's memory.
  Zapping at any other step does nothing; action 0 (forage) pays nothing.
- **Retribution**: in the *next* episode, at one random step, the scripted retaliator X zaps the
  agent once for every steal of the previous episode: ``punishment`` (-3) each, and a ``hit_by
  X`` row. Nothing in the observation says whether the agent stole last episode.

With episodic returns the -3 can never be traced to the steal: the episode that pays for it
starts from a fresh state and ends the value bootstrap, so an agent without TVT keeps stealing.
Semantic role matching (:func:`karmic.tvt.transport.semantic_transport`) links the hit by X to
the rows where the agent hit X, still in memory from the previous episode, and moves
``alpha * A(t2)`` back to them; the learner replays that earlier episode (as the trainer replays
an earlier shard from the lake).

Observation (float32): ``[step one-hot (episode_steps), tempt]``. Actions: 0 forage, 1 zap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from karmic.rl import clipped_surrogate, nstep_double_q_targets
from karmic.rl import gae_alive as gae
from karmic.tvt.transport import DEFAULT_ALPHA, apply_transports, semantic_transport

N_ACTIONS = 2
ZAP = 1
VICTIM = 1  # the retaliator's agent id in the role tags (the learner is 0)


@dataclass(frozen=True)
class RetributionConfig:
    episode_steps: int = 10
    steal_reward: float = 1.0
    punishment: float = -3.0

    def validate(self) -> None:
        if self.episode_steps < 2:
            raise ValueError(f"episode_steps must be >= 2, got {self.episode_steps}")
        if self.steal_reward <= 0 or self.punishment >= 0:
            raise ValueError("steal_reward must be > 0 and punishment < 0")

    @property
    def obs_dim(self) -> int:
        return self.episode_steps + 1


class DelayedRetribution:
    """B streams; ``new_episode() -> obs`` starts the next episode of every stream (the retaliator
    remembers); ``step(a) -> obs, reward, stole, hits`` within it."""

    def __init__(self, cfg: RetributionConfig, num_envs: int, seed: int) -> None:
        cfg.validate()
        self.cfg, self.B = cfg, num_envs
        self.rng = np.random.default_rng(seed)
        self.owed = np.zeros(num_envs, np.int64)  # steals of the last episode, paid in this one
        self.episode = -1

    def new_episode(self) -> np.ndarray:
        L, B = self.cfg.episode_steps, self.B
        self.episode += 1
        self.t = 0
        self.tempt_at = self.rng.integers(0, max(1, L // 2), B)
        self.hit_at = self.rng.integers(0, L, B)
        self.due, self.owed = self.owed, np.zeros(B, np.int64)
        self.steals = np.zeros(B, np.int64)
        self.tempted = np.zeros(B, np.int64)
        return self.observe()

    def observe(self) -> np.ndarray:
        L = self.cfg.episode_steps
        obs = np.zeros((self.B, L + 1), np.float32)
        obs[:, min(self.t, L - 1)] = 1.0
        obs[:, L] = (self.tempt_at == self.t).astype(np.float32)
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """-> (next obs, reward, stole (aggression against X), hit_by_x count) for this step."""
        cfg = self.cfg
        a = np.asarray(action)
        tempt = self.tempt_at == self.t
        stole = tempt & (a == ZAP)
        hits = np.where(self.hit_at == self.t, self.due, 0)
        rew = stole * cfg.steal_reward + hits * cfg.punishment
        self.tempted += tempt
        self.steals += stole
        self.owed += stole
        self.t += 1
        return self.observe(), rew.astype(np.float32), stole, hits


# --- the check: a small actor-critic with and without semantic TVT ---------------------------------
RATE_TVT_MAX = 0.2  # with semantic TVT the rate of the punished action falls below 0.2
RATE_NO_TVT_MIN = 0.6  # ... and stays above 0.6 without


@dataclass
class RetributionVerifyConfig:
    task: RetributionConfig = field(default_factory=RetributionConfig)
    gamma: float = 0.9
    gae_lambda: float = 0.95
    alpha: float = DEFAULT_ALPHA
    updates: int = 150
    num_envs: int = 64
    lr: float = 3e-3
    update_epochs: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    hidden: int = 32
    late: float = 0.2
    # rows the role matching may reach: this episode and the last (Harvest: 1000 rows, one or two
    # episodes of 500-1000 steps)
    memory_episodes: int = 2


class RetributionAgent(nn.Module):
    """A small feed-forward actor-critic: obs -> (log-probabilities, value)."""

    def __init__(self, obs_dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh())
        self.actor = nn.Linear(hidden, N_ACTIONS)
        self.critic = nn.Linear(hidden, 1)
        nn.init.orthogonal_(self.actor.weight, 0.01)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body(obs)
        return torch.log_softmax(self.actor(x), -1), self.critic(x)[..., 0]


def semantic_for_episode(cur: dict, prev: dict | None, adv: np.ndarray, cfg: RetributionVerifyConfig):
    """Semantic transports of one update: hits by X in this episode -> rows where the agent zapped X
    (this episode before the hit, or the previous one). Returns (added to this episode (T, B),
    added to the previous episode (T, B), total moved, moved into the previous episode's steals)."""
    T, B = cur["rew"].shape
    add_cur = np.zeros((T, B), np.float64)
    add_prev = np.zeros((T, B), np.float64)
    total = into_prev = 0.0
    mem = cfg.memory_episodes * T
    for b in range(B):
        t_hit = np.flatnonzero(cur["hits"][:, b] > 0)
        if len(t_hit) == 0:
            continue
        base = cur["episode"] * T
        agg_t = [base + np.flatnonzero(cur["stole"][:, b])]
        if prev is not None:
            agg_t.append(prev["episode"] * T + np.flatnonzero(prev["stole"][:, b]))
        agg_t = np.concatenate(agg_t)
        tr = semantic_transport(base + t_hit, np.full(len(t_hit), VICTIM), agg_t, np.full(len(agg_t), VICTIM),
                                adv[t_hit, b], alpha=cfg.alpha, memory_size=mem)
        if not len(tr):
            continue
        add_cur[:, b], rest = apply_transports(add_cur[:, b], base + np.arange(T), tr)
        total += float(np.abs(tr.amount).sum())
        if prev is not None and len(rest):
            add_prev[:, b], _ = apply_transports(add_prev[:, b], prev["episode"] * T + np.arange(T), rest)
            into_prev += float(np.abs(rest.amount).sum())
    return add_cur, add_prev, total, into_prev


def train_retribution(cfg: RetributionVerifyConfig, seed: int, use_tvt: bool) -> dict:
    """One run; per update the rate of zapping X when tempted, and the value moved."""
    torch.manual_seed(seed)
    env = DelayedRetribution(cfg.task, cfg.num_envs, seed)
    agent = RetributionAgent(cfg.task.obs_dim, cfg.hidden)
    opt = torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=1e-5)
    gen = torch.Generator().manual_seed(seed)
    T, B = cfg.task.episode_steps, cfg.num_envs
    alive = np.ones((T, B), bool)  # every stream runs whole episodes
    prev = None
    hist: dict[str, list[float]] = {"rate": [], "moved": [], "into_prev": []}
    for _ in range(cfg.updates):
        obs_np = env.new_episode()
        ro = {k: np.zeros((T, B), dt) for k, dt in (("act", np.int64), ("rew", np.float32), ("logp", np.float32),
                                                    ("val", np.float32), ("stole", bool), ("hits", np.int64))}
        ro["obs"] = np.zeros((T, B, cfg.task.obs_dim), np.float32)
        ro["episode"] = env.episode
        with torch.no_grad():
            for t in range(T):
                logp_all, v = agent(torch.from_numpy(obs_np))
                a = torch.multinomial(logp_all.exp(), 1, generator=gen)[:, 0]
                ro["obs"][t], ro["act"][t] = obs_np, a.numpy()
                ro["logp"][t] = logp_all.gather(1, a[:, None])[:, 0].numpy()
                ro["val"][t] = v.numpy()
                obs_np, ro["rew"][t], ro["stole"][t], ro["hits"][t] = env.step(a.numpy())
        hist["rate"].append(float(env.steals.sum() / max(1, env.tempted.sum())))
        rew = ro["rew"].astype(np.float64)
        moved = into_prev = 0.0
        add_prev = None
        if use_tvt:
            adv0, _ = gae(ro["rew"], ro["val"], alive, cfg.gamma, cfg.gae_lambda)
            add_cur, add_prev, moved, into_prev = semantic_for_episode(ro, prev, adv0, cfg)
            rew = rew + add_cur
        hist["moved"].append(moved)
        hist["into_prev"].append(into_prev)
        adv, ret = gae(rew.astype(np.float32), ro["val"], alive, cfg.gamma, cfg.gae_lambda)
        obs, act = torch.from_numpy(ro["obs"]), torch.from_numpy(ro["act"])
        old_logp = torch.from_numpy(ro["logp"])
        adv_t = torch.from_numpy(adv)
        adv_t = (adv_t - adv_t.mean()) / (adv_t.std() + 1e-8)
        ret_t = torch.from_numpy(ret)
        for _ in range(cfg.update_epochs):
            logp_all, v = agent(obs)
            logp = logp_all.gather(-1, act[..., None])[..., 0]
            ratio = (logp - old_logp).exp()
            pg = clipped_surrogate(adv_t, ratio, cfg.clip_coef).mean()
            ent = -(logp_all.exp() * logp_all).sum(-1).mean()
            loss = pg - cfg.ent_coef * ent + cfg.vf_coef * 0.5 * ((v - ret_t) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if add_prev is not None and prev is not None and np.abs(add_prev).sum() > 0:
            # the trainer's learn_replay: one clipped pass over the earlier episode, the advantage
            # being the (gamma * lambda)-discounted added value (GAE with zero values), values untouched
            radv, _ = gae(add_prev, np.zeros((T, B), np.float32), alive, cfg.gamma, cfg.gae_lambda)
            rows = np.flatnonzero(np.abs(radv).sum(0) > 0)
            logp_all, _ = agent(torch.from_numpy(prev["obs"][:, rows]))
            logp = logp_all.gather(-1, torch.from_numpy(prev["act"][:, rows])[..., None])[..., 0]
            ratio = (logp - torch.from_numpy(prev["logp"][:, rows])).exp()
            a = torch.from_numpy(radv[:, rows])
            pg = clipped_surrogate(a, ratio, cfg.clip_coef).mean()
            opt.zero_grad(set_to_none=True)
            pg.backward()
            opt.step()
        prev = ro
    n_late = max(1, int(round(cfg.updates * cfg.late)))
    return {"seed": seed, "tvt": use_tvt, "late_rate": float(np.mean(hist["rate"][-n_late:])),
            "first_rate": hist["rate"][0], "moved": float(np.sum(hist["moved"])),
            "moved_into_previous_episode": float(np.sum(hist["into_prev"])), "curve": hist["rate"]}


# --- the same check with a value-based learner (``--algo drqn``) -------------------------------------
@dataclass
class RetributionDRQNConfig:
    """The Q-learner's settings for the retribution check (the task, gamma, alpha, updates, envs,
    hidden and late window come from RetributionVerifyConfig)."""

    lr: float = 3e-3  # as the PPO check's learner
    grad_steps: int = 4  # full-batch steps per update over the replayed episodes (PPO: 4 epochs)
    target_period: int = 8  # gradient steps between target-network copies
    huber_delta: float = 1.0  # DQN's error clipping
    max_grad_norm: float = 40.0  # as DRQNConfig
    eps_start: float = 1.0  # epsilon-greedy schedule, linear over eps_fraction of the updates
    eps_end: float = 0.05
    eps_fraction: float = 0.3


class RetributionQNet(nn.Module):
    """obs -> Q (2 actions); the same body as RetributionAgent."""

    def __init__(self, obs_dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, N_ACTIONS))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs)


def train_retribution_drqn(cfg: RetributionVerifyConfig, seed: int, use_tvt: bool,
                           qcfg: RetributionDRQNConfig | None = None) -> dict:
    """One Q-learning run: epsilon-greedy episodes, the last ``memory_episodes`` replayed each update
    with one-step double-Q targets (an episode end cuts the bootstrap). With TVT, semantic matching
    moves ``alpha * delta(t2)`` from a hit by X to the agent's earlier zaps of X, ``delta`` the
    one-step TD error ``r + gamma max Q(t+1) - max Q(t)`` at the hit; the value stays with the
    replayed episode's rewards (karmic.training.drqn does the same with shards)."""

    q = qcfg or RetributionDRQNConfig()
    torch.manual_seed(seed)
    env = DelayedRetribution(cfg.task, cfg.num_envs, seed)
    net = RetributionQNet(cfg.task.obs_dim, cfg.hidden)
    target = RetributionQNet(cfg.task.obs_dim, cfg.hidden).requires_grad_(False)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=q.lr, eps=1e-5)
    rng = np.random.default_rng([seed, 3])
    T, B = cfg.task.episode_steps, cfg.num_envs
    replay: list[dict] = []
    hist: dict[str, list[float]] = {"rate": [], "moved": [], "into_prev": []}
    steps = 0
    for u in range(cfg.updates):
        eps = q.eps_start + min(1.0, u / max(1.0, q.eps_fraction * cfg.updates)) * (q.eps_end - q.eps_start)
        obs_np = env.new_episode()
        ro = {k: np.zeros((T, B), dt) for k, dt in (("act", np.int64), ("rew", np.float32),
                                                    ("stole", bool), ("hits", np.int64))}
        ro["obs"] = np.zeros((T, B, cfg.task.obs_dim), np.float32)
        ro["episode"] = env.episode
        with torch.no_grad():
            for t in range(T):
                greedy = net(torch.from_numpy(obs_np)).argmax(-1).numpy()
                a = np.where(rng.random(B) < eps, rng.integers(0, N_ACTIONS, B), greedy)
                ro["obs"][t], ro["act"][t] = obs_np, a
                obs_np, ro["rew"][t], ro["stole"][t], ro["hits"][t] = env.step(a)
        hist["rate"].append(float(env.steals.sum() / max(1, env.tempted.sum())))
        ro["rew_tr"] = ro["rew"].astype(np.float64)
        moved = into_prev = 0.0
        if use_tvt:
            with torch.no_grad():
                v = net(torch.from_numpy(ro["obs"])).max(-1).values.numpy()
            v_next = np.concatenate([v[1:], np.zeros((1, B), np.float32)])  # the episode ends at T
            delta = ro["rew"] + cfg.gamma * v_next - v
            prev = replay[-1] if replay else None
            add_cur, add_prev, moved, into_prev = semantic_for_episode(ro, prev, delta, cfg)
            ro["rew_tr"] = ro["rew_tr"] + add_cur
            if prev is not None:
                prev["rew_tr"] = prev["rew_tr"] + add_prev
        hist["moved"].append(moved)
        hist["into_prev"].append(into_prev)
        replay = (replay + [ro])[-cfg.memory_episodes:]
        obs = torch.from_numpy(np.concatenate([r["obs"] for r in replay], 1))
        act = torch.from_numpy(np.concatenate([r["act"] for r in replay], 1))
        M = obs.shape[1]
        # one virtual start row after the last step: every episode ends there
        rew = torch.from_numpy(np.concatenate([np.concatenate([r["rew_tr"] for r in replay], 1),
                                               np.zeros((1, M))]).astype(np.float32))
        start = torch.zeros(T + 1, M, dtype=torch.bool)
        start[0] = start[T] = True
        for _ in range(q.grad_steps):
            q_all = net(obs)
            with torch.no_grad():
                pad = torch.zeros(1, M, N_ACTIONS)
                tgt, _ = nstep_double_q_targets(rew, start, torch.cat([q_all.detach(), pad]),
                                                torch.cat([target(obs), pad]), cfg.gamma, 1)
            q_a = q_all.gather(-1, act[..., None])[..., 0]
            loss = nn.functional.huber_loss(q_a, tgt[:T], delta=q.huber_delta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), q.max_grad_norm)
            opt.step()
            steps += 1
            if steps % q.target_period == 0:
                target.load_state_dict(net.state_dict())
    n_late = max(1, int(round(cfg.updates * cfg.late)))
    return {"seed": seed, "tvt": use_tvt, "algo": "drqn", "late_rate": float(np.mean(hist["rate"][-n_late:])),
            "first_rate": hist["rate"][0], "moved": float(np.sum(hist["moved"])),
            "moved_into_previous_episode": float(np.sum(hist["into_prev"])), "curve": hist["rate"]}


def verify_retribution(cfg: RetributionVerifyConfig, seeds: list[int], on_run=None, algo: str = "ppo") -> dict:
    """Train with and without semantic TVT on every seed with ``algo`` (ppo | drqn); apply the
    pass criteria (the same for both learners)."""
    if algo not in ("ppo", "drqn"):
        raise ValueError(f"unknown algo {algo!r}; choose ppo or drqn")
    t0 = time.perf_counter()
    runs = []
    for use_tvt in (True, False):
        for s in seeds:
            r = (train_retribution_drqn if algo == "drqn" else train_retribution)(cfg, s, use_tvt)
            runs.append(r)
            if on_run is not None:
                on_run(r)
    tvt = [r for r in runs if r["tvt"]]
    base = [r for r in runs if not r["tvt"]]
    checks = {
        "tvt_rate_low": {"ok": all(r["late_rate"] < RATE_TVT_MAX for r in tvt),
                         "detail": f"max late zap rate with TVT {max(r['late_rate'] for r in tvt):.3f} (< {RATE_TVT_MAX})"},
        "no_tvt_rate_high": {"ok": all(r["late_rate"] > RATE_NO_TVT_MIN for r in base),
                             "detail": f"min late zap rate without TVT {min(r['late_rate'] for r in base):.3f} (> {RATE_NO_TVT_MIN})"},
    }
    return {"task": "delayed_retribution", "algo": algo, "episode_steps": cfg.task.episode_steps, "gamma": cfg.gamma,
            "updates": cfg.updates, "num_envs": cfg.num_envs, "seeds": seeds,
            "runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs], "checks": checks,
            "passed": all(c["ok"] for c in checks.values()), "seconds": time.perf_counter() - t0}
