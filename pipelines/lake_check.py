"""``karmic lake check``: what a crash, a bug or a hand edit can leave wrong in a lake.

:func:`check_lake(lake) -> list[str]` returns one line per problem (empty: the lake is sound):

- **torn**: a ``*.parquet`` part whose footer does not read, a checkpoint that is not a whole
  zip archive (``torch.save``'s format), a temporary file (``.<name>.tmp-<pid>``) a killed
  writer left (harmless to readers, which never list it; a resume of its run removes it);
- **uncommitted** / **missing** parts of a table with a commit log (``pipelines.commits``): a
  part no marker names, a marker whose part is gone;
- then, over the readable parts, the data checks of ``queries/checks/*.sql``, each a query that
  returns one ``problem`` row per offending run and table (SQL as data checks: the rule is the
  query, a known-answer test shows it): **duplicates** (a key written twice, one update's
  transports in two parts, an evaluation's agent listed twice in ``eval_agents``), **orphans** (rows of a run without run.json, episode rows without
  events, actions or transports whose episode has no rows), **uncommitted** (rows past a killed
  training run's last checkpoint, rows of a simulation that did not finish), **missing** (a
  finished run without all of its episodes).

The checks read tables ``events``, ``episodes``, ``actions``, ``tvt_transports``, ``eval_agents`` (each with a
``filename`` column) and two the checker builds: ``_runs`` (one row per run.json: kind, status,
``last_checkpoint`` update, ``committed_episodes`` up to it, ``expected_episodes`` of a finished
run) and ``_partitions`` (every ``<table>/run_id=<id>`` directory, checkpoints and trajectories
included). Read-only: nothing in the lake is changed.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from karmic.lake import _DUCK_TYPES, LakeError, _first_line, queries_dir
from pipelines import commits, storage
from pipelines.schema import (
    ACTIONS_SCHEMA,
    EPISODES_SCHEMA,
    EVAL_AGENTS_SCHEMA,
    EVENTS_SCHEMA,
    TVT_TRANSPORTS_SCHEMA,
)
from pipelines.storage import LakePath

TABLES = {"events": EVENTS_SCHEMA, "episodes": EPISODES_SCHEMA, "actions": ACTIONS_SCHEMA,
          "tvt_transports": TVT_TRANSPORTS_SCHEMA, "eval_agents": EVAL_AGENTS_SCHEMA}
TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)$")
CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")


def check_dir() -> Path:
    return queries_dir() / "checks"


def _partitions(lake: LakePath) -> list[tuple[str, str, LakePath]]:
    """(table, run_id, directory) of every ``<table>/run_id=<id>`` in the lake."""
    out = []
    for d in sorted(lake.glob("*/run_id=*")):
        out.append((d.parent.name, d.name.split("=", 1)[1], d))
    return out


def _torn_parquet(path: LakePath) -> str | None:
    try:
        if storage.is_remote(path):
            pq.read_metadata(pa.BufferReader(path.read_bytes()))
        else:
            pq.read_metadata(path)
    except Exception as exc:  # any reason a reader would fail on it
        return f"torn: {path}: unreadable Parquet ({type(exc).__name__}: {_first_line(exc)})"
    return None


def _torn_checkpoint(path: LakePath) -> str | None:
    try:
        data = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            bad = z.testzip()
        if bad is not None:
            return f"torn: {path}: checkpoint member {bad} fails its CRC"
    except Exception as exc:
        return f"torn: {path}: not a whole checkpoint ({type(exc).__name__}: {_first_line(exc)})"
    return None


def _run_row(run_id: str, meta: dict, checkpoints: list[int]) -> dict:
    kind, status = meta.get("kind"), meta.get("status")
    last = max(checkpoints) if checkpoints else None
    committed = expected = None
    if kind == "train":
        tc = meta.get("train_config") or {}
        cfg = meta.get("config") or {}
        num_steps, max_steps = tc.get("num_steps"), cfg.get("max_steps")
        num_envs = meta.get("num_envs") or tc.get("num_envs")
        if num_steps and max_steps and num_envs:
            # checkpoints are taken at round boundaries: update U has run U * T / max_steps rounds
            committed = (last or 0) * int(num_steps) // int(max_steps) * int(num_envs)
            expected = committed if status == "completed" else None
    elif kind == "simulate" and status in ("completed", "finished"):  # finished: lakes before one vocabulary
        expected = meta.get("episodes_done", meta.get("episodes"))
    return {"run_id": run_id, "kind": kind, "status": status, "last_checkpoint": last,
            "committed_episodes": committed, "expected_episodes": expected}


RUNS_SCHEMA = pa.schema([("run_id", pa.string()), ("kind", pa.string()), ("status", pa.string()),
                         ("last_checkpoint", pa.int64()), ("committed_episodes", pa.int64()),
                         ("expected_episodes", pa.int64())])


def check_lake(lake: Path | str) -> list[str]:
    """One line per problem found in ``lake`` (module docstring); [] when there is none."""
    root = storage.resolve(lake)
    if not root.is_dir():
        raise LakeError(f"lake not found: {root}")
    problems: list[str] = []
    files: dict[str, list[str]] = {t: [] for t in TABLES}
    ckpts: dict[str, list[int]] = {}
    parts = _partitions(root)
    for table, run_id, d in parts:
        if table == "runs":
            continue
        for f in sorted(d.iterdir()):
            name = f.name
            m = TEMP_RE.match(name)
            if m:
                if storage.is_remote(f) or not storage._pid_alive(int(m.group(1))):
                    problems.append(f"torn: {f}: temporary file of a killed writer (never read; "
                                    f"safe to delete, a resume of run {run_id} removes it)")
                continue
            if name.endswith(".parquet"):
                bad = _torn_parquet(f)
                if bad:
                    problems.append(bad)
                elif table in files:
                    files[table].append(str(f))
            elif table == "checkpoints" and (c := CKPT_RE.match(name)):
                bad = _torn_checkpoint(f)
                if bad:
                    problems.append(bad)
                else:
                    ckpts.setdefault(run_id, []).append(int(c.group(1)))
    problems += _log_problems(root, files)
    problems += _compaction_problems(root)
    runs = []
    for p in sorted(root.glob("runs/run_id=*/run.json")):
        run_id = p.parent.name.split("=", 1)[1]
        try:
            meta = json.loads(p.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except Exception as exc:
            problems.append(f"torn: {p}: unreadable run.json ({type(exc).__name__})")
            continue
        runs.append(_run_row(run_id, meta, ckpts.get(run_id, [])))
    problems += run_checks(root, files, runs, [(t, r) for t, r, _ in parts if t != "runs"])
    return problems


def _log_problems(root: LakePath, files: dict[str, list[str]]) -> list[str]:
    """Tables with a commit log: parts no marker names (uncommitted: a writer killed between the
    part and its marker) and markers whose part is gone (missing)."""
    out = []
    for table, paths in files.items():
        if not commits.is_ready(root, table):
            continue
        logged = {str(c.path(root, table)): c for c in commits.committed(root, table)}
        for p in paths:
            if p not in logged:
                run = Path(p).parent.name.split("=", 1)[1]
                out.append(f"uncommitted: {p}: a part no commit names (its writer was killed before "
                           f"committing it; a resume of run {run} commits it)")
        have = set(paths)
        for p, c in sorted(logged.items()):
            if p not in have:
                out.append(f"missing: {p}: committed ({c.rows} rows) but not in the lake (or unreadable)")
    return out


def _compaction_problems(root: LakePath) -> list[str]:
    """Compacted files (``pipelines.compact``) against their records: gone, unreadable, or not the
    rows, key range and schema their record says (readers would read other rows than the parts
    they replace); markers listed again after a compaction covered them (read twice); compacted
    files no record names (a compaction killed before its commit: never read)."""
    out = []
    for table in TABLES:
        cdir = commits.compaction_dir(root, table)
        if not commits.is_ready(root, table) or not cdir.is_dir():
            continue
        log = commits.read_log(root, table, with_covered=True)
        for c in log.compactions:
            path = c.path(root, table)
            cov = [m for n in log.covered.get(c.cid, []) if (m := commits.parse(n)) is not None]
            if sum(m.rows for m in cov) != c.rows:
                out.append(f"torn: {cdir / (c.cid + commits.RECORD_SUFFIX)}: the record says {c.rows} rows, "
                           f"its covered parts {sum(m.rows for m in cov)}")
            if not path.is_file():
                out.append(f"missing: {path}: compacted ({c.rows} rows) but not in the lake")
                continue
            try:
                got = commits.record_from_file("", path)
            except Exception as exc:
                out.append(f"torn: {path}: unreadable Parquet ({type(exc).__name__}: {_first_line(exc)})")
                continue
            if (got.rows, got.lo, got.hi, got.schema) != (c.rows, c.lo, c.hi, c.schema):
                out.append(f"torn: {path}: holds {got.rows} rows (keys {got.lo} .. {got.hi}, schema {got.schema}), "
                           f"its record {c.rows} (keys {c.lo} .. {c.hi}, schema {c.schema}): not the rows of "
                           f"the parts it replaces")
        covered_by = {n: cid for cid, cov in log.covered.items() for n in cov}
        for n in sorted(set(log.parts) & set(covered_by)):
            out.append(f"duplicates: {commits.log_dir(root, table) / n}: committed again after compaction "
                       f"{covered_by[n]} covered it (its rows are read twice; `karmic lake compact` moves it out)")
        named = {c.path(root, table).name for c in log.compactions}
        for f in sorted((root / table / commits.COMPACTED).glob("*.parquet")):
            if f.name not in named:
                out.append(f"uncommitted: {f}: a compacted file no record names (never read; left by a "
                           "compaction killed before its commit, which `karmic lake compact` redoes)")
    rdir = commits.compaction_dir(root, "runs")
    for n in sorted(commits._listdir(rdir)):
        if (c := commits.parse_done(n)) is None:
            continue
        path = c.path(root, "runs")
        try:
            rows = pq.read_metadata(pa.BufferReader(path.read_bytes()) if storage.is_remote(path) else path).num_rows
        except FileNotFoundError:
            out.append(f"missing: {path}: compacted runs ({c.rows} rows) but not in the lake")
            continue
        except Exception as exc:
            out.append(f"torn: {path}: unreadable Parquet ({type(exc).__name__}: {_first_line(exc)})")
            continue
        if rows != c.rows:
            out.append(f"torn: {path}: holds {rows} runs, its marker {c.rows}")
    return out


def _view_sql(table: str, paths: list[str]) -> str:
    schema = TABLES[table]
    if not paths:
        cols = ", ".join(f'null::{_DUCK_TYPES[f.type]} as "{f.name}"' for f in schema)
        return f"select {cols}, null::varchar as filename where false"
    lst = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    return (f"select * from read_parquet([{lst}], hive_partitioning = true, union_by_name = true, "
            "filename = true)")


def run_checks(root: LakePath, files: dict[str, list[str]], runs: list[dict],
               partitions: list[tuple[str, str]]) -> list[str]:
    """The ``queries/checks/*.sql`` data checks over the given readable parts."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    storage.register_duckdb(con, root)
    con.register("_runs_arrow", pa.Table.from_pylist(runs, schema=RUNS_SCHEMA))
    con.execute("create table _runs as select * from _runs_arrow")
    con.register("_partitions_arrow", pa.table({"tbl": [t for t, _ in partitions],
                                                "run_id": [r for _, r in partitions]}))
    con.execute("create table _partitions as select * from _partitions_arrow")
    out = []
    try:
        for table, paths in files.items():
            con.execute(f"create view {table} as {_view_sql(table, paths)}")
        for sql_file in sorted(check_dir().glob("*.sql")):
            out += [r[0] for r in con.execute(sql_file.read_text()).fetchall()]
    except duckdb.Error as exc:
        raise LakeError(f"lake check: {_first_line(exc)}") from None
    return out
