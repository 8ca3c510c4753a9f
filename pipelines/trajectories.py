"""Trajectory shards: the rollouts the learner replays from the lake.

Layout: ``<lake>/trajectories/run_id=<id>/shard-<update:06d>.parquet``, one shard per PPO update
(one rollout of ``T`` steps on ``B`` envs x ``N`` agents = ``S = B*N`` slots). A shard is cut into
sequences of ``L`` steps (``T % L == 0``); **one row per (sequence k, slot s)**, rows ordered by
``(k, s)``, so a minibatch of whole sequences is a set of rows. Columns:

| column | type | meaning |
|---|---|---|
| update | int32 | PPO update that produced the shard |
| chunk | int32 | sequence index k within the rollout (steps ``k*L .. k*L+L-1``) |
| slot | int32 | ``b * N + n`` |
| env, agent | int32, int16 | environment b, agent index n |
| episode | int64 | run episode number at the sequence's first step (``round * B + b``) |
| t0 | int32 | step within that episode at the sequence's first step |
| global_step | int64 | env steps of the run before the sequence's first step |
| obs | fixed_size_binary[L*V*V*C] | egocentric observations, uint8, C order (L, V, V, C) |
| action | fixed_size_list<int8>[L] | actions taken |
| reward | fixed_size_list<float32>[L] | env rewards (before any TVT transport) |
| start | fixed_size_list<uint8>[L] | 1 where the step is the first of an episode (state reset) |
| logprob, value | fixed_size_list<float32>[L] | behaviour policy's log-prob and value |
| h0, c0 | fixed_size_list<float32>[H] | LSTM state before the sequence's first step (before reset) |
| next_value | float32 | value of the observation after the sequence's last step |
| next_start | uint8 | 1 if that observation starts a new episode |

Schema metadata ``karmic`` (JSON): ``schema_version, run_id, update, seq_len, num_steps,
num_envs, n_agents, obs_shape, hidden``.

Writing follows the lake rule (``pipelines.storage``): a temporary name the ``*.parquet`` glob
does not match, flush, fsync, ``os.replace``; on an ``s3://`` lake one PUT. Retention (:func:`prune_shards`) keeps the last ``keep`` shards so the
learner (and TVT, which links a punishment to a crime in an earlier episode) can replay them;
``--keep-trajectories`` keeps all.

Replay API (used by the learner and by ``karmic.tvt``):
- :func:`write_shard(lake, shard) -> Path`
- :func:`read_shard(path) -> TrajectoryShard` (arrays shaped ``(rows, L, ...)``)
- :func:`list_shards(lake, run_id) -> list[Path]` (oldest first), :func:`recent_shards(lake,
  run_id, k)`; :func:`prune_shards(lake, run_id, keep)`.
- ``TrajectoryShard.time_major(name) -> (T, S, ...)`` and ``from_time_major`` convert between
  the row layout and the rollout layout (step t, slot s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.storage import LakePath

SCHEMA_VERSION = 1
TABLE = "trajectories"

# name -> (numpy dtype, arrow value type); per-step columns are fixed-size lists of length L
STEP_COLUMNS: dict[str, tuple[np.dtype, pa.DataType]] = {
    "action": (np.dtype(np.int8), pa.int8()),
    "reward": (np.dtype(np.float32), pa.float32()),
    "start": (np.dtype(np.uint8), pa.uint8()),
    "logprob": (np.dtype(np.float32), pa.float32()),
    "value": (np.dtype(np.float32), pa.float32()),
}
ROW_COLUMNS: dict[str, tuple[np.dtype, pa.DataType]] = {
    "update": (np.dtype(np.int32), pa.int32()),
    "chunk": (np.dtype(np.int32), pa.int32()),
    "slot": (np.dtype(np.int32), pa.int32()),
    "env": (np.dtype(np.int32), pa.int32()),
    "agent": (np.dtype(np.int16), pa.int16()),
    "episode": (np.dtype(np.int64), pa.int64()),
    "t0": (np.dtype(np.int32), pa.int32()),
    "global_step": (np.dtype(np.int64), pa.int64()),
    "next_value": (np.dtype(np.float32), pa.float32()),
    "next_start": (np.dtype(np.uint8), pa.uint8()),
}


@dataclass
class TrajectoryShard:
    """One rollout in row layout: every array has leading dimension ``rows = (T/L) * S``."""

    run_id: str
    update: int
    seq_len: int
    num_envs: int
    n_agents: int
    obs: np.ndarray  # (rows, L, V, V, C) uint8
    h0: np.ndarray  # (rows, H) float32
    c0: np.ndarray  # (rows, H) float32
    steps: dict[str, np.ndarray] = field(default_factory=dict)  # STEP_COLUMNS: (rows, L)
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # ROW_COLUMNS: (rows,)
    # optional per-step columns of any shape (rows, L, ...), e.g. TVT's memory words and tags;
    # stored as fixed-size lists, their dtype and per-step shape in the metadata
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.obs.shape[0])

    @property
    def slots(self) -> int:
        return self.num_envs * self.n_agents

    @property
    def num_steps(self) -> int:
        return self.n_rows // self.slots * self.seq_len

    def __getattr__(self, name: str) -> np.ndarray:
        # shard.reward, shard.episode ... read through to the column dicts
        for d in ("steps", "rows"):
            cols = self.__dict__.get(d, {})
            if name in cols:
                return cols[name]
        raise AttributeError(name)

    def time_major(self, x: np.ndarray) -> np.ndarray:
        """(rows, L, ...) ordered by (chunk, slot) -> (T, S, ...)."""
        k = self.n_rows // self.slots
        y = x.reshape(k, self.slots, self.seq_len, *x.shape[2:])
        return np.swapaxes(y, 1, 2).reshape(k * self.seq_len, self.slots, *x.shape[2:])

    def from_time_major(self, x: np.ndarray) -> np.ndarray:
        """(T, S, ...) -> (rows, L, ...) ordered by (chunk, slot)."""
        k = x.shape[0] // self.seq_len
        y = x.reshape(k, self.seq_len, self.slots, *x.shape[2:])
        return np.swapaxes(y, 1, 2).reshape(k * self.slots, self.seq_len, *x.shape[2:])


def shard_dir(lake: Path | str, run_id: str) -> LakePath:
    return storage.resolve(lake) / TABLE / f"run_id={run_id}"


def shard_path(lake: Path | str, run_id: str, update: int) -> LakePath:
    return shard_dir(lake, run_id) / f"shard-{update:06d}.parquet"


def _fixed_list(a: np.ndarray, typ: pa.DataType) -> pa.Array:
    n = a.shape[0]
    width = int(np.prod(a.shape[1:])) if a.ndim > 1 else 1
    flat = pa.array(np.ascontiguousarray(a).reshape(-1), type=typ)
    return pa.FixedSizeListArray.from_arrays(flat, width) if n else flat


def to_table(shard: TrajectoryShard) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    for name, (dt, typ) in ROW_COLUMNS.items():
        cols[name] = pa.array(shard.rows[name].astype(dt, copy=False), type=typ)
    # one binary value per row: Parquet writes it without per-element repetition levels
    obs = np.ascontiguousarray(shard.obs, dtype=np.uint8)
    width = int(np.prod(obs.shape[1:]))
    cols["obs"] = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), obs.shape[0], [None, pa.py_buffer(obs.reshape(-1))]
    )
    for name, (dt, typ) in STEP_COLUMNS.items():
        cols[name] = _fixed_list(shard.steps[name].astype(dt, copy=False), typ)
    for name, a in shard.extra.items():
        cols[name] = _fixed_list(a, pa.from_numpy_dtype(a.dtype))
    cols["h0"] = _fixed_list(shard.h0.astype(np.float32, copy=False), pa.float32())
    cols["c0"] = _fixed_list(shard.c0.astype(np.float32, copy=False), pa.float32())
    meta = {
        "schema_version": SCHEMA_VERSION,
        "run_id": shard.run_id,
        "update": shard.update,
        "seq_len": shard.seq_len,
        "num_steps": shard.num_steps,
        "num_envs": shard.num_envs,
        "n_agents": shard.n_agents,
        "obs_shape": list(shard.obs.shape[2:]),
        "hidden": int(shard.h0.shape[1]),
        "extra": {k: [str(a.dtype), list(a.shape[2:])] for k, a in shard.extra.items()},
    }
    return pa.table(cols).replace_schema_metadata({"karmic": json.dumps(meta)})


def write_table_atomic(table: pa.Table, path: LakePath) -> LakePath:
    """Write atomically (pipelines.storage): a name the *.parquet glob ignores, fsync, rename;
    one PUT on object storage."""
    # uncompressed: observations are small uint8 grids and the round trip is on the hot path
    return storage.write_atomic(path, lambda f: pq.write_table(
        table, f, compression="none", use_dictionary=False, write_statistics=False))


def write_bytes_atomic(data: bytes, path: LakePath) -> LakePath:
    return storage.write_bytes(path, data)


def write_shard(lake: Path | str, shard: TrajectoryShard) -> Path:
    return write_table_atomic(to_table(shard), shard_path(lake, shard.run_id, shard.update))


def _values(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    # a writable copy: torch.from_numpy wants writable memory
    return np.array(arr.flatten().to_numpy(zero_copy_only=False))


def _binary_values(col: pa.ChunkedArray) -> np.ndarray:
    arr = col.combine_chunks()
    data = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
    width = arr.type.byte_width
    return data[arr.offset * width : (arr.offset + len(arr)) * width].copy()


def read_shard(path: LakePath | str) -> TrajectoryShard:
    table = storage.read_parquet(path)
    meta_raw = (table.schema.metadata or {}).get(b"karmic")
    if meta_raw is None:
        raise ValueError(f"{path}: not a karmic trajectory shard (no karmic metadata)")
    meta = json.loads(meta_raw)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: trajectory schema version {meta.get('schema_version')}")
    n = table.num_rows
    L = int(meta["seq_len"])
    obs_shape = tuple(meta["obs_shape"])
    hidden = int(meta["hidden"])
    rows = {k: table.column(k).to_numpy() for k in ROW_COLUMNS}
    steps = {k: _values(table.column(k)).reshape(n, L) for k in STEP_COLUMNS}
    extra = {k: _values(table.column(k)).astype(dt, copy=False).reshape(n, L, *shape)
             for k, (dt, shape) in meta.get("extra", {}).items()}
    return TrajectoryShard(
        run_id=meta["run_id"],
        update=int(meta["update"]),
        seq_len=L,
        num_envs=int(meta["num_envs"]),
        n_agents=int(meta["n_agents"]),
        obs=_binary_values(table.column("obs")).reshape(n, L, *obs_shape),
        h0=_values(table.column("h0")).reshape(n, hidden),
        c0=_values(table.column("c0")).reshape(n, hidden),
        steps=steps,
        rows=rows,
        extra=extra,
    )


def list_shards(lake: Path | str, run_id: str) -> list[LakePath]:
    """Shards of a run, oldest first (names sort by update)."""
    d = shard_dir(lake, run_id)
    return sorted(d.glob("shard-*.parquet")) if storage.is_remote(d) or d.is_dir() else []


def recent_shards(lake: Path | str, run_id: str, k: int) -> list[LakePath]:
    return list_shards(lake, run_id)[-k:] if k > 0 else []


def shard_update(path: Path | str) -> int:
    """The update number in a shard's file name."""
    return int(Path(str(path)).stem.split("-")[1])


