"""The RL math the learners share, as pure functions over arrays (no I/O, no state).

- :func:`gae`: generalised advantage estimation over time-major ``(T, S)`` arrays whose
  episode boundaries are marked by ``starts`` (the Harvest trainer's shards, TVT's semantic
  transport).
- :func:`gae_alive`: the same estimator over fixed-length episodes padded after their end, with
  an ``alive`` mask instead of starts (the key-to-door and delayed-retribution verify tasks).
- :func:`clipped_surrogate`: PPO's clipped policy-gradient loss per step (Schulman et al. 2017),
  which the trainer, its replay pass over earlier shards and both verify tasks reduce.
- :func:`nstep_double_q_targets`: n-step double-Q targets over a window of a recurrent replay
  (the DRQN learner and the delayed-retribution task's Q variant).
- :func:`landed_hits` / :func:`shaped_rewards`: the ``hit-cost`` condition's shaping (a cost on
  every hit an agent's own zap lands; ``karmic.conditions``).
"""

from __future__ import annotations

import numpy as np
import torch

from karmic.events import ZAP_HIT, EventBatch


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    starts: np.ndarray,
    next_value: np.ndarray,
    next_start: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation on time-major (T, S) arrays; returns (advantages, returns).

    ``starts[t]`` marks step t as an episode's first step, so the return at t-1 does not
    bootstrap through it; ``next_value`` / ``next_start`` describe the step after the last.
    """
    T = rewards.shape[0]
    adv = np.zeros_like(rewards, dtype=np.float32)
    last = np.zeros(rewards.shape[1], dtype=np.float32)
    for t in range(T - 1, -1, -1):
        if t == T - 1:
            nonterminal = 1.0 - next_start.astype(np.float32)
            nv = next_value
        else:
            nonterminal = 1.0 - starts[t + 1].astype(np.float32)
            nv = values[t + 1]
        delta = rewards[t] + gamma * nv * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + values


def gae_alive(rew: np.ndarray, val: np.ndarray, alive: np.ndarray, gamma: float,
              lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE over (T, B) episodes that all start at t = 0; ``alive[t]`` is False after an episode's
    end, where advantages are 0 and nothing bootstraps. Returns (advantages, returns)."""
    T, B = rew.shape
    adv = np.zeros((T, B), np.float32)
    last = np.zeros(B, np.float32)
    for t in reversed(range(T)):
        nv = val[t + 1] * alive[t + 1] if t + 1 < T else np.zeros(B, np.float32)
        nonterm = alive[t + 1] if t + 1 < T else np.zeros(B, bool)
        delta = rew[t] + gamma * nv - val[t]
        last = delta + gamma * lam * nonterm * last
        last = last * alive[t]
        adv[t] = last
    return adv, adv + val


def clipped_surrogate(adv: torch.Tensor, ratio: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """PPO's clipped surrogate, negated, per element: ``max(-A r, -A clip(r, 1 - c, 1 + c))``;
    the caller takes its mean (or masked mean)."""
    return torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef))


def nstep_double_q_targets(
    rew: torch.Tensor, start: torch.Tensor, q_online: torch.Tensor, q_target: torch.Tensor,
    gamma: float, n: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n-step double-Q targets over a window, time-major ``rew, start (W, M)``, ``q (W, M, A)``.

    ``start[j]`` marks j as an episode's first step: the return of t stops at the step before it
    and does not bootstrap. Returns ``(target (W, M), has_target (W, M) bool)``; a step whose
    n-step return would need steps beyond the window (episode still running) has no target."""
    W, M = rew.shape
    boot = q_target.gather(-1, q_online.argmax(-1, keepdim=True))[..., 0]  # double Q
    pad = lambda x, v: torch.cat([x, torch.full((n, M), v, dtype=x.dtype)])  # noqa: E731
    r, s = pad(rew, 0.0), pad(start.to(rew.dtype), 0.0)
    inside = pad(torch.ones(W, M, dtype=rew.dtype), 0.0)
    b = pad(boot.to(rew.dtype), 0.0)
    cont = torch.ones(W, M, dtype=rew.dtype)  # the episode of t still runs at t + k
    ok = torch.ones(W, M, dtype=torch.bool)
    target = torch.zeros(W, M, dtype=rew.dtype)
    for k in range(n + 1):
        if k > 0:
            cont = cont * (1.0 - s[k : k + W])
        ok &= (inside[k : k + W] > 0) | (cont == 0)
        if k < n:
            target = target + gamma**k * cont * r[k : k + W]
        else:
            target = target + gamma**n * cont * b[n : n + W]
    return target, ok




def landed_hits(events: EventBatch, B: int, N: int) -> np.ndarray:
    """(B * N,) how many ZAP_HIT events of one step each slot (env b, agent n) was the attacker
    of: its own hits that landed; misses (ZAP_FIRED alone) and hits it took count nothing."""
    out = np.zeros(B * N, np.uint8)
    if len(events):
        hit = events.event_type == ZAP_HIT
        if hit.any():
            np.add.at(out, events.env[hit].astype(np.int64) * N + events.agent[hit], 1)
    return out


def shaped_rewards(rewards: np.ndarray, hits: np.ndarray, hit_cost: float) -> np.ndarray:
    """The learner's rewards of the ``hit-cost`` condition: ``rewards - hit_cost * hits`` (float32),
    ``hits`` the landed hits per step (same shape)."""
    return (np.asarray(rewards, np.float32) - np.float32(hit_cost) * np.asarray(hits, np.float32)).astype(np.float32)


__all__ = ["clipped_surrogate", "gae", "gae_alive", "landed_hits", "nstep_double_q_targets", "shaped_rewards"]
