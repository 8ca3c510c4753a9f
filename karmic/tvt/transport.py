"""Temporal value transport (Hung et al. 2019) as pure functions over arrays. No torch, no I/O.

Times are *global* agent steps: ``episode * episode_length + t`` for one agent's stream (the
memory persists across episodes, so a row may belong to an earlier episode). A transport moves
value from a *source* step t2 (where the agent read its memory, or was punished) to a *target*
step t1 < t2 (the remembered step); the learner adds ``amount`` to the reward at t1 before GAE,
replaying the earlier episode's shard when t1 lies there.

Learned transport (the reference's tvt_rewards, per read head):
  0. a row is *far* from step t if it was written at least ``min_gap = round(1 / (1 - gamma))``
     steps earlier (the horizon the discount already covers); a step whose strongest read weight
     is on a row that is not far (recent, or empty) recalls the present, not the past: its
     strength counts as 0 (the reference's ``read_strengths_cut``);
  1. the steps where the (cut) read strength passes ``threshold`` (default 2) form contiguous spans;
  2. each span contributes once, at its peak-strength step t2;
  3. at t2 the ``top_k`` largest read weights *on far rows* select memory rows; a row written at
     t1 receives ``alpha * weight * V(t2)`` (alpha 0.9, no gradient).

Semantic role matching (Karmic-RL): when the agent is hit at t2 by X, the rows where it was the
aggressor against X (t1 < t2, ``t2 - t1 >= min_gap``) share ``alpha * A(t2)`` equally, A(t2) being
its advantage at t2 (negative when punished), so the total moved equals alpha * A(t2) however
many crimes it is split over.

Sham (the ``sham`` condition's control): every semantic transport keeps its source and amount,
but its target is moved to ``source - lag``, the lag drawn from the lags of the update's other
real matches (so the count, the total and, pooled, the lag distribution are the real rule's, and
the target lies inside the memory window); where it lands is, by design, not chosen by whom the
agent hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 0.9  # Hung et al. 2019, Methods ("alpha = 0.9")
DEFAULT_THRESHOLD = 2.0  # read-strength threshold of the reference implementation
DEFAULT_TOP_K = 3


def min_gap(gamma: float, when_gamma_is_1: int = 25) -> int:
    """round(1 / (1 - gamma)); the reference uses a fixed period when gamma == 1."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"invalid gamma: {gamma} is outside [0, 1]")
    return when_gamma_is_1 if gamma >= 1.0 else int(round(1.0 / (1.0 - gamma)))


@dataclass(frozen=True)
class Transports:
    """Columns of the ``tvt_transports`` rows: source step, target step, amount, head (-1: semantic)."""

    source: np.ndarray  # int64 global steps t2
    target: np.ndarray  # int64 global steps t1
    amount: np.ndarray  # float64
    head: np.ndarray  # int16

    def __len__(self) -> int:
        return len(self.source)

    @staticmethod
    def empty() -> Transports:
        return Transports(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int16))

    @staticmethod
    def concat(parts: list[Transports]) -> Transports:
        if not parts:
            return Transports.empty()
        return Transports(*(np.concatenate([getattr(p, f) for p in parts])
                            for f in ("source", "target", "amount", "head")))


