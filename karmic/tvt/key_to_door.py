"""Key-to-door (Hung et al. 2019, Fig. 2), scaled to a CPU: a batched gridworld with delayed credit.

Phases, in one W x W room (default W = 3), B environments stepped at once (numpy):

1. **Explore** (``explore_steps`` + 1 steps, for every agent): a key lies on a random cell.
   Stepping onto it (within the first ``explore_steps`` steps) picks it up, with no reward; the
   next observation, and only that one, shows the key in hand, and a new key appears on another
   cell (it cannot be picked up: the agent carries one). So the room looks the same to an agent
   with the key as to one without, before and after: only the row that shows the key in hand
   tells. The phase lasts the same whether or not the key is picked up (one step more than the
   pickup window, so that row is always in phase 1), so picking it up earns nothing sooner: its
   only worth is the door.
2. **Distractor** (``distractor_steps``): an apple lies on a random cell; stepping onto it pays
   ``apple_reward`` and a new apple appears. Nothing here depends on the key.
3. **Door** (``door_steps``): the agent restarts on a random cell; the door is in a corner.
   Stepping onto it pays ``door_reward`` (10) if the key was picked up in phase 1, and ends the
   episode; without the key nothing happens. The observation never shows the key here.

Actions: 0 up, 1 down, 2 left, 3 right (walls block). Observation (float32):
``[agent one-hot (W*W), key, apple, door one-hots (W*W each), key-in-hand, phase one-hot (3)]``.
Key, apple and door have channels of their own, so "walk to the apple", learned in phase 2, does not
carry over into "walk to the key" in phase 1. Episodes have different lengths (an opened door
ends phase 3); ``done`` marks the end.

The row that carries the pickup in memory is the first one whose observation shows the key in
hand (``pickup_step``, one step after the action that picked it up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_ACTIONS = 4
_MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])


@dataclass(frozen=True)
class KeyToDoorConfig:
    explore_steps: int = 6
    distractor_steps: int = 30
    door_steps: int = 6
    room: int = 3
    apple_reward: float = 1.0
    door_reward: float = 10.0

    def validate(self) -> None:
        for name in ("explore_steps", "distractor_steps", "door_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.room < 2:
            raise ValueError(f"room must be >= 2, got {self.room}")

    @property
    def max_len(self) -> int:
        return self.explore_steps + 1 + self.distractor_steps + self.door_steps

    @property
    def obs_dim(self) -> int:
        return 4 * self.room * self.room + 4


class KeyToDoor:
    """B key-to-door episodes at once. ``reset() -> obs (B, D)``; ``step(a) -> obs, r, done``."""

    def __init__(self, cfg: KeyToDoorConfig, num_envs: int, seed: int) -> None:
        cfg.validate()
        self.cfg, self.B = cfg, num_envs
        self.rng = np.random.default_rng(seed)
        self.door = np.array([0, 0])

    def _cells(self, n: int) -> np.ndarray:
        w = self.cfg.room
        return np.stack([self.rng.integers(0, w, n), self.rng.integers(0, w, n)], 1)

    def _away_from_agent(self, mask: np.ndarray) -> np.ndarray:
        """Random cells for the envs in ``mask``, none under its agent."""
        pos = self.pos[mask]
        cell = self._cells(len(pos))
        clash = (cell == pos).all(1)
        while clash.any():
            cell[clash] = self._cells(int(clash.sum()))
            clash = (cell == pos).all(1)
        return cell

    def reset(self) -> np.ndarray:
        B = self.B
        self.phase = np.zeros(B, np.int64)
        self.t_phase = np.zeros(B, np.int64)
        self.t = np.zeros(B, np.int64)
        self.pos = self._cells(B)
        self.item = self._away_from_agent(np.ones(B, bool))  # the key never starts under the agent
        self.has_key = np.zeros(B, bool)
        self.just_picked = np.zeros(B, bool)  # picked up by the last action: show it in hand now
        self.done = np.zeros(B, bool)
        self.pickup_step = np.full(B, -1, np.int64)
        self.opened = np.zeros(B, bool)
        return self.observe()

    def observe(self) -> np.ndarray:
        w = self.cfg.room
        B = self.B
        obs = np.zeros((B, self.cfg.obs_dim), np.float32)
        r = np.arange(B)
        obs[r, self.pos[:, 0] * w + self.pos[:, 1]] = 1.0
        chan = (1 + self.phase) * w * w  # key, apple or door channel
        obs[r, chan + self.item[:, 0] * w + self.item[:, 1]] = 1.0
        obs[:, 4 * w * w] = ((self.phase == 0) & self.just_picked).astype(np.float32)
        obs[r, 4 * w * w + 1 + self.phase] = 1.0
        obs[self.done] = 0.0
        return obs

    def _enter(self, mask: np.ndarray, phase: int) -> None:
        self.phase[mask] = phase
        self.t_phase[mask] = 0
        n = int(mask.sum())
        if n == 0:
            return
        self.pos[mask] = self._cells(n)
        self.item[mask] = self._cells(n) if phase == 1 else self.door

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg, w = self.cfg, self.cfg.room
        ph = self.phase.copy()  # the phase each env was in when it acted
        live = ~self.done
        rew = np.zeros(self.B, np.float32)
        self.pos[live] = np.clip(self.pos[live] + _MOVES[np.asarray(action)[live]], 0, w - 1)
        on_item = live & (self.pos == self.item).all(1)
        self.t[live] += 1
        self.t_phase[live] += 1
        # phase 1: pick the key up (a new one appears elsewhere), or time out
        p0 = live & (ph == 0)
        pick = p0 & ~self.has_key & on_item & (self.t_phase <= cfg.explore_steps)
        end0 = p0 & (self.t_phase >= cfg.explore_steps + 1)
        self.has_key |= pick
        self.pickup_step[pick] = self.t[pick]  # the row whose observation shows the key in hand
        self.just_picked = pick
        if pick.any():
            self.item[pick] = self._away_from_agent(pick)
        # phase 2: apples
        p1 = live & (ph == 1)
        eat = p1 & on_item
        rew[eat] += cfg.apple_reward
        if eat.any():
            self.item[eat] = self._cells(int(eat.sum()))
        end1 = p1 & (self.t_phase >= cfg.distractor_steps)
        # phase 3: the door
        p2 = live & (ph == 2)
        opened = p2 & on_item & self.has_key
        rew[opened] += cfg.door_reward
        self.opened |= opened
        self.done |= opened | (p2 & (self.t_phase >= cfg.door_steps))
        self._enter(end0, 1)
        self._enter(end1, 2)
        return self.observe(), rew, self.done.copy()


def random_pickup_rate(cfg: KeyToDoorConfig, episodes: int = 4000, seed: int = 0) -> float:
    """The pickup rate of the uniform random policy (the no-TVT reference line)."""
    env = KeyToDoor(cfg, episodes, seed)
    env.reset()
    rng = np.random.default_rng(seed + 1)
    for _ in range(cfg.explore_steps + 1):
        env.step(rng.integers(0, N_ACTIONS, episodes))
    return float(env.has_key.mean())
