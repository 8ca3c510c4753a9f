"""The lake's commit log: which parts of a table are committed, with their row counts and stats,
learned from one listing instead of opening every Parquet footer.

Layout: ``<lake>/_log/<table>/`` holds one empty *marker* per committed part, whose name is the
record::

    <run_id>~<part name>~<rows>~<min key>~<max key>~<schema>

(``~`` is not allowed in run ids or part names; the key is the part's ``episode`` or
``update`` column; ``schema`` a short hash of its Arrow schema, so a reader binds each schema
once). Committing a part = creating its marker after the part itself is durable (written
atomically, ``pipelines.storage``): a kill between the two leaves a part no reader sees, and the
resumed run, which writes the same part again (it finds it there), creates the marker then. A
marker is created, never changed or removed: the log is append-only like the lake, and creating
one twice is harmless (same name, same empty content).

Readers (``karmic.lake``): where ``<lake>/_log/<table>/_ready`` exists, the table's committed
parts are exactly the markers': one directory listing (object storage: one LIST per 1,000
markers, no GET), and DuckDB is handed the list of files, reading one footer per schema to bind.
Without ``_ready`` (a lake written before the log) the reader globs the table as before. The
first writer to commit into a table without ``_ready`` first commits every part already there
(one footer read each, once), then creates ``_ready``: an old lake is migrated by the first run
that writes to it, or by ``karmic lake migrate``.

Compaction (``karmic lake compact``, ``pipelines.compact``) rewrites the committed parts of
finished runs into a few large files and records them in the log (the protocol is described
above :class:`Compaction`); :func:`layout` is what a reader binds, :func:`committed`,
:func:`files` and :func:`count` are the same before and after a compaction.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines import storage
from pipelines.storage import LakePath

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported where a part is written or read, not here: a reader that only lists the log
# (``karmic sql "select count(*) from events"``, :func:`count`) starts without it

LOG = "_log"
READY = "_ready"
SEP = "~"
KEY_COLUMNS = ("episode", "update")  # the first a table has is its key


@dataclass(frozen=True)
class Commit:
    run_id: str
    part: str
    rows: int
    lo: int | None
    hi: int | None
    schema: str

    @property
    def name(self) -> str:
        return SEP.join([self.run_id, self.part, str(self.rows), _opt(self.lo), _opt(self.hi), self.schema])

    def path(self, lake: LakePath, table: str) -> LakePath:
        return lake / table / f"run_id={self.run_id}" / self.part


def _opt(v: int | None) -> str:
    return "" if v is None else str(int(v))


def parse(name: str) -> Commit | None:
    parts = name.split(SEP)
    if len(parts) != 6:
        return None
    run_id, part, rows, lo, hi, schema = parts
    try:
        return Commit(run_id, part, int(rows), int(lo) if lo else None, int(hi) if hi else None, schema)
    except ValueError:
        return None


_schema_ids: dict[str, str] = {}


def schema_id(schema: pa.Schema) -> str:
    """8 hex digits of the schema's field names and types as a Parquet file stores them (an
    in-memory table and its file's footer give the same id: list item names, for one, differ)."""
    key = schema.remove_metadata().to_string()
    if key not in _schema_ids:
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(schema.remove_metadata().empty_table(), buf)
        stored = pq.read_schema(pa.BufferReader(buf.getvalue()))
        text = ";".join(f"{f.name}:{f.type}" for f in stored)
        _schema_ids[key] = hashlib.sha1(text.encode()).hexdigest()[:8]
    return _schema_ids[key]


def log_dir(lake: LakePath, table: str) -> LakePath:
    return lake / LOG / table


def is_ready(lake: LakePath, table: str) -> bool:
    return (log_dir(lake, table) / READY).is_file()


def record(run_id: str, part: str, table: pa.Table | pa.Schema, rows: int, lo=None, hi=None) -> Commit:
    import pyarrow as pa

    schema = table if isinstance(table, pa.Schema) else table.schema
    return Commit(run_id, part, int(rows), lo, hi, schema_id(schema))


