"""Writing the lake: append-only, hive-partitioned, immutable Parquet part files.

Layout (docs/DESIGN.md)::

    <lake>/runs/run_id=<id>/run.json
    <lake>/events/run_id=<id>/part-<n>.parquet
    <lake>/episodes/run_id=<id>/part-<n>.parquet
    <lake>/actions/run_id=<id>/part-<n>.parquet         (every step's joint action: pipelines.replay)
    <lake>/<table>/run_id=<id>/part-<n>.parquet        (write_table: tvt_transports, ...)

``lake`` is a directory or ``s3://bucket/prefix`` (``pipelines.storage``). In a directory every
file is written under a temporary name that the ``*.parquet`` glob does not match
(``.part-<n>.parquet.tmp-<pid>``), flushed, fsynced and atomically renamed; on object storage it
is one PUT (visible whole or not at all). So a reader never sees a torn file and a killed writer
loses at most its unflushed buffer. Part numbers continue after the highest one present (by
listing), so a resumed or repeated run appends and never overwrites.

``LakeWriter(lake, run_id, meta)`` buffers events (an ``EventBatch`` plus ``global_step`` per row),
action rows and episode rows, and flushes every ``flush_events`` events or ``flush_episodes`` episodes, never
per event; ``set_status`` rewrites run.json atomically (``running`` -> ``finished`` |
``interrupted``); ``close(status)`` flushes and sets the status.
"""

from __future__ import annotations

import functools
import json
import platform
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from karmic.events import EVENT_TYPES, NULL, SPAWN, SPAWN_CAUSES, ZAP_HIT, EventBatch
from pipelines import commits, storage
from pipelines.schema import ACTIONS_SCHEMA, EPISODES_SCHEMA, EVENTS_SCHEMA
from pipelines.storage import LakePath

PART_RE = re.compile(r"^part-(\d+)\.parquet$")
COMPRESSION = "zstd"
_TYPE_DICT = pa.array(EVENT_TYPES, pa.string())
_CAUSE_DICT = pa.array(SPAWN_CAUSES, pa.string())


class InterruptFlag:
    """Set by SIGINT inside :func:`deferred_interrupt`; ``check()`` raises at a safe point."""

    def __init__(self) -> None:
        self.set = False

    def check(self) -> None:
        if self.set:
            raise KeyboardInterrupt


@contextmanager
def deferred_interrupt() -> Iterator[InterruptFlag]:
    """Turn Ctrl-C into a flag the loop checks between steps.

    A KeyboardInterrupt raised at an arbitrary bytecode can land between "episode rows buffered"
    and "episode counted", or inside a flush, and leave run.json disagreeing with the files.
    Here the loop raises it itself, at a step boundary, so what was written and what was counted
    always agree. A second Ctrl-C interrupts at once. Outside the main thread this is a no-op flag.
    """
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.set:
            raise KeyboardInterrupt
        flag.set = True

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# distributions whose version can change what a run produces (the env kernels, the lake, plots);
# read from the installed metadata, so nothing is imported for it
RECORDED_DISTRIBUTIONS = ("numba", "llvmlite", "polars", "pettingzoo", "gymnasium", "matplotlib")


def versions() -> dict[str, str]:
    """What a run was made with: the packages that can change its output, the code's git commit
    (``commit``, with ``-dirty`` for uncommitted changes; absent outside a git checkout, e.g. an
    installed wheel) and the CPU (``cpu``: kernels may take other paths on another instruction
    set). ``karmic study reproduce`` prints them beside the ones it runs under."""
    from importlib.metadata import PackageNotFoundError, version

    import duckdb

    import karmic

    out = {
        "karmic": karmic.__version__, "python": platform.python_version(),
        "numpy": np.__version__, "pyarrow": pa.__version__, "duckdb": duckdb.__version__,
    }
    for name in RECORDED_DISTRIBUTIONS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    out.update(_code_and_cpu())
    return out