def prune_shards(lake: Path | str, run_id: str, keep: int, upto: int | None = None,
                 keep_from: int | None = None) -> list[LakePath]:
    """Remove all but the last ``keep`` shards (of those with update <= ``upto``, if given:
    a resumed run may find newer shards left by the interrupted one, rewritten as it goes on),
    never one with update >= ``keep_from`` (what a resume from the last checkpoint reads);
    returns the removed paths."""
    shards = list_shards(lake, run_id)
    if upto is not None:
        shards = [p for p in shards if shard_update(p) <= upto]
    old = shards[: max(0, len(shards) - max(keep, 0))]
    if keep_from is not None:
        old = [p for p in old if shard_update(p) < keep_from]
    for p in old:
        p.unlink(missing_ok=True)
    return old


# --- TVT: the memory bank and the transports log ---------------------------------------------------
def load_bank(lake: LakePath | str, run_id: str, before_update: int, need: int, slots: int, word: int):
    """The stored memory words of the last ``need`` shards before ``before_update`` (TVT's memory
    rebuilt on resume): ``karmic.tvt.harvest.memory_bank`` over those shards."""
    from karmic.tvt.harvest import memory_bank

    paths = [p for p in list_shards(lake, run_id) if shard_update(p) < before_update][-need:]
    want = list(range(max(0, before_update - need), before_update))
    have = [shard_update(p) for p in paths]
    if have != want:
        gone = sorted(set(want) - set(have))
        raise ValueError(
            f"cannot resume run {run_id} at update {before_update}: its TVT memory is the words of "
            f"shards {want[0]}-{want[-1]}, and shard {', '.join(map(str, gone))} is not in the lake "
            "(pruned or lost); start the run anew")
    return memory_bank([read_shard(p) for p in paths], slots, word)