def record_of(run_id: str, part: str, table: pa.Table) -> Commit:
    """A part's record from its rows: count and min / max of its key column."""
    import pyarrow.compute as pc

    lo = hi = None
    for k in KEY_COLUMNS:
        if k in table.column_names and table.num_rows:
            mm = pc.min_max(table.column(k)).as_py()
            lo, hi = mm["min"], mm["max"]
            break
    return record(run_id, part, table, table.num_rows, lo, hi)


def record_from_file(run_id: str, path: LakePath) -> Commit:
    """A part's record from its footer (migration): row count, key statistics, schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if storage.is_remote(path):
        md = pq.read_metadata(pa.BufferReader(path.read_bytes()))
    else:
        md = pq.read_metadata(path)
    schema = md.schema.to_arrow_schema().remove_metadata()
    lo = hi = None
    for k in KEY_COLUMNS:
        if k in schema.names:
            i = schema.names.index(k)
            los, his = [], []
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(i).statistics
                if st is not None and st.has_min_max:
                    los.append(st.min), his.append(st.max)
            if los:
                lo, hi = min(los), max(his)
            break
    return record(run_id, path.name, schema, md.num_rows, lo, hi)


_ready_seen: set[tuple[str, str]] = set()  # (lake, table) this process found ready


def commit(lake: Path | str, table: str, c: Commit) -> None:
    """Commit a durable part: its marker (after migrating the table's older parts, once)."""
    from pipelines import faults

    root = storage.resolve(lake)
    key = (str(root), table)
    if key not in _ready_seen:
        if not is_ready(root, table):
            migrate(root, table)
        _ready_seen.add(key)
    faults.point(f"commit.{table}")  # a kill here: the part is there, uncommitted
    _touch(log_dir(root, table) / c.name)


def _touch(p: LakePath) -> None:
    """Create an empty marker (no-op if it exists): an empty file, or one PUT."""
    if storage.is_remote(p):
        if not p.is_file():
            p.put(b"")
        return
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
        storage._fsync_dir(p.parent)


def _mark(root: LakePath, table: str, c: Commit) -> None:
    _touch(log_dir(root, table) / c.name)


def migrate(lake: Path | str, table: str) -> int:
    """Commit every part of ``table`` already in the lake, then mark the log ready; returns the
    parts committed. Idempotent, and safe to kill: readers ignore the log until ``_ready``."""
    root = storage.resolve(lake)
    # a compacted part keeps its file but not its marker in the listing: marking it again would
    # have readers read its rows twice
    done = {(c.run_id, c.part) for n in _all_names(root, table) if (c := parse(n)) is not None} \
        if compaction_dir(root, table).is_dir() else set()
    n = 0
    for d in sorted((root / table).glob("run_id=*")) if (root / table).is_dir() else []:
        run_id = d.name.split("=", 1)[1]
        for f in sorted(d.glob("*.parquet")):
            if (run_id, f.name) in done:
                continue
            _mark(root, table, record_from_file(run_id, f))
            n += 1
    _touch(log_dir(root, table) / READY)
    return n


def names(lake: LakePath, table: str) -> list[str]:
    """The names in the table's log folder (one listing; no path object per marker, which at
    200,000 markers costs more than the listing itself)."""
    d = log_dir(lake, table)
    if storage.is_remote(d):
        return [p.name for p in d.iterdir()]
    try:
        return os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _fields(name: str) -> list[str] | None:
    """A marker name's six fields, the row count checked; None for anything else (``_ready``)."""
    f = name.split(SEP)
    if len(f) != 6 or not f[2].isdigit() or not all(not k or k.lstrip("-").isdigit() for k in (f[3], f[4])):
        return None
    return f


def _all_names(lake: LakePath, table: str) -> list[str]:
    """Every committed part's marker name, compacted or not (the records of compactions read)."""
    log = read_log(lake, table, with_covered=True)
    if not log.covered:
        return log.parts
    seen = set(log.parts)
    out = list(log.parts)
    for cov in log.covered.values():
        out += [n for n in cov if n not in seen]
        seen.update(cov)
    return out


def committed(lake: LakePath, table: str, run: str | None = None) -> list[Commit]:
    """The table's committed parts, ordered by (run id, part); ``run``: that run's only. A
    compacted part is listed as before its compaction (the log's records name it)."""
    out = [c for n in _all_names(lake, table) if (c := parse(n)) is not None and (run is None or c.run_id == run)]
    return sorted(out, key=lambda c: (c.run_id, c.part))


def _by_schema(markers: list[str], run: str | None) -> dict[str, list[tuple[str, str]]]:
    rows = sorted((f[0], f[1], f[5]) for n in markers
                  if (f := _fields(n)) is not None and (run is None or f[0] == run))
    out: dict[str, list[tuple[str, str]]] = {}
    for run_id, part, schema in rows:
        out.setdefault(schema, []).append((run_id, part))
    return out


def files(lake: LakePath, table: str, run: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """The committed parts as ``{schema id: [(run id, part), ...]}``, ordered as :func:`committed`
    (compacted parts included; readers bind from :func:`layout` instead)."""
    return _by_schema(_all_names(lake, table), run)


def layout(lake: LakePath, table: str, run: str | None = None
           ) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[Compaction]]]:
    """What a reader hands DuckDB: the parts no compaction covers, ``{schema id: [(run id, part)]}``,
    and the compacted files, ``{schema id: [compaction]}`` (all of them with ``run``: a compacted
    file holds many runs, and the reader's filter on ``run_id`` skips the others' row groups)."""
    log = read_log(lake, table)
    comps: dict[str, list[Compaction]] = {}
    for c in log.compactions:
        comps.setdefault(c.schema, []).append(c)
    return _by_schema(log.parts, run), comps


