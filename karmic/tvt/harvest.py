"""TVT in the Harvest trainer: the memory ring, role tags, and the transport hook.

Rollout (``karmic.training.ppo``, modes ``tvt`` / ``full``): every slot (env b, agent n) has a
:class:`MemoryRing` of the last ``memory_size`` memory words, across episode boundaries. Each step
the agent reads the ring (before writing), acts, then writes its word. The shard stores, per
step: the word, the previous action / reward it was written from, the read strengths, the top-k
rows each head read (their stream times and weights), and the role tags taken from the step's
events (``hit_victims``: bit x set when this agent's zap hit agent x; ``hit_by``: bit x set when
agent x hit it; ``apple_ctx``: one of its hits was in apple context; ``partner``: its rigged-spawn
partner at an episode start, -1 otherwise).

A slot's *stream time* counts its steps over the whole run: ``tau = global_step // B`` at a
sequence start, +1 per step; ``episode = (tau // max_steps) * B + b`` and ``t = tau % max_steps``.

The learner rebuilds the memory of every step from the words stored in the current and earlier
shards (replayed from the lake), so the reads it trains are the reads the rollout made.
``transport_rewards`` adds learned and semantic transports to the shard's rewards; transports
whose target lies in an earlier shard are returned for replay, and all of them are logged to the
lake table ``tvt_transports``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from karmic.events import SPAWN, SPAWN_CAUSES, ZAP_HIT, EventBatch
from karmic.rl import gae
from karmic.tvt.memory import READ_HEADS, READ_TOP_K, TVTMemory
from karmic.tvt.transport import (
    DEFAULT_TOP_K,
    Transports,
    apply_transports,
    learned_transport,
    semantic_transport,
    sham_transports,
)

WORD = 32
TVT_MODES = ("learned", "semantic", "both")  # a run's --tvt-mode; the sham condition adds "sham"
SHAM_SEED = 0x5348414D  # the sham's draws: a pure function of (run seed, update), so resume repeats them
_RIGGED = SPAWN_CAUSES.index("rigged")


def make_tvt_module(agent) -> TVTMemory:
    v, _, c = agent.obs_shape
    return TVTMemory(agent.hidden, agent.latent, agent.n_actions, v * v * c, word=WORD,
                     heads=READ_HEADS, top_k=READ_TOP_K, memory_size=agent.memory_size)


class MemoryRing:
    """The last ``size`` words of each of S streams, with the stream time each was written at."""

    def __init__(self, slots: int, size: int, word: int, device: torch.device | str | None = None) -> None:
        self.size = size
        self.words = torch.zeros(slots, size, word, device=device)
        self.unit = torch.zeros(slots, size, word, device=device)  # the words normalised, kept for the reads
        self.time = torch.full((slots, size), -1, dtype=torch.long, device=device)

    def view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows (S, size, word), valid (1, S, size), unit rows) for a one-step read at the next time."""
        return self.words, (self.time >= 0)[None], self.unit

    def write(self, words: torch.Tensor, tau: int) -> None:
        self.words[:, tau % self.size] = words
        self.unit[:, tau % self.size] = torch.nn.functional.normalize(words, dim=-1)
        self.time[:, tau % self.size] = tau

    def load(self, words: np.ndarray, times: np.ndarray) -> None:
        """Refill from stored history: words (S, n, word) written at stream times (n,)."""
        for i, tau in enumerate(np.asarray(times)[-self.size:].tolist()):
            self.write(torch.from_numpy(words[:, len(times) - min(len(times), self.size) + i]).to(self.words.device), tau)


