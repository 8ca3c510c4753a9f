"""Scripted Harvest policies for ``karmic simulate``.

Every policy has ``act(env, obs) -> actions (B, N)`` and ``observe(events)``; it may read the
environment's state (positions, facings, apples, who is removed) through ``env.state`` and
``env.walls``, which is what a scripted baseline is for. Randomness comes from the seed.

- ``random``: uniform over the 8 actions.
- ``greedy``: walks to the nearest apple (Manhattan), never zaps.
- ``aggressor``: zaps another agent that is in its beam line and next to apples (a rival for
  the apples it wants); otherwise greedy.
- ``tit-for-tat``: zaps only agents that zapped it before, when they are in its beam line;
  otherwise greedy.
- ``mixed``: a population: agent i plays ``MIXED_ROLES[i % 4]``.
"""

from __future__ import annotations

import numpy as np

from karmic.events import ZAP_HIT, EventBatch

FORWARD, BACKWARD, LEFT, RIGHT, ZAP = 1, 2, 3, 4, 7
FWD = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])
# world direction relative to facing ((dw - facing) % 4) -> move action
REL_MOVE = np.array([FORWARD, RIGHT, BACKWARD, LEFT])
POLICIES = ("random", "greedy", "aggressor", "tit-for-tat", "mixed")
MIXED_ROLES = ("greedy", "aggressor", "tit-for-tat", "random")
BEAM = 5


class Policy:
    name = "base"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def observe(self, events: EventBatch) -> None:  # noqa: B027 - optional hook
        pass

    def reset(self) -> None:  # noqa: B027 - optional hook
        pass

    def act(self, env, obs: np.ndarray) -> np.ndarray:
        B, N = obs.shape[:2]
        return np.stack([[self.act_one(env, b, n) for n in range(N)] for b in range(B)])

    def act_one(self, env, b: int, n: int) -> int:
        raise NotImplementedError


class RandomPolicy(Policy):
    name = "random"

    def act(self, env, obs):
        return self.rng.integers(0, 8, obs.shape[:2])

    def act_one(self, env, b, n):
        return int(self.rng.integers(0, 8))


class GreedyPolicy(Policy):
    name = "greedy"

    def act_one(self, env, b, n):
        s = env.state
        if s.removed[b, n] > 0:
            return 0
        ys, xs = np.nonzero(s.apples[b])
        if len(xs) == 0:
            return int(self.rng.integers(0, 7))  # wander, never zap
        x, y = s.pos[b, n]
        d = np.abs(xs - x) + np.abs(ys - y)
        best = np.flatnonzero(d == d.min())
        i = best[self.rng.integers(len(best))]
        dx, dy = xs[i] - x, ys[i] - y
        if dx == 0 and dy == 0:
            return 0
        # prefer the longer axis; ties at random
        if abs(dx) > abs(dy) or (abs(dx) == abs(dy) and self.rng.random() < 0.5):
            dw = 1 if dx > 0 else 3
        else:
            dw = 2 if dy > 0 else 0
        return int(REL_MOVE[(dw - s.dirs[b, n]) % 4])


def in_beam(env, b: int, n: int) -> list[int]:
    """Agents in n's beam line (first one only, as the beam stops there), as a list."""
    s = env.state
    H, W = env.walls.shape
    x, y = s.pos[b, n]
    fx, fy = FWD[s.dirs[b, n]]
    for k in range(1, BEAM + 1):
        cx, cy = x + fx * k, y + fy * k
        if not (0 <= cx < W and 0 <= cy < H) or env.walls[cy, cx]:
            return []
        for m in range(env.n_agents):
            if m != n and s.removed[b, m] == 0 and s.pos[b, m, 0] == cx and s.pos[b, m, 1] == cy:
                return [m]
    return []


class AggressorPolicy(GreedyPolicy):
    name = "aggressor"

    def act_one(self, env, b, n):
        s = env.state
        if s.removed[b, n] > 0:
            return 0
        for m in in_beam(env, b, n):
            x, y = s.pos[b, m]
            near = s.apples[b, max(0, y - 2): y + 3, max(0, x - 2): x + 3]
            if near.any():
                return ZAP
        return super().act_one(env, b, n)


class TitForTatPolicy(GreedyPolicy):
    name = "tit-for-tat"

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.grudges: set[tuple[int, int, int]] = set()  # (env, victim, attacker)

    def observe(self, events: EventBatch) -> None:
        for i in np.flatnonzero(events.event_type == ZAP_HIT):
            self.grudges.add((int(events.env[i]), int(events.target[i]), int(events.agent[i])))

    def reset(self) -> None:
        self.grudges.clear()

    def act_one(self, env, b, n):
        if env.state.removed[b, n] > 0:
            return 0
        for m in in_beam(env, b, n):
            if (b, n, m) in self.grudges:
                self.grudges.discard((b, n, m))  # one retaliation per offence
                return ZAP
        return super().act_one(env, b, n)


class MixedPolicy(Policy):
    name = "mixed"

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.members = {r: make_policy(r, seed + i) for i, r in enumerate(MIXED_ROLES)}

    def observe(self, events):
        for p in self.members.values():
            p.observe(events)

    def reset(self):
        for p in self.members.values():
            p.reset()

    def act_one(self, env, b, n):
        return self.members[MIXED_ROLES[n % len(MIXED_ROLES)]].act_one(env, b, n)


def make_policy(name: str, seed: int = 0) -> Policy:
    classes = {"random": RandomPolicy, "greedy": GreedyPolicy, "aggressor": AggressorPolicy,
               "tit-for-tat": TitForTatPolicy, "mixed": MixedPolicy}
    if name not in classes:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)} or a checkpoint path")
    return classes[name](seed)