def count(lake: LakePath, table: str, run: str | None = None) -> int | None:
    """The table's committed rows (``run``: that run's), summed from the log's records without
    opening a part; None where the table has no log (``_ready``) to answer from."""
    if not is_ready(lake, table):
        return None
    if run is None:
        log = read_log(lake, table)
        return sum(int(f[2]) for n in log.parts if (f := _fields(n)) is not None) + \
            sum(c.rows for c in log.compactions)
    return sum(int(f[2]) for n in _all_names(lake, table) if (f := _fields(n)) is not None and f[0] == run)


# --- compaction: many committed parts read as one file --------------------------------------------
# A compaction rewrites committed parts of finished runs into one large Parquet file
# (``<lake>/<table>/_compacted/<cid>.parquet``, which no ``run_id=*`` glob matches; the parts stay)
# and records it under ``<lake>/_log/<table>/_compacted/``:
#
# - ``<cid>.json``, the *record*: the file's rows, key range, schema id and the names of the markers
#   it covers. Written atomically after the file is durable: its existence is the commit point;
# - then the covered markers are moved into ``_log/<table>/_covered/<cid>/`` (out of the listing
#   readers take; kept, never deleted);
# - then the *done marker* ``<cid>~<rows>~<min key>~<max key>~<schema>`` is created: a reader
#   that lists it needs nothing else of the compaction (no record read, no covered list).
#
# A reader lists ``_compacted/`` (A1), then the table's markers (L), then ``_compacted/`` again
# (A2). A compaction done in A1 had moved its markers before L began. Any other record in A2 is
# read, and its covered markers still in L are ignored. A record absent from A2 did not exist when
# L ended, so none of its markers had moved: L is the state before it. Every listing sees the
# entries that existed throughout it (POSIX readdir, S3 LIST), so no kill or concurrent
# compaction makes a reader see a row twice or lose one.

