"""``karmic lake compact``: the committed parts of finished runs rewritten into a few large Parquet
files, recorded in the commit log so readers bind and scan a handful of files instead of one per
run and round (docs/lake.md, "Compaction").

For each table with a commit log (``pipelines.commits``), the markers in its listing whose run
is finished (``run.json`` status ``completed``) are grouped by schema and cut, at run boundaries,
into files of about ``target_rows`` rows: ``<lake>/<table>/_compacted/<cid>.parquet``, ordered by
``run_id``, the table's key column (``episode`` or ``update``), then the part and the row within
it, in row groups of ``ROW_GROUP_ROWS`` rows, ``run_id`` a real column. ``<cid>`` is a hash of the
covered marker names, so a compaction redone after a kill writes the same file under the same
name. Each file is committed by the protocol described in ``pipelines.commits``:

1. the file, written atomically (``pipelines.storage.write_atomic``: local rename, or one PUT);
2. its record ``_log/<table>/_compacted/<cid>.json`` (rows, key range, schema id, covered markers),
   written atomically: the commit point;
3. the covered markers moved to ``_log/<table>/_covered/<cid>/`` (kept, never deleted);
4. the done marker ``_log/<table>/_compacted/<cid>~<rows>~<lo>~<hi>~<schema>``.

A kill before 2 leaves a file nobody reads (redone under the same name next time); after 2,
readers read the record and ignore the covered markers still listed; ``compact`` again finishes
3 and 4. Parts of runs that are not finished (running, killed, interrupted) are never compacted:
their resume relies on their part names and markers. The part files themselves stay where they
are, so per-run readers (replay, a writer's resume, ``karmic lake check``) see the lake as before.

The ``runs`` view's rows of finished runs are written once into ``<lake>/runs/_compacted/<cid>.parquet``
(with each run's folder name), committed by the marker ``_log/runs/_compacted/<cid>~<rows>~~~<schema>``
after the file: the reader takes them in one read and reads the ``run.json`` of the other runs only.

One compaction at a time per lake: ``_log/_compact.lock`` (created exclusively; a lock of a dead
process on this host is taken over).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines import commits, faults, storage
from pipelines.storage import LakePath

TABLES = ("events", "episodes", "actions", "tvt_transports", "eval_agents")  # karmic.lake.TABLE_VIEWS
TARGET_ROWS = 4_000_000
ROW_GROUP_ROWS = 128 * 1024
COMPRESSION = "zstd"
LOCK = "_compact.lock"
FINISHED = "completed"


class CompactError(ValueError):
    """A user-facing compaction problem: one line."""


@dataclass
class TableResult:
    table: str
    files: int = 0
    parts: int = 0
    rows: int = 0
    finished: int = 0  # compactions a killed earlier compaction left unfinished, finished now
    no_log: bool = False  # a table of a lake from before the commit log (karmic lake migrate)


# --- the lock -----------------------------------------------------------------------------------
@contextmanager
def _locked(root: LakePath) -> Iterator[None]:
    lock = root / commits.LOG / LOCK
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for attempt in (0, 1):
        try:
            storage.write_bytes(lock, json.dumps(me).encode(), exclusive=True)
            break
        except FileExistsError:
            try:
                held = json.loads(lock.read_bytes())
            except (OSError, ValueError):
                held = {}
            stale = held.get("host") == me["host"] and (
                held.get("pid") == me["pid"] or not storage._pid_alive(int(held.get("pid") or 0)))
            if attempt or not stale:
                raise CompactError(
                    f"another compaction holds {lock} (host {held.get('host')}, pid {held.get('pid')}, "
                    f"since {held.get('since')}); if that process is gone, delete the file and retry") from None
            lock.unlink(missing_ok=True)  # its holder died on this host
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


# --- which parts ---------------------------------------------------------------------------------
def finished_runs(root: LakePath) -> set[str]:
    """Run ids whose run.json says completed (read through the ``runs`` view's rows)."""
    from karmic.lake import _runs_table

    t = _runs_table(root)
    return {r for r, s in zip(t.column("run_id").to_pylist(), t.column("status").to_pylist(), strict=True)
            if s == FINISHED}


def _chunks(markers: list[commits.Commit], target: int) -> list[list[commits.Commit]]:
    """Cut (run id, part)-ordered markers at run boundaries into about equal files of at most
    about ``target`` rows (a run larger than that is one file)."""
    total = sum(c.rows for c in markers)
    n = max(1, -(-total // max(target, 1)))
    size = -(-total // n)
    out: list[list[commits.Commit]] = [[]]
    rows = 0
    for i, c in enumerate(markers):
        new_run = i > 0 and c.run_id != markers[i - 1].run_id
        if new_run and rows >= size:
            out.append([])
            rows = 0
        out[-1].append(c)
        rows += c.rows
    return [ch for ch in out if ch]


def _cid(markers: list[commits.Commit]) -> str:
    return "c-" + hashlib.sha1("\n".join(sorted(c.name for c in markers)).encode()).hexdigest()[:16]


# --- writing one compacted file ----------------------------------------------------------------
def _key_column(root: LakePath, table: str, first: commits.Commit) -> str | None:
    import pyarrow.parquet as pq

    p = first.path(root, table)
    names = (storage.read_parquet(p).schema if storage.is_remote(p) else pq.read_schema(p)).names
    return next((k for k in commits.KEY_COLUMNS if k in names), None)


def _write_file(root: LakePath, table: str, path: LakePath, markers: list[commits.Commit]) -> int:
    """The markers' parts as one Parquet file at ``path`` (atomic), ordered by run, key, part and
    row; returns the rows written."""
    import duckdb
    import pyarrow.parquet as pq

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    storage.register_duckdb(con, root)
    con.execute("set variable _files = ?", [[str(c.path(root, table)) for c in markers]])
    key = _key_column(root, table, markers[0])
    order = ", ".join(["run_id", *([f'"{key}"'] if key else []), "filename", "file_row_number"])
    rel = con.sql(
        "select * exclude (filename, file_row_number) "
        "replace (regexp_extract(filename, '/run_id=([^/]*)/[^/]*$', 1) as run_id) "
        "from read_parquet(getvariable('_files'), hive_partitioning = false, filename = true, "
        f"file_row_number = true) order by {order}")
    written = 0

    def write(f) -> None:
        nonlocal written
        reader = rel.to_arrow_reader(ROW_GROUP_ROWS)
        with pq.ParquetWriter(f, reader.schema, compression=COMPRESSION) as w:
            for batch in reader:
                w.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
                written += batch.num_rows

    storage.write_atomic(path, write)
    return written


def _schema_of(path: LakePath) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if storage.is_remote(path):
        schema = pq.read_schema(pa.BufferReader(path.read_bytes()))
    else:
        schema = pq.read_schema(path)
    return commits.schema_id(schema.remove_metadata())


def _move(root: LakePath, table: str, cid: str, names: list[str]) -> None:
    """Step 3: the covered markers out of the listing, into ``_covered/<cid>/`` (idempotent)."""
    src_dir, dst_dir = commits.log_dir(root, table), commits.covered_dir(root, table, cid)
    if storage.is_remote(root):
        listed = set(commits.names(root, table))
        for n in names:
            if n in listed:
                faults.point(f"compact.{table}.move")
                commits._touch(dst_dir / n)
                (src_dir / n).unlink(missing_ok=True)
        return
    dst_dir.mkdir(parents=True, exist_ok=True)
    for n in names:
        faults.point(f"compact.{table}.move")
        try:
            os.rename(src_dir / n, dst_dir / n)
        except FileNotFoundError:  # moved by an earlier, killed compaction
            pass
    storage._fsync_dir(dst_dir)
    storage._fsync_dir(src_dir)


def _finish(root: LakePath, table: str, c: commits.Compaction, covered: list[str]) -> None:
    _move(root, table, c.cid, covered)
    faults.point(f"compact.{table}.moved")
    commits._touch(commits.compaction_dir(root, table) / c.name)


def _compact_one(root: LakePath, table: str, markers: list[commits.Commit]) -> commits.Compaction:
    cid = _cid(markers)
    rows = sum(c.rows for c in markers)
    path = commits.Compaction(cid, 0, None, None, "").path(root, table)
    if not path.is_file():  # else written by a compaction killed before its record
        got = _write_file(root, table, path, markers)
        if got != rows:
            raise CompactError(f"{table}: the parts of {cid} hold {got} rows, their markers say {rows}; "
                               "run `karmic lake check`")
    faults.point(f"compact.{table}.written")
    los = [c.lo for c in markers if c.lo is not None]
    his = [c.hi for c in markers if c.hi is not None]
    comp = commits.Compaction(cid, rows, min(los) if los else None, max(his) if his else None, _schema_of(path))
    record = {"file": f"{table}/{commits.COMPACTED}/{cid}.parquet", "rows": comp.rows, "lo": comp.lo,
              "hi": comp.hi, "schema": comp.schema, "covered": [c.name for c in markers]}
    storage.write_bytes(commits.compaction_dir(root, table) / f"{cid}{commits.RECORD_SUFFIX}",
                        json.dumps(record, indent=0).encode())
    faults.point(f"compact.{table}.recorded")
    _finish(root, table, comp, record["covered"])
    return comp


def compact_table(root: LakePath, table: str, finished: set[str], target_rows: int = TARGET_ROWS) -> TableResult:
    res = TableResult(table)
    if not commits.is_ready(root, table):
        res.no_log = (root / table).is_dir()
        return res
    storage.remove_stale_temps(root / table / commits.COMPACTED)
    log = commits.read_log(root, table, with_covered=True)
    listed_done = {c.cid for c in log.compactions
                   if (commits.compaction_dir(root, table) / c.name).is_file()}
    covered_by: dict[str, str] = {}
    for cid, cov in log.covered.items():
        for n in cov:
            covered_by.setdefault(n, cid)
        if cid not in listed_done:  # a compaction killed after its commit: finish it
            comp = next(c for c in log.compactions if c.cid == cid)
            _finish(root, table, comp, cov)
            res.finished += 1
    # a marker listed again although a compaction covers it (its part committed twice): back out
    for n in log.parts:
        if n in covered_by:
            _move(root, table, covered_by[n], [n])
    todo = [c for n in log.parts if n not in covered_by and (c := commits.parse(n)) is not None
            and c.run_id in finished]
    by_schema: dict[str, list[commits.Commit]] = {}
    for c in sorted(todo, key=lambda c: (c.run_id, c.part)):
        by_schema.setdefault(c.schema, []).append(c)
    for markers in by_schema.values():
        for chunk in _chunks(markers, target_rows):
            comp = _compact_one(root, table, chunk)
            res.files += 1
            res.parts += len(chunk)
            res.rows += comp.rows
    return res


def compact_runs(root: LakePath) -> int:
    """The ``runs`` rows of finished runs no compacted runs file holds, into one more; returns
    the runs written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from karmic.lake import _RUNS_SCHEMA, RUNS_FOLDER, _read_run_jsons, compacted_runs, run_row

    have = compacted_runs(root)
    # a reopened run is read from its run.json from now on (karmic.lake._runs_table)
    skip = (set(have.column(RUNS_FOLDER).to_pylist()) if have is not None else set()) | commits.reopened(root)
    if storage.is_remote(root):
        paths = [p for p in sorted((root / "runs").glob("run_id=*/run.json")) if p.parent.name not in skip]
        folders, raws = [p.parent.name for p in paths], storage.read_many(paths)
    else:
        folders, raws = _read_run_jsons(Path(root) / "runs", skip)
    rows = [(f, r) for f, raw in zip(folders, raws, strict=True) if (r := run_row(root, f, raw))["status"] == FINISHED]
    if not rows:
        return 0
    table = pa.Table.from_pylist([r for _, r in rows], schema=_RUNS_SCHEMA).append_column(
        RUNS_FOLDER, pa.array([f for f, _ in rows], pa.string()))
    table = table.take(pc.sort_indices(table, [(RUNS_FOLDER, "ascending")]))
    cid = "c-" + hashlib.sha1("\n".join(f for f, _ in rows).encode()).hexdigest()[:16]
    comp = commits.Compaction(cid, table.num_rows, None, None, commits.schema_id(table.schema))
    path = comp.path(root, "runs")
    if not path.is_file():
        storage.write_atomic(path, lambda f: pq.write_table(table, f, compression=COMPRESSION))
    faults.point("compact.runs.written")
    commits._touch(commits.compaction_dir(root, "runs") / comp.name)
    return table.num_rows


def compact(lake: Path | str, tables: list[str] | None = None, target_rows: int = TARGET_ROWS) -> tuple[list[TableResult], int]:
    """Compact ``tables`` (default: every table) and the finished runs' ``runs`` rows; returns
    each table's result and the runs written. Safe to kill at any moment and to run again."""
    root = storage.resolve(lake)
    unknown = [t for t in tables or [] if t not in TABLES]
    if unknown:
        raise CompactError(f"unknown table {unknown[0]!r}; tables: {', '.join(TABLES)}")
    if not root.is_dir():
        raise CompactError(f"lake not found: {root}")
    if target_rows < 1:
        raise CompactError("--target-rows must be >= 1")
    with _locked(root):
        finished = finished_runs(root)
        results = [compact_table(root, t, finished, target_rows) for t in (tables or TABLES)]
        runs = compact_runs(root) if not tables else 0
    return results, runs