def role_tags(events: EventBatch, B: int, N: int) -> dict[str, np.ndarray]:
    """One step's events -> per-slot tags (S,) (see the module docstring)."""
    S = B * N
    tags = {"hit_victims": np.zeros(S, np.int32), "hit_by": np.zeros(S, np.int32),
            "apple_ctx": np.zeros(S, np.uint8), "partner": np.full(S, -1, np.int8)}
    if not len(events):
        return tags
    et = events.event_type
    hit = et == ZAP_HIT
    if hit.any():
        env, a, x = events.env[hit], events.agent[hit], events.target[hit]
        np.bitwise_or.at(tags["hit_victims"], env * N + a, (1 << x).astype(np.int32))
        np.bitwise_or.at(tags["hit_by"], env * N + x, (1 << a).astype(np.int32))
        ctx = events.apple_context[hit] > 0
        tags["apple_ctx"][(env * N + a)[ctx]] = 1
    rig = (et == SPAWN) & (events.spawn_cause == _RIGGED)
    if rig.any():
        tags["partner"][events.env[rig] * N + events.agent[rig]] = events.target[rig]
    return tags


# columns a TVT shard carries beyond the PPO ones: name -> (dtype, per-step shape given H, k, W)
def extra_shapes(heads: int, k: int, word: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    return {
        "tvt_word": (np.dtype(np.float32), (word,)),
        "tvt_prev_action": (np.dtype(np.int8), ()),
        "tvt_prev_reward": (np.dtype(np.float32), ()),
        "tvt_strength": (np.dtype(np.float32), (heads,)),
        "tvt_top_tau": (np.dtype(np.int64), (heads, k)),
        "tvt_top_w": (np.dtype(np.float32), (heads, k)),
        "hit_victims": (np.dtype(np.int32), ()),
        "hit_by": (np.dtype(np.int32), ()),
        "apple_ctx": (np.dtype(np.uint8), ()),
        "partner": (np.dtype(np.int8), ()),
    }


def stream_times(shard) -> np.ndarray:
    """(rows, L) stream time of every step of a shard."""
    tau0 = shard.rows["global_step"] // shard.num_envs
    return tau0[:, None] + np.arange(shard.seq_len)[None]


@dataclass
class TransportResult:
    rewards: np.ndarray  # (rows, L) float32: env rewards + transports into this shard
    parts: list = field(default_factory=list)  # (slot, Transports, mode): the lake's tvt_transports rows
    replay: dict[int, np.ndarray] = field(default_factory=dict)  # earlier update -> (rows, L) added


def transport_rewards(shard, history: list, agent, cfg, transport: str | None = None,
                      yoked: list | None = None) -> TransportResult:
    """Learned and/or semantic transports for one shard (``transport``: learned | semantic |
    both | sham | yoked, default ``cfg.tvt_mode``); ``history`` holds the earlier shards, oldest
    first. ``sham`` is ``both`` with every semantic transport sent to a random earlier step
    (``karmic.tvt.transport.sham_transports``, logged with mode ``sham``). ``yoked`` is the
    learned transport plus, instead of this run's semantic matches (not computed), ``yoked``:
    (slot, Transports) a partner run made at this update, applied as they are (logged with
    mode ``yoked``). ``parts`` of the
    result are the transports made, for the lake's ``tvt_transports`` table
    (``pipelines.trajectories.transports_table``). The learned transport reads no event tags."""
    tm = shard.time_major
    S, N = shard.slots, shard.n_agents
    tau = tm(stream_times(shard))  # (T, S)
    rew = tm(shard.reward).astype(np.float64)
    val = tm(shard.value)
    x = shard.extra
    parts: list[tuple[int, Transports, str]] = []  # (slot, transports, mode)
    mode = transport or cfg.tvt_mode
    top_k = getattr(cfg, "tvt_transport_top_k", DEFAULT_TOP_K)
    if mode in ("learned", "both", "sham", "yoked"):
        st, top_t, top_w = tm(x["tvt_strength"]), tm(x["tvt_top_tau"]), tm(x["tvt_top_w"])
        for s in range(S):
            for h in range(st.shape[2]):
                tr = learned_transport(top_w[:, s, h][:, None], st[:, s, h][:, None], top_t[:, s, h],
                                       val[:, s], tau[:, s], cfg.gamma, cfg.tvt_alpha,
                                       cfg.tvt_threshold, top_k)
                if len(tr):
                    parts.append((s, Transports(tr.source, tr.target, tr.amount,
                                                np.full(len(tr), h, np.int16)), "learned"))
    if mode in ("semantic", "both", "sham"):
        hit_by = tm(x["hit_by"])
        if hit_by.any():
            last = shard.rows["chunk"] == shard.rows["chunk"].max()
            adv, _ = gae(rew.astype(np.float32), val, tm(shard.start), shard.rows["next_value"][last],
                         shard.rows["next_start"][last], cfg.gamma, cfg.gae_lambda)
            # aggression rows in memory: the earlier shards still in the lake, then this one
            agg_tau, agg_vic, agg_slot = [], [], []
            for sh in history + [shard]:
                hv = sh.time_major(sh.extra["hit_victims"])
                ht = sh.time_major(stream_times(sh))
                t_i, s_i = np.nonzero(hv)
                for bit in range(N):
                    m = (hv[t_i, s_i] >> bit) & 1 == 1
                    agg_tau.append(ht[t_i[m], s_i[m]])
                    agg_vic.append(np.full(int(m.sum()), bit))
                    agg_slot.append(s_i[m])
            agg_tau, agg_vic, agg_slot = (np.concatenate(a) if a else np.zeros(0, np.int64)
                                          for a in (agg_tau, agg_vic, agg_slot))
            for s in np.unique(np.nonzero(hit_by)[1]):
                t_idx = np.nonzero(hit_by[:, s])[0]
                h_t, h_x, h_a = [], [], []
                for t in t_idx:
                    for bit in range(N):
                        if (hit_by[t, s] >> bit) & 1:
                            h_t.append(tau[t, s]), h_x.append(bit), h_a.append(adv[t, s])
                mine = agg_slot == s
                tr = semantic_transport(np.array(h_t), np.array(h_x), agg_tau[mine], agg_vic[mine],
                                        np.array(h_a), alpha=cfg.tvt_alpha, memory_size=agent.memory_size)
                if len(tr):
                    parts.append((int(s), tr, "semantic"))
            if mode == "sham":
                real = [(s, tr) for s, tr, m in parts if m == "semantic"]
                earliest = int(stream_times((history + [shard])[0])[0, 0])
                rng = np.random.default_rng([int(cfg.seed) & 0xFFFFFFFF, SHAM_SEED, int(shard.update)])
                fake = sham_transports([tr for _, tr in real], earliest, rng, agent.memory_size)
                parts = [p for p in parts if p[2] != "semantic"] + [
                    (s, tr, "sham") for (s, _), tr in zip(real, fake, strict=True)]
    if mode == "yoked":
        parts += [(int(s), tr, "yoked") for s, tr in (yoked or []) if len(tr)]
    out = rew.copy()
    replay: dict[int, np.ndarray] = {}
    hist_by_start = {}
    if parts:
        for sh in history:
            hist_by_start[int(stream_times(sh)[0, 0])] = sh
    for s, tr, _ in parts:
        out[:, s], rest = apply_transports(out[:, s], tau[:, s], tr)
        for sh in hist_by_start.values():
            if not len(rest):
                break
            htau = sh.time_major(stream_times(sh))[:, s]
            cur = replay.setdefault(sh.update, np.zeros((sh.num_steps, S)))
            cur[:, s], rest = apply_transports(cur[:, s], htau, rest)
    return TransportResult(
        rewards=shard.from_time_major(out.astype(np.float32)),
        parts=parts,
        replay={u: r for u, r in replay.items() if r.any()},
    )


def memory_bank(shards: list, slots: int, word: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the stored words of consecutive shards: (S, n, word) and their times (n,)."""
    words, times = [], []
    for sh in shards:
        words.append(np.swapaxes(sh.time_major(sh.extra["tvt_word"]), 0, 1))
        times.append(sh.time_major(stream_times(sh))[:, 0])
    if not words:
        return np.zeros((slots, 0, word), np.float32), np.zeros(0, np.int64)
    return np.concatenate(words, 1), np.concatenate(times)