@functools.cache
def _code_and_cpu() -> dict[str, str]:
    import subprocess

    import karmic

    out = {}
    src = Path(karmic.__file__).resolve().parent.parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        # only the checkout karmic was imported from (not a repo that happens to hold site-packages)
        if Path(git("rev-parse", "--show-toplevel")).resolve() == src:
            dirty = git("status", "--porcelain", "--untracked-files=no", "--", "karmic", "pipelines", "queries")
            out["commit"] = git("rev-parse", "--short=12", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if "cpu" not in out and platform.processor():
        out["cpu"] = platform.processor()
    return out


# --- atomic files (pipelines.storage: local rename, or one PUT on object storage) -------------
def write_parquet_atomic(table: pa.Table, path: LakePath, compression: str = COMPRESSION) -> LakePath:
    """Write ``table`` to ``path`` atomically: via a temporary name, fsync and rename (local),
    or as one PUT (object storage)."""
    return storage.write_atomic(path, lambda f: pq.write_table(table, f, compression=compression))


def write_json_atomic(obj: Any, path: LakePath) -> LakePath:
    data = json.dumps(obj, indent=1, default=str).encode()
    return storage.write_atomic(path, lambda f: f.write(data))


def partition(lake: Path | str, table: str, run_id: str) -> LakePath:
    return storage.resolve(lake) / table / f"run_id={run_id}"


def next_part(d: LakePath) -> int:
    entries = d.iterdir() if storage.is_remote(d) or d.is_dir() else []  # remote: one LIST
    nums = [int(m.group(1)) for p in entries if (m := PART_RE.match(p.name))]
    return max(nums) + 1 if nums else 0


def keyed_name(kind: str, key: int) -> str:
    """The name of the part holding exactly one ``kind`` (round, update, episode) of a run."""
    return f"{kind}-{int(key):06d}.parquet"


def write_table_once(lake: Path | str, table_name: str, run_id: str, table: pa.Table, kind: str,
                     key: int) -> bool:
    """Write ``table`` as ``<lake>/<table_name>/run_id=<run_id>/<kind>-<key>.parquet`` unless that
    part exists (``pipelines.storage.write_keyed``): what a run writes per round or per update goes
    through here, so a resumed run that produces a round or an update again does not add it
    twice. Returns whether it wrote."""
    path = partition(lake, table_name, run_id) / keyed_name(kind, key)
    wrote = storage.write_keyed(path, lambda f: pq.write_table(table, f, compression=COMPRESSION))
    # committed even if it was there: a kill may have come between the part and its marker
    commits.commit(lake, table_name, commits.record_of(run_id, path.name, table))
    return wrote


def written_through(lake: Path | str, table_name: str, run_id: str) -> int:
    """The highest episode in a run's ``table_name`` parts, -1 if none (what a resumed writer
    skips: a deterministic re-run produces those rows again)."""
    import pyarrow.compute as pc

    d = partition(lake, table_name, run_id)
    files = sorted(d.glob("*.parquet")) if storage.is_remote(d) or d.is_dir() else []
    best = -1
    for f in files:
        col = storage.read_parquet(f, columns=["episode"]).column("episode")
        if len(col):
            best = max(best, int(pc.max(col).as_py()))
    return best


def write_table(lake: Path | str, table_name: str, run_id: str, table: pa.Table) -> LakePath:
    """Append ``table`` as the next part file of ``<lake>/<table_name>/run_id=<run_id>/``
    (never overwriting one: on object storage the PUT is conditional, see pipelines.storage)."""
    d = partition(lake, table_name, run_id)
    path = storage.write_new_part(d, lambda n: f"part-{n:06d}.parquet", next_part(d),
                                  lambda f: pq.write_table(table, f, compression=COMPRESSION))
    commits.commit(lake, table_name, commits.record_of(run_id, path.name, table))
    return path


# --- events and episodes as Arrow ------------------------------------------------------------
def _agent_names(idx: np.ndarray, n: int) -> pa.Array:
    names = pa.array([f"agent_{i}" for i in range(max(n, 1))], pa.string())
    null = idx == NULL
    ind = pa.array(np.where(null, 0, idx).astype(np.int32), mask=null)
    return pa.DictionaryArray.from_arrays(ind, names).cast(pa.string())


def events_table(run_id: str, ev: EventBatch, global_step: np.ndarray) -> pa.Table:
    """An EventBatch (codes) as docs/DESIGN.md's events table (strings, nulls)."""
    n = len(ev)
    n_agents = int(max(ev.agent.max(initial=0), ev.target.max(initial=0))) + 1
    is_hit = ev.event_type == ZAP_HIT
    is_spawn = ev.event_type == SPAWN
    no_target = ev.target == NULL
    run = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([run_id]))
    etype = pa.DictionaryArray.from_arrays(pa.array(ev.event_type.astype(np.int32)), _TYPE_DICT)
    cause = pa.DictionaryArray.from_arrays(
        pa.array(np.where(is_spawn, ev.spawn_cause, 0).astype(np.int32), mask=~is_spawn), _CAUSE_DICT
    )
    cols = [
        run.cast(pa.string()),
        pa.array(ev.episode.astype(np.int64)),
        pa.array(ev.t.astype(np.int32)),
        pa.array(np.asarray(global_step, np.int64)),
        pa.array(ev.seq.astype(np.int32)),
        etype.cast(pa.string()),
        _agent_names(ev.agent, n_agents),
        _agent_names(ev.target, n_agents),
        pa.array(ev.x.astype(np.int16)),
        pa.array(ev.y.astype(np.int16)),
        pa.array(ev.target_x.astype(np.int16), mask=no_target),
        pa.array(ev.target_y.astype(np.int16), mask=no_target),
        pa.array(ev.direction.astype(np.int8)),
        pa.array(ev.apple_context == 1, mask=~is_hit),
        cause.cast(pa.string()),
    ]
    return pa.Table.from_arrays(cols, schema=EVENTS_SCHEMA)


