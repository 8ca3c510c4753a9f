"""The batched Harvest core: B environments stepped at once over (B, N, ...) arrays.

State is a dataclass of numpy arrays with a leading B axis; the dynamics are the pure numba
kernels of ``karmic.envs.kernels``. See ``karmic.envs.harvest_v0`` for the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from karmic.envs import kernels as K
from karmic.envs.config import (
    APPLE_CONTEXT_RADIUS,
    SSD_HARVEST_MAP,
    SSD_NEIGHBOURHOOD,
    HarvestConfig,
)
from karmic.envs.kernels import N_ACTIONS, STAT_NAMES
from karmic.events import EventBatch

N_CHANNELS = 3  # apple, wall, other agent (identity "onehot" adds one channel per agent)


def n_channels(config: HarvestConfig) -> int:
    """Observation channels: 3, plus one per agent with identity "onehot"."""
    return N_CHANNELS + (config.n_agents if config.identity == "onehot" else 0)


def disk_offsets(radius: int, include_centre: bool = True) -> np.ndarray:
    """(dx, dy) with dx^2 + dy^2 <= radius^2."""
    r = radius
    out = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
           if dx * dx + dy * dy <= r * r and (include_centre or dx or dy)]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def neighbour_kernel(config: HarvestConfig) -> np.ndarray:
    """Offsets counted for regrowth. SSD checks j^2 + k^2 <= APPLE_RADIUS (not radius^2)."""
    if config.neighbourhood == SSD_NEIGHBOURHOOD:
        r = config.neighbour_radius
        out = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dx * dx + dy * dy <= r]
        return np.array(out, dtype=np.int64).reshape(-1, 2)
    return disk_offsets(config.neighbour_radius)


def spawn_cells(config: HarvestConfig, walls: np.ndarray) -> np.ndarray:
    """(H, W) bool: where agents spawn at random: the map's 'P' cells with spawn_on_points, else
    every non-wall cell."""
    if config.spawn_on_points:
        return _SSD_SPAWN_POINTS & ~walls
    return ~walls


_SSD_SPAWN_POINTS = np.array([[ch == "P" for ch in row[1:-1]] for row in SSD_HARVEST_MAP[1:-1]],
                             dtype=np.bool_)


def build_layout(config: HarvestConfig) -> tuple[np.ndarray, np.ndarray]:
    """(walls, apple_cells) as (H, W) arrays of the interior; outside the interior is wall."""
    if config.layout == "ssd":
        rows = [row[1:-1] for row in SSD_HARVEST_MAP[1:-1]]
        walls = np.array([[ch == "@" for ch in row] for row in rows], dtype=np.bool_)
        apples = np.array([[ch == "A" for ch in row] for row in rows], dtype=np.uint8)
        return walls, apples
    g = config.grid_size
    walls = np.zeros((g, g), dtype=np.bool_)
    apples = np.zeros((g, g), dtype=np.uint8)
    rng = np.random.default_rng(config.layout_seed)  # the map is fixed per config
    off = disk_offsets(config.patch_radius)
    cap = g * g // 2
    for _ in range(config.patches):
        cx, cy = rng.integers(0, g, size=2)
        for dx, dy in off:
            x, y = cx + dx, cy + dy
            if 0 <= x < g and 0 <= y < g and apples.sum() < cap:
                apples[y, x] = 1
    return walls, apples


@dataclass
class HarvestState:
    apples: np.ndarray  # (B, H, W) uint8
    pos: np.ndarray  # (B, N, 2) int64, (x, y)
    dirs: np.ndarray  # (B, N) int64
    removed: np.ndarray  # (B, N) int64 steps left off the board
    t: np.ndarray  # (B,) int64
    seq: np.ndarray  # (B,) int64 next event seq
    rng: np.ndarray  # (B,) uint64 xorshift state
    stats: np.ndarray  # (B, N, len(STAT_NAMES)) float64 episode statistics


class HarvestVecEnv:
    """B Harvest environments stepped together. See docs/DESIGN.md ("Internal interfaces") for the contract."""

    def __init__(self, config: HarvestConfig | None = None, num_envs: int = 1):
        if num_envs < 1:
            raise ValueError(f"invalid num_envs: {num_envs} (must be >= 1)")
        self.config = config = config or HarvestConfig()
        self.num_envs = B = num_envs
        self.n_agents = N = config.n_agents
        self.walls, self.apple_cells = build_layout(config)
        self.spawn_ok = spawn_cells(config, self.walls)  # recomputed from the walls at each reset
        H, W = self.walls.shape
        if int((~self.walls).sum()) < N:
            raise ValueError("invalid HarvestConfig.grid_size: too small for its agents")
        V = config.view_size
        self.obs_shape = (V, V, n_channels(config))
        self._id_channels = config.identity == "onehot"
        self.max_steps = config.episode_length
        self._params = np.array([config.beam_length, config.removal_steps, config.apple_reward,
                                 config.hit_penalty, config.fire_cost, config.zap_after_moves,
                                 config.beam_sides_beside, config.simultaneous_moves],
                                dtype=np.float64)
        self._probs = np.asarray(config.regrowth_probs, dtype=np.float64)
        self._nbr = neighbour_kernel(config)
        self._ctx = disk_offsets(APPLE_CONTEXT_RADIUS)
        self._lat = np.array([0] if config.beam_width == 1 else [-1, 0, 1], dtype=np.int64)
        self.state = HarvestState(
            apples=np.zeros((B, H, W), np.uint8), pos=np.zeros((B, N, 2), np.int64),
            dirs=np.zeros((B, N), np.int64), removed=np.zeros((B, N), np.int64),
            t=np.zeros(B, np.int64), seq=np.zeros(B, np.int64),
            rng=np.ones(B, np.uint64), stats=np.zeros((B, N, len(STAT_NAMES)), np.float64),
        )
        self.episode = np.full(B, -1, dtype=np.int64)
        # preallocated outputs; max events per env-step: N fired + N*w hits + N eaten + N spawns
        self._ev = np.zeros((B * N * (4 + 3), K.N_EVENT_COLS), dtype=np.int64)
        self._ne = np.zeros(1, dtype=np.int64)
        self._hit = np.zeros(N, dtype=np.int64)
        self._move_tgt = np.zeros((N, 2), dtype=np.int64)
        self._move_state = np.zeros(N, dtype=np.int64)
        self._obs = np.zeros((B, N, *self.obs_shape), dtype=np.uint8)
        self._rew = np.zeros((B, N), dtype=np.float32)
        self._seeded = False
        self.reset_events = EventBatch.empty()
        self.last_events = EventBatch.empty()
        # record_events: keep the raw rows of the whole episode for one conversion at its end
        # (a writer then handles one batch per episode instead of one per step)
        self.record_events = False
        self._recorded: list[np.ndarray] = []

    # --------------------------------------------------------------------------------------------
    def seed(self, seed: int | Sequence[int]) -> None:
        seeds = self._seeds(seed)
        for b, s in enumerate(seeds):
            self.state.rng[b] = K.splitmix64(np.uint64(s & 0xFFFFFFFFFFFFFFFF))
        self._seeded = True

    def _seeds(self, seed) -> list[int]:
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + b for b in range(self.num_envs)]
        seeds = [int(s) for s in seed]
        if len(seeds) != self.num_envs:
            raise ValueError(f"invalid seed: {len(seeds)} seeds for {self.num_envs} environments")
        return seeds

    def _pairs_array(self, pairs) -> np.ndarray:
        B = self.num_envs
        if pairs is None:
            return np.full((B, 0, 2), -1, dtype=np.int64)
        if isinstance(pairs, np.ndarray):
            arr = pairs.astype(np.int64).reshape(B, -1, 2)
            return arr
        rows = list(pairs)
        if len(rows) != B:
            raise ValueError(f"invalid pairs: {len(rows)} lists for {B} environments")
        P = max((len(r) for r in rows), default=0)
        arr = np.full((B, P, 2), -1, dtype=np.int64)
        for b, r in enumerate(rows):
            for p, (a, c) in enumerate(r):
                arr[b, p] = (int(a), int(c))
        return arr

    def reset(self, seed: int | Sequence[int] | None = None, pairs=None) -> np.ndarray:
        if seed is not None:
            self.seed(seed)
        elif not self._seeded:
            self.seed(0)
        s = self.state
        self._ne[0] = 0
        self.spawn_ok = spawn_cells(self.config, self.walls)
        K.reset_kernel(s.rng, self.walls, self.spawn_ok, self.apple_cells, s.apples, s.pos,
                       s.dirs, s.removed, s.t, s.seq, s.stats, self._pairs_array(pairs), self._ev,
                       self._ne)
        self.episode += 1
        self._recorded = [self._ev[: self._ne[0]].copy()] if self.record_events else []
        self.reset_events = self._collect()
        K.observe_kernel(self.walls, s.apples, s.pos, s.dirs, s.removed, self._obs, self._id_channels)
        return self._obs

    def step(self, actions: np.ndarray):
        a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs, self.n_agents)
        if a.size and (a.min() < 0 or a.max() >= N_ACTIONS):
            raise ValueError(f"invalid action: actions must be in [0, {N_ACTIONS})")
        s = self.state
        if int(s.t[0]) >= self.max_steps:
            raise RuntimeError("step() after the episode ended: call reset()")
        self._ne[0] = 0
        K.step_kernel(s.rng, self.walls, self.spawn_ok, self.apple_cells, s.apples, s.pos, s.dirs,
                      s.removed, s.t, s.seq, s.stats, a, self._rew, self._params, self._probs,
                      self._nbr, self._ctx, self._lat, self._ev, self._ne, self._hit,
                      self._move_tgt, self._move_state)
        if self.record_events and self._ne[0]:
            self._recorded.append(self._ev[: self._ne[0]].copy())
        events = self._collect()
        K.observe_kernel(self.walls, s.apples, s.pos, s.dirs, s.removed, self._obs, self._id_channels)
        dones = s.t >= self.max_steps
        self.last_events = events
        return self._obs, self._rew, dones, events

    def observe(self) -> np.ndarray:
        """The observations of the current state again (after a caller changed it by hand, as
        ``karmic evaluate`` does to take agents off the board)."""
        s = self.state
        K.observe_kernel(self.walls, s.apples, s.pos, s.dirs, s.removed, self._obs, self._id_channels)
        return self._obs

    def take_recorded(self) -> EventBatch:
        """Every event since the last reset (with ``record_events``), in (env, step, seq) order
        as one batch; clears the record."""
        raw = np.concatenate(self._recorded) if self._recorded else self._ev[:0]
        self._recorded = []
        return self._to_batch(raw[np.lexsort((raw[:, 2], raw[:, 0]))] if len(raw) else raw)

    def _collect(self) -> EventBatch:
        return self._to_batch(self._ev[: self._ne[0]])

    def _to_batch(self, e: np.ndarray) -> EventBatch:
        env = e[:, 0].astype(np.int32)
        return EventBatch(
            env=env, episode=self.episode[env], t=e[:, 1].astype(np.int32),
            seq=e[:, 2].astype(np.int32), event_type=e[:, 3].astype(np.int8),
            agent=e[:, 4].astype(np.int16), target=e[:, 5].astype(np.int16),
            x=e[:, 6].astype(np.int16), y=e[:, 7].astype(np.int16),
            target_x=e[:, 8].astype(np.int16), target_y=e[:, 9].astype(np.int16),
            direction=e[:, 10].astype(np.int8), apple_context=e[:, 11].astype(np.int8),
            spawn_cause=e[:, 12].astype(np.int8),
        )

    def episode_stats(self) -> dict[str, np.ndarray]:
        st = self.state.stats
        out = {name: st[:, :, i].copy() for i, name in enumerate(STAT_NAMES)}
        for name in STAT_NAMES[1:]:  # every count but the return
            out[name] = out[name].astype(np.int64)
        return out

    def render_rgb(self, b: int = 0, scale: int = 8) -> np.ndarray:
        from karmic.envs.render import board_rgb

        return board_rgb(self, b, scale)