def threshold_spans(strength: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, int]]:
    """Contiguous [start, end) spans where strength > threshold."""
    above = np.concatenate([[False], np.asarray(strength) > threshold, [False]])
    edges = np.flatnonzero(above[1:] != above[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def span_peaks(strength: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The peak step of each span above threshold (first maximum on ties)."""
    s = np.asarray(strength)
    return np.array([a + int(np.argmax(s[a:b])) for a, b in threshold_spans(s, threshold)], dtype=np.int64)


def learned_transport(
    read_weights: np.ndarray,
    read_strengths: np.ndarray,
    row_times: np.ndarray,
    values: np.ndarray,
    times: np.ndarray,
    gamma: float,
    alpha: float = DEFAULT_ALPHA,
    threshold: float = DEFAULT_THRESHOLD,
    top_k: int = DEFAULT_TOP_K,
    episode_length: int | None = None,
) -> Transports:
    """Learned TVT for one agent's sequence of T steps.

    read_weights (T, H, M): attention of head h at step t over memory rows; read_strengths (T, H);
    row_times (T, M) or (M,): global step each row was written at (-1 = empty row); values (T,):
    V(t); times (T,): the global step of each t. ``episode_length`` only validates that times
    are consistent with it (transports may cross episodes)."""
    w = np.asarray(read_weights, dtype=np.float64)
    s = np.asarray(read_strengths, dtype=np.float64)
    T, H, M = w.shape
    rt = np.broadcast_to(np.asarray(row_times, dtype=np.int64), (T, M))
    times = np.asarray(times, dtype=np.int64)
    gap = min_gap(gamma)
    far = (rt >= 0) & (times[:, None] - rt >= gap)  # (T, M): rows a transport may reach
    parts = []
    for h in range(H):
        wh = w[:, h]
        strongest_far = far[np.arange(T), wh.argmax(1)] if M else np.zeros(T, bool)
        for t2 in span_peaks(np.where(strongest_far, s[:, h], 0.0), threshold):
            wf = np.where(far[t2], wh[t2], 0.0)
            rows = np.argsort(-wf, kind="stable")[: min(top_k, M)]
            rows = rows[wf[rows] > 0]
            if not len(rows):
                continue
            t1 = rt[t2, rows]
            parts.append(Transports(
                source=np.full(len(rows), times[t2], np.int64),
                target=t1,
                amount=alpha * wf[rows] * float(values[t2]),
                head=np.full(len(rows), h, np.int16),
            ))
    if episode_length is not None and len(times) > 1 and (np.diff(times) <= 0).any():
        raise ValueError("times must increase")
    return Transports.concat(parts)


def semantic_transport(
    hit_times: np.ndarray,
    hit_by: np.ndarray,
    aggression_times: np.ndarray,
    aggression_victims: np.ndarray,
    advantages: np.ndarray,
    gamma: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    memory_size: int | None = None,
) -> Transports:
    """Semantic role matching for one agent.

    hit_times (K,) global steps t2 where the agent was hit, hit_by (K,) the attacker;
    advantages (K,) the agent's advantage at each t2; aggression_times / aggression_victims (R,):
    the memory rows where the agent was the aggressor (global step t1, victim). ``gamma`` sets the
    minimum gap (0 = none, the default for role matching: the link is explicit, not learned);
    ``memory_size`` limits the match to rows still in memory (``t2 - t1 <= memory_size``)."""
    hit_times = np.asarray(hit_times, np.int64)
    hit_by = np.asarray(hit_by)
    at = np.asarray(aggression_times, np.int64)
    av = np.asarray(aggression_victims)
    gap = min_gap(gamma) if gamma > 0 else 0
    parts = []
    for t2, x, adv in zip(hit_times, hit_by, np.asarray(advantages, np.float64), strict=True):
        match = (av == x) & (at < t2) & (t2 - at >= gap)
        if memory_size is not None:
            match &= t2 - at <= memory_size
        n = int(match.sum())
        if n == 0:
            continue
        parts.append(Transports(
            source=np.full(n, t2, np.int64), target=at[match],
            amount=np.full(n, alpha * adv / n), head=np.full(n, -1, np.int16),
        ))
    return Transports.concat(parts)


def sham_transports(parts: list[Transports], earliest: int, rng: np.random.Generator,
                    memory_size: int) -> list[Transports]:
    """The sham of real semantic transports ``parts`` (one per agent stream, of one update): each
    row keeps its source, amount and head; its target becomes ``source - lag``, ``lag`` drawn
    uniformly from the lags ``source - target`` of the other real rows of the update (not those
    of the same hit: their lags point at the same punishment's real targets) that keep the target
    inside the memory window and at or after ``earliest`` (the stream's oldest step still held).
    A row with no such lag draws one uniformly from the window. Count, amounts and the pooled
    lag distribution are the real rule's; where the value lands is not chosen by whom the agent hit."""
    if not parts:
        return []
    lag_all = np.concatenate([p.source - p.target for p in parts])
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    src_all = np.concatenate([p.source for p in parts])
    out = []
    for i, p in enumerate(parts):
        target = np.empty(len(p), np.int64)
        for r, src in enumerate(p.source.tolist()):
            cap = min(int(memory_size), src - int(earliest))  # >= 1: the real target lies in it
            pool = lag_all[((owner != i) | (src_all != src)) & (lag_all <= cap)]
            lag = pool[rng.integers(len(pool))] if len(pool) else rng.integers(1, cap + 1)
            target[r] = src - lag
        out.append(Transports(p.source.copy(), target, p.amount.copy(), p.head.copy()))
    return out


def apply_transports(rewards: np.ndarray, times: np.ndarray, tr: Transports) -> tuple[np.ndarray, Transports]:
    """Add the transports whose target lies in ``times`` to ``rewards`` (a copy).
    Returns (new rewards, the transports whose target lies outside: earlier shards to replay)."""
    out = np.array(rewards, dtype=np.float64, copy=True)
    times = np.asarray(times, np.int64)
    order = np.argsort(times)
    pos = np.searchsorted(times[order], tr.target)
    pos = np.clip(pos, 0, len(times) - 1)
    hit = times[order][pos] == tr.target if len(times) else np.zeros(len(tr), bool)
    np.add.at(out, order[pos[hit]], tr.amount[hit])
    rest = ~hit
    return out, Transports(tr.source[rest], tr.target[rest], tr.amount[rest], tr.head[rest])


def split_global(step: np.ndarray, episode_length: int) -> tuple[np.ndarray, np.ndarray]:
    """global step -> (episode, t)."""
    step = np.asarray(step, np.int64)
    return step // episode_length, step % episode_length