def episodes_table(run_id: str, episode: np.ndarray, global_step: np.ndarray, stats: dict,
                   condition: str, grid_size: int, seed: int) -> pa.Table:
    """Rows for E episodes x N agents: ``stats`` maps each docs/DESIGN.md column to (E, N) arrays."""
    ret = np.asarray(stats["return"], np.float64)
    E, N = ret.shape
    rows = E * N

    def col(name: str, dtype) -> pa.Array:
        if name not in stats:  # a count the stats do not have (encounters of a stand-in env): null
            return pa.nulls(rows, pa.from_numpy_dtype(dtype))
        return pa.array(np.asarray(stats[name]).reshape(rows).astype(dtype))

    return pa.Table.from_arrays(
        [
            pa.array([run_id] * rows, pa.string()),
            pa.array(np.repeat(np.asarray(episode, np.int64), N)),
            pa.array(np.repeat(np.asarray(global_step, np.int64), N)),
            pa.array([f"agent_{i}" for i in range(N)] * E, pa.string()),
            col("steps", np.int32), pa.array(ret.reshape(rows)), col("apples", np.int32),
            col("zaps_fired", np.int32), col("zaps_hit", np.int32), col("times_hit", np.int32),
            col("frozen_steps", np.int32),
            pa.array([condition] * rows, pa.string()),
            pa.array(np.full(rows, grid_size, np.int32)),
            pa.array(np.full(rows, seed, np.int64)),
            col("encounters", np.int32),
        ],
        schema=EPISODES_SCHEMA,
    )


def actions_table(run_id: str, episode: np.ndarray, global_step: np.ndarray, actions: np.ndarray,
                  reset_rng: np.ndarray, pairs: list[list[tuple[int, int]]],
                  end_digest: np.ndarray) -> pa.Table:
    """Rows for E episodes x N agents of ``actions`` (E, T, N): each agent's T actions as one list,
    with the episode's reset RNG state, rigged pairs and final-state digest on each of its rows."""
    E, T, N = actions.shape
    rows = E * N
    # (E, T, N) -> (E, N, T): each row's sequence contiguous, so the list column is a view of it
    values = pa.array(np.ascontiguousarray(actions.transpose(0, 2, 1), dtype=np.int8).reshape(-1))
    acts = pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * T), values)
    flat = [np.asarray(p, np.int16).reshape(-1) for p in pairs]
    poff = np.zeros(E * N + 1, np.int32)
    poff[1:] = np.cumsum(np.repeat([len(f) for f in flat], N))
    pvals = np.concatenate([np.tile(f, N) for f in flat]) if rows else np.zeros(0, np.int16)
    return pa.Table.from_arrays(
        [
            pa.array([run_id] * rows, pa.string()),
            pa.array(np.repeat(np.asarray(episode, np.int64), N)),
            pa.array(np.repeat(np.asarray(global_step, np.int64), N)),
            pa.array([f"agent_{i}" for i in range(N)] * E, pa.string()),
            pa.array(np.full(rows, T, np.int32)),
            acts,
            pa.array(np.repeat(np.asarray(reset_rng, np.uint64), N)),
            pa.ListArray.from_arrays(pa.array(poff), pa.array(pvals.astype(np.int16), pa.int16())),
            pa.array(np.repeat(np.asarray(end_digest, np.int64), N)),
        ],
        schema=ACTIONS_SCHEMA,
    )