def transports_table(shard, parts, max_steps: int) -> pa.Table:
    """The lake's ``tvt_transports`` rows of one shard's transports (``TransportResult.parts``:
    (slot, Transports, mode)); stream times become (episode, t) as in ``karmic.tvt.harvest``."""
    from pipelines.schema import TVT_TRANSPORTS_SCHEMA

    B, N = shard.num_envs, shard.n_agents
    src, tgt, amt, head, slot, mode = [], [], [], [], [], []
    for s, tr, m in parts:
        src.append(tr.source), tgt.append(tr.target), amt.append(tr.amount), head.append(tr.head)
        slot.append(np.full(len(tr), s)), mode.append(np.full(len(tr), m))
    src, tgt, amt, head, slot, mode = (np.concatenate(a) for a in (src, tgt, amt, head, slot, mode))
    b, n = slot // N, slot % N
    return pa.table({
        "run_id": pa.array([shard.run_id] * len(src), pa.string()),
        "update": pa.array(np.full(len(src), shard.update, np.int32)),
        "agent": pa.array([f"agent_{i}" for i in n], pa.string()),
        "source_episode": pa.array((src // max_steps) * B + b, pa.int64()),
        "source_t": pa.array(src % max_steps, pa.int32()),
        "target_episode": pa.array((tgt // max_steps) * B + b, pa.int64()),
        "target_t": pa.array(tgt % max_steps, pa.int32()),
        "amount": pa.array(amt, pa.float64()),
        "mode": pa.array(mode.astype(str), pa.string()),
        "head": pa.array(head, pa.int16()),
    }, schema=TVT_TRANSPORTS_SCHEMA)


def transports_by_update(rows: pa.Table, num_envs: int, n_agents: int, max_steps: int) -> dict[int, list]:
    """The inverse of :func:`transports_table`: ``tvt_transports`` rows (one run's) -> update ->
    [(slot, Transports)], slots ascending, each slot's rows in the table's order. Episodes and
    steps go back to stream times (``episode // num_envs * max_steps + t``) and the slot to
    ``(episode % num_envs) * n_agents + agent``."""
    from karmic.tvt.transport import Transports

    if not len(rows):
        return {}
    upd = rows.column("update").to_numpy().astype(np.int64)
    agent = np.array([int(a.removeprefix("agent_")) for a in rows.column("agent").to_pylist()], np.int64)
    s_ep, t_ep = (rows.column(c).to_numpy().astype(np.int64) for c in ("source_episode", "target_episode"))
    s_t, t_t = (rows.column(c).to_numpy().astype(np.int64) for c in ("source_t", "target_t"))
    if (s_ep % num_envs != t_ep % num_envs).any():
        raise ValueError("a transport crosses streams (its source and target lie in different envs)")
    slot = (s_ep % num_envs) * n_agents + agent
    src = s_ep // num_envs * max_steps + s_t
    tgt = t_ep // num_envs * max_steps + t_t
    amount = rows.column("amount").to_numpy().astype(np.float64)
    head = rows.column("head").to_numpy().astype(np.int16)
    out: dict[int, list] = {}
    for u in np.unique(upd).tolist():
        in_u = upd == u
        parts = []
        for s in np.unique(slot[in_u]).tolist():
            m = in_u & (slot == s)
            parts.append((int(s), Transports(src[m], tgt[m], amount[m], head[m])))
        out[int(u)] = parts
    return out