COMPACTED = "_compacted"
COVERED = "_covered"
# ``<lake>/runs/_reopened/run_id=<id>``: a finished run whose run.json was rewritten (a training
# run extended with ``--resume --total-steps``). A compacted ``runs`` row is a copy of run.json
# when the run finished; for a reopened run readers take run.json itself. Created before the
# rewrite, so no reader sees the new run.json while trusting the old row.
REOPENED = "_reopened"
RECORD_SUFFIX = ".json"


@dataclass(frozen=True)
class Compaction:
    cid: str
    rows: int
    lo: int | None
    hi: int | None
    schema: str

    @property
    def name(self) -> str:
        """The done marker's name."""
        return SEP.join([self.cid, str(self.rows), _opt(self.lo), _opt(self.hi), self.schema])

    def path(self, lake: LakePath, table: str) -> LakePath:
        return lake / table / COMPACTED / f"{self.cid}.parquet"


def parse_done(name: str) -> Compaction | None:
    f = name.split(SEP)
    if len(f) != 5 or not f[1].isdigit():
        return None
    try:
        return Compaction(f[0], int(f[1]), int(f[2]) if f[2] else None, int(f[3]) if f[3] else None, f[4])
    except ValueError:
        return None


def compaction_dir(lake: LakePath, table: str) -> LakePath:
    return log_dir(lake, table) / COMPACTED


def covered_dir(lake: LakePath, table: str, cid: str) -> LakePath:
    return log_dir(lake, table) / COVERED / cid


def reopened_dir(lake: LakePath) -> LakePath:
    return lake / "runs" / REOPENED


def reopened(lake: LakePath) -> set[str]:
    """Folder names (``run_id=<id>``) of the finished runs reopened since (one listing, usually empty)."""
    return {n for n in _listdir(reopened_dir(lake)) if n.startswith("run_id=")}


def mark_reopened(lake: LakePath, run_id: str) -> None:
    _touch(reopened_dir(lake) / f"run_id={run_id}")


def _listdir(d: LakePath) -> list[str]:
    if storage.is_remote(d):
        return [p.name for p in d.iterdir()]
    try:
        return os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_record(lake: LakePath, table: str, cid: str) -> tuple[Compaction, list[str]]:
    """A compaction's record: (what it committed, the marker names it covers)."""
    import json

    raw = json.loads((compaction_dir(lake, table) / f"{cid}{RECORD_SUFFIX}").read_bytes())
    c = Compaction(cid, int(raw["rows"]), raw.get("lo"), raw.get("hi"), str(raw["schema"]))
    return c, [str(n) for n in raw["covered"]]


@dataclass
class TableLog:
    """A table's committed state from its log: the marker names not covered by a compaction
    (``parts``) and the compactions; ``covered``: each compaction's covered marker names, where
    they were read."""
    parts: list[str]
    compactions: list[Compaction]
    covered: dict[str, list[str]]


def read_log(lake: LakePath, table: str, with_covered: bool = False) -> TableLog:
    """The table's committed state (see the protocol above). In a lake that was never compacted:
    one listing of the markers and one of an absent folder. ``with_covered``: also read every
    compaction's record (what the count of one run and the list of every committed part need)."""
    a1 = _listdir(compaction_dir(lake, table))
    listed = names(lake, table)
    a2 = _listdir(compaction_dir(lake, table))
    done = {c.cid: c for n in a1 if (c := parse_done(n)) is not None}
    comps: dict[str, Compaction] = dict(done)
    covered: dict[str, list[str]] = {}
    drop: set[str] = set()
    for n in sorted(a2):
        if not n.endswith(RECORD_SUFFIX):
            continue
        cid = n[: -len(RECORD_SUFFIX)]
        if cid in done and not with_covered:
            continue
        c, cov = read_record(lake, table, cid)
        comps.setdefault(cid, c)
        covered[cid] = cov
        if cid not in done:
            drop.update(cov)
    parts = [n for n in listed if n not in drop] if drop else listed
    return TableLog(parts, sorted(comps.values(), key=lambda c: c.cid), covered)
