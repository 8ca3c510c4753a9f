"""Social events as columnar arrays: the one in-memory form shared by the env, ledger and lake.

The environment core emits an :class:`EventBatch` per step (or per reset); the lake writer turns it
into the Arrow `events` table of docs/DESIGN.md; the ledger folds it. Codes are small integers so the
core can fill preallocated arrays; names are what the lake stores.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

EVENT_TYPES: tuple[str, ...] = ("SPAWN", "ZAP_FIRED", "ZAP_HIT", "APPLE_EATEN")
SPAWN, ZAP_FIRED, ZAP_HIT, APPLE_EATEN = range(4)

SPAWN_CAUSES: tuple[str, ...] = ("reset", "rigged", "respawn")
CAUSE_RESET, CAUSE_RIGGED, CAUSE_RESPAWN = range(3)

NULL = -1  # null marker for the integer-coded nullable columns below

# column -> dtype; nullable columns use NULL (-1)
EVENT_COLUMNS: dict[str, np.dtype] = {
    "env": np.dtype(np.int32),  # index of the environment within a batch (0 for a single env)
    "episode": np.dtype(np.int64),  # episode index of that environment, from 0
    "t": np.dtype(np.int32),  # step within the episode, from 0 (reset events have t = 0)
    "seq": np.dtype(np.int32),  # order within (env, episode), from 0
    "event_type": np.dtype(np.int8),  # index into EVENT_TYPES
    "agent": np.dtype(np.int16),  # actor index
    "target": np.dtype(np.int16),  # victim / partner index, NULL otherwise
    "x": np.dtype(np.int16),
    "y": np.dtype(np.int16),
    "target_x": np.dtype(np.int16),
    "target_y": np.dtype(np.int16),
    "direction": np.dtype(np.int8),  # 0 up, 1 right, 2 down, 3 left
    "apple_context": np.dtype(np.int8),  # ZAP_HIT: 0/1, NULL otherwise
    "spawn_cause": np.dtype(np.int8),  # SPAWN: index into SPAWN_CAUSES, NULL otherwise
}


def agent_name(i: int) -> str:
    return f"agent_{i}"


@dataclass
class EventBatch:
    """Equal-length numpy columns, one row per event, ordered by (env, seq)."""

    env: np.ndarray
    episode: np.ndarray
    t: np.ndarray
    seq: np.ndarray
    event_type: np.ndarray
    agent: np.ndarray
    target: np.ndarray
    x: np.ndarray
    y: np.ndarray
    target_x: np.ndarray
    target_y: np.ndarray
    direction: np.ndarray
    apple_context: np.ndarray
    spawn_cause: np.ndarray

    def __len__(self) -> int:
        return len(self.env)

    @classmethod
    def empty(cls, n: int = 0) -> EventBatch:
        return cls(**{k: np.full(n, NULL, dtype=d) for k, d in EVENT_COLUMNS.items()})

    @classmethod
    def concat(cls, batches: list[EventBatch]) -> EventBatch:
        if not batches:
            return cls.empty()
        return cls(**{k: np.concatenate([getattr(b, k) for b in batches]) for k in EVENT_COLUMNS})

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def take(self, idx: np.ndarray) -> EventBatch:
        return EventBatch(**{k: v[idx] for k, v in self.columns().items()})

    def to_dicts(self) -> list[dict]:
        """Rows as dicts with docs/DESIGN.md's names and None for nulls (the ParallelEnv's infos form)."""
        out = []
        for i in range(len(self)):
            et = int(self.event_type[i])
            tgt = int(self.target[i])
            out.append(
                {
                    "episode": int(self.episode[i]),
                    "t": int(self.t[i]),
                    "seq": int(self.seq[i]),
                    "event_type": EVENT_TYPES[et],
                    "agent": agent_name(int(self.agent[i])),
                    "target": agent_name(tgt) if tgt != NULL else None,
                    "x": int(self.x[i]),
                    "y": int(self.y[i]),
                    "target_x": int(self.target_x[i]) if tgt != NULL else None,
                    "target_y": int(self.target_y[i]) if tgt != NULL else None,
                    "direction": int(self.direction[i]),
                    "apple_context": bool(self.apple_context[i]) if et == ZAP_HIT else None,
                    "spawn_cause": SPAWN_CAUSES[int(self.spawn_cause[i])] if et == SPAWN else None,
                }
            )
        return out
