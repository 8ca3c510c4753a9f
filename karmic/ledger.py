"""The debt ledger: one rule (docs/DESIGN.md), folded in Python here and in SQL in ``queries/``.

State ``debt[a][b] >= 0``, "a owes b". Hits are applied in (episode, seq) order. On
``ZAP_HIT(attacker=a, victim=b, apple_context=c)``:

- if ``debt[b][a] > 0`` the hit is **retribution**: ``debt[b][a] = max(0, debt[b][a] - 1)``;
- otherwise it is **predation**: ``debt[a][b] += 1.5 if c else 1.0``.

After each episode every debt is multiplied by ``decay`` (default 0.95). Episodes with no hits
decay too: between a hit in episode e1 and one in e2 the debts decay ``e2 - e1`` times.

Worked example (decay 0.5): episode 0, agent_0 zaps agent_1 next to apples -> predation,
debt[0][1] = 1.5; agent_1 zaps agent_0 -> retribution, debt[0][1] = 0.5. End of episode 0:
debt[0][1] = 0.25. Episode 1: agent_1 zaps agent_0 again -> retribution (0.25 > 0), debt[0][1] =
0. A third hit by agent_1 would be predation: debt[1][0] = 1.0.

Batched runs keep one ledger per environment (``VecLedger``); in the lake such a run numbers its
episodes ``episode = round * num_envs + env`` (see pipelines), so env = episode % num_envs.
The domain code here does no I/O.
"""

from __future__ import annotations

import numpy as np

from karmic.events import ZAP_HIT, EventBatch

PREDATION, RETRIBUTION = 0, 1
CLASSES = ("predation", "retribution")
APPLE_CONTEXT_WEIGHT = 1.5  # docs/DESIGN.md: a hit in a resource dispute weighs 1.5
DEFAULT_DECAY = 0.95