# --- the writer ----------------------------------------------------------------------------------
class LakeWriter:
    """Buffered, append-only writer of one run's events, episodes and run.json."""

    def __init__(self, lake: Path | str, run_id: str, meta: dict[str, Any] | None = None,
                 flush_events: int = 500_000, flush_episodes: int = 50):
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", run_id):
            raise ValueError(f"invalid run_id {run_id!r}: use letters, digits, '_', '-', '.'")
        self.lake = storage.resolve(lake)
        self.run_id = run_id
        self.flush_events = flush_events
        self.flush_episodes = flush_episodes
        self._ev: list[tuple[EventBatch, np.ndarray]] = []
        self._n_ev = 0
        self._ep: list[pa.Table] = []
        self._n_ep = 0
        self._act: list[pa.Table] = []
        self.events_written = 0
        self.meta: dict[str, Any] = {}
        run_json = self.run_json_path
        if run_json.is_file():
            self.meta = json.loads(run_json.read_text())
        self._disk_status = self.meta.get("status")
        if meta is not None:
            self.meta = {**self.meta, **meta, "run_id": run_id}
            self.meta.setdefault("started_at", now_iso())
            self.meta.setdefault("versions", versions())
            self.set_status(self.meta.get("status", "running"))

    @property
    def run_json_path(self) -> LakePath:
        return partition(self.lake, "runs", self.run_id) / "run.json"

    def set_status(self, status: str, **extra: Any) -> None:
        self.meta["status"] = status
        if status in ("finished", "completed", "interrupted", "failed"):
            self.meta["finished_at"] = now_iso()
        self.meta.update(extra)
        if self._disk_status == "completed":  # a finished run reopened: compacted rows of it go stale
            commits.mark_reopened(self.lake, self.run_id)
        write_json_atomic(self.meta, self.run_json_path)
        self._disk_status = status

    def write_events(self, batch: EventBatch, global_step: np.ndarray) -> None:
        if len(batch):
            self._ev.append((batch, np.asarray(global_step, np.int64)))
            self._n_ev += len(batch)
        if self._n_ev >= self.flush_events:
            self._flush_events()

    def write_episodes(self, table: pa.Table) -> None:
        self._ep.append(table)
        self._n_ep += 1
        if self._n_ep >= self.flush_episodes:
            self.flush()

    def write_actions(self, table: pa.Table) -> None:
        """Buffer action rows (``actions_table``); they are flushed with the episode rows."""
        self._act.append(table)

    def _flush_events(self) -> None:
        if not self._ev:
            return
        batch = EventBatch.concat([b for b, _ in self._ev])
        gs = np.concatenate([g for _, g in self._ev])
        write_table(self.lake, "events", self.run_id, events_table(self.run_id, batch, gs))
        self.events_written += len(batch)
        self._ev, self._n_ev = [], 0

    def flush(self) -> None:
        """Write what is buffered: events first, then the actions that produced them, then the
        episode rows that summarise them."""
        self._flush_events()
        if self._act:
            write_table(self.lake, "actions", self.run_id, pa.concat_tables(self._act))
            self._act = []
        if self._ep:
            write_table(self.lake, "episodes", self.run_id, pa.concat_tables(self._ep))
            self._ep, self._n_ep = [], 0

    def close(self, status: str = "completed", **extra: Any) -> None:
        self.flush()
        self.set_status(status, **extra)