class Ledger:
    """Who owes whom, for one stream of episodes."""

    def __init__(self, n_agents: int, decay: float = DEFAULT_DECAY):
        if n_agents < 1:
            raise ValueError(f"invalid n_agents: {n_agents}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"invalid decay: {decay} is outside [0, 1]")
        self.n_agents = n_agents
        self.decay = float(decay)
        self.debts = np.zeros((n_agents, n_agents), dtype=np.float64)
        self.n_predation = 0
        self.n_retribution = 0

    # the rule ---------------------------------------------------------------------------------
    def apply_hit(self, attacker: int, victim: int, apple_context: bool) -> str:
        return CLASSES[self._hit(int(attacker), int(victim), bool(apple_context))]

    def _hit(self, a: int, b: int, c: bool) -> int:
        d = self.debts
        if d[b, a] > 0:
            d[b, a] = max(0.0, d[b, a] - 1.0)
            self.n_retribution += 1
            return RETRIBUTION
        d[a, b] += APPLE_CONTEXT_WEIGHT if c else 1.0
        self.n_predation += 1
        return PREDATION

    def end_episode(self, times: int = 1) -> None:
        if times > 0:
            self.debts *= self.decay**times

    # folds --------------------------------------------------------------------------------------
    def observe(self, events: EventBatch) -> np.ndarray:
        """Apply the ZAP_HITs of a batch in the order given (one step of one env, live).
        Returns the classification (PREDATION / RETRIBUTION) of each ZAP_HIT row."""
        idx = np.nonzero(events.event_type == ZAP_HIT)[0]
        out = np.empty(len(idx), dtype=np.int8)
        agent, target, ctx = events.agent, events.target, events.apple_context
        for k, i in enumerate(idx):
            out[k] = self._hit(int(agent[i]), int(target[i]), ctx[i] == 1)
        return out

    def fold(self, events: EventBatch, n_episodes: int | None = None) -> np.ndarray:
        """Rebuild from a log: hits in (episode, seq) order, decaying between episodes.
        With ``n_episodes`` the debts end after the decay of episode ``n_episodes - 1``.
        Returns the classification of each ZAP_HIT in (episode, seq) order."""
        hit = events.event_type == ZAP_HIT
        ep = events.episode[hit].astype(np.int64)
        order = np.lexsort((events.seq[hit], ep))
        return self.fold_arrays(
            ep[order], events.agent[hit][order], events.target[hit][order],
            events.apple_context[hit][order] == 1, n_episodes,
        )

    def fold_arrays(self, episode, attacker, victim, apple_context, n_episodes=None) -> np.ndarray:
        """The fold over hit columns already in (episode, seq) order; the episode stream starts
        at this ledger's current state, before ``episode[0]``'s first hit."""
        # the same arithmetic as _hit / end_episode, on Python floats (a 1M-hit rebuild is a
        # tight loop; numpy scalar indexing would cost several times more)
        ep_l = np.asarray(episode).tolist()
        a_l = np.asarray(attacker).tolist()
        v_l = np.asarray(victim).tolist()
        c_l = np.asarray(apple_context, dtype=bool).tolist()
        d = self.debts.tolist()
        decay = self.decay
        n = self.n_agents
        out = [0] * len(ep_l)
        n_ret = 0
        cur = ep_l[0] if ep_l else 0
        for k in range(len(ep_l)):
            e = ep_l[k]
            if e != cur:
                f = decay ** (e - cur)
                for row in d:
                    for j in range(n):
                        row[j] *= f
                cur = e
            a, b = a_l[k], v_l[k]
            owed = d[b][a]
            if owed > 0:
                d[b][a] = max(0.0, owed - 1.0)
                out[k] = RETRIBUTION
                n_ret += 1
            else:
                d[a][b] += APPLE_CONTEXT_WEIGHT if c_l[k] else 1.0
        self.debts = np.array(d, dtype=np.float64).reshape(n, n)
        self.n_retribution += n_ret
        self.n_predation += len(ep_l) - n_ret
        if n_episodes is not None:
            self.end_episode(n_episodes - cur if ep_l else n_episodes)
        return np.array(out, dtype=np.int8)

    # the matchmaker's use ----------------------------------------------------------------------
    def pairs(self) -> list[tuple[int, int]]:
        """Greedy pairing by largest debt: (debtor, creditor) pairs, each agent in at most one.
        Ties break by (debtor, creditor) index, so the pairing is deterministic."""
        d = self.debts
        a, b = np.nonzero(d > 0)
        if len(a) == 0:
            return []
        order = np.lexsort((b, a, -d[a, b]))
        used: set[int] = set()
        out = []
        for i in order:
            x, y = int(a[i]), int(b[i])
            if x in used or y in used:
                continue
            used.add(x)
            used.add(y)
            out.append((x, y))
        return out

    @property
    def total_debt(self) -> float:
        return float(self.debts.sum())

    @property
    def retribution_ratio(self) -> float | None:
        n = self.n_predation + self.n_retribution
        return self.n_retribution / n if n else None

    def entries(self, min_debt: float = 0.0) -> list[dict]:
        """[{"debtor", "creditor", "debt"}] for debts > min_debt, largest first."""
        a, b = np.nonzero(self.debts > min_debt)
        rows = [
            {"debtor": f"agent_{x}", "creditor": f"agent_{y}", "debt": float(self.debts[x, y])}
            for x, y in zip(a.tolist(), b.tolist(), strict=True)
        ]
        return sorted(rows, key=lambda r: (-r["debt"], r["debtor"], r["creditor"]))


class VecLedger:
    """One Ledger per environment of a batch (the batched core's matchmaker)."""

    def __init__(self, num_envs: int, n_agents: int, decay: float = DEFAULT_DECAY):
        self.ledgers = [Ledger(n_agents, decay) for _ in range(num_envs)]

    def observe(self, events: EventBatch) -> None:
        hits = np.nonzero(events.event_type == ZAP_HIT)[0]
        for i in hits:  # rows are in (env, seq) order
            self.ledgers[int(events.env[i])]._hit(
                int(events.agent[i]), int(events.target[i]), events.apple_context[i] == 1
            )

    def end_episode(self) -> None:
        for led in self.ledgers:
            led.end_episode()

    def pairs(self) -> list[list[tuple[int, int]]]:
        return [led.pairs() for led in self.ledgers]

    @property
    def total_debt(self) -> float:
        return float(sum(led.total_debt for led in self.ledgers))
