"""Reading the lake: DuckDB views, named queries and a polars scan. Imports no torch and no env.

``connect(path, run=None, params=None)`` returns an in-memory DuckDB connection with these views
(``path``: a directory or ``s3://bucket/prefix``, read through s3fs, see ``pipelines.storage``):

Each table view reads the table's committed parts, learned from its commit log
(``<lake>/_log/<table>/``, ``pipelines.commits``: one listing, one footer per schema to bind), or,
in a lake written before the log, every ``<lake>/<table>/run_id=*/*.parquet`` (docs/lake.md).
``connect(..., sql=...)`` binds only the views that statement reads (:func:`views_needed`).

- ``events``   over ``<lake>/events/run_id=*/part-*.parquet`` (hive-partitioned, docs/DESIGN.md schema);
- ``episodes`` over ``<lake>/episodes/run_id=*/part-*.parquet``;
- ``tvt_transports`` over ``<lake>/tvt_transports/run_id=*/part-*.parquet``: every TVT transport
  (run, update, agent, source episode/t, target episode/t, amount, mode, head);
- ``actions`` over ``<lake>/actions/run_id=*/part-*.parquet``: one row per (episode, agent) with
  the agent's action sequence (``actions``, a list of codes 0..7, ``actions[t + 1]`` is step t's)
  and what rebuilds the episode's reset (``reset_rng``, ``pairs``); ``pipelines.replay`` uses it;
- ``runs``     one row per ``runs/run_id=<id>/run.json``: run_id, kind, condition, policy,
  grid_size, seed, n_agents, num_envs, status, started_at, finished_at, algo (a training run's
  learner, ``ppo`` | ``drqn``; ``ppo`` for training runs from before it was recorded), and the run's
  environment ``config`` as JSON (``json_extract(config, '$.ledger_decay')``);
- ``ledger_hits`` (derived, from the events alone) every ZAP_HIT with its ledger classification
  ``retribution`` and the pair's signed debt after it (``queries/_ledger_hits.sql``).

A lake without files yet gives empty views with the right columns. ``run="<id>"`` filters
the views to that run, so every query file works unchanged with ``karmic query NAME --run ID``.

Parameters reach SQL as DuckDB variables: ``params={"by": "episode"}`` runs
``SET VARIABLE by = 'episode'`` and a query reads ``getvariable('by')`` (NULL when unset; values
are strings, cast them in SQL). ``karmic query NAME --by episode`` and ``--param key=value`` use
this.

Read-only: user SQL (``karmic sql``, query files) may only be SELECT / WITH / EXPLAIN statements
(checked with ``duckdb.extract_statements``); COPY, ATTACH, INSTALL, CREATE, INSERT ... are
rejected with one line. Part files are immutable and only ever appear by atomic rename; a torn
committed ``*.parquet`` makes a query fail with one line naming the file (``LakeError``); a part
no commit names is not read (``karmic lake check`` reports it).

Queries: ``queries/NAME.sql`` at the repository root (found relative to this package, which is
where an editable install or a source checkout has it), or the directory in ``$KARMIC_QUERIES``.
Each file's first line is ``-- one-line description`` (shown by ``karmic query --list``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipelines import commits, storage
from pipelines.schema import (
    ACTIONS_SCHEMA,
    EPISODES_SCHEMA,
    EVENTS_SCHEMA,
    RUNS_COLUMNS,
    TVT_TRANSPORTS_SCHEMA,
)
from pipelines.storage import LakePath


class LakeError(ValueError):
    """A user-facing lake or query problem: one line, no traceback."""


ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_DUCK_TYPES = {
    pa.string(): "varchar", pa.int64(): "bigint", pa.int32(): "integer", pa.int16(): "smallint",
    pa.int8(): "tinyint", pa.bool_(): "boolean", pa.float64(): "double", pa.uint64(): "ubigint",
    pa.list_(pa.int8()): "tinyint[]", pa.list_(pa.int16()): "smallint[]",
}


def _empty_select(schema: pa.Schema) -> str:
    cols = ", ".join(f'null::{_DUCK_TYPES[f.type]} as "{f.name}"' for f in schema)
    return f"select {cols} where false"


def _quote(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


_RUNS_SCHEMA = pa.schema(
    [(c, pa.int64() if c in ("grid_size", "seed", "n_agents", "num_envs") else pa.string())
     for c in RUNS_COLUMNS] + [("config", pa.string())]
)


def _runs_table(lake: LakePath) -> pa.Table:
    rows = []
    paths = sorted((lake / "runs").glob("run_id=*/run.json"))
    try:
        raws = storage.read_many(paths)  # object storage: concurrent GETs
    except OSError as exc:
        raise LakeError(f"unreadable run.json in the lake: {exc}") from None
    for p, raw in zip(paths, raws, strict=True):
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            raise LakeError(f"unreadable run.json in the lake: {p} ({exc})") from None
        row = {c: meta.get(c) for c in RUNS_COLUMNS}
        row["run_id"] = row["run_id"] or p.parent.name.split("=", 1)[1]
        for c in ("grid_size", "seed", "n_agents", "num_envs"):
            row[c] = int(row[c]) if isinstance(row[c], (int, float)) else None
        # the learner of a training run; runs written before learners had names are ppo
        tc = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
        row["algo"] = row["algo"] or tc.get("algo") or ("ppo" if meta.get("kind") == "train" else None)
        for c in ("kind", "condition", "policy", "status", "started_at", "finished_at", "algo"):
            row[c] = None if row[c] is None else str(row[c])
        row["config"] = json.dumps(meta.get("config") or {})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=_RUNS_SCHEMA)


def _runs_table_empty() -> pa.Table:
    return pa.Table.from_pylist([], schema=_RUNS_SCHEMA)


def _table_view(lake: LakePath, table: str, schema: pa.Schema, run: str | None = None) -> str:
    """The view's SELECT: from the commit log (``pipelines.commits``) where the table has one:
    the committed parts as a list, one ``read_parquet`` per schema (DuckDB reads one footer of
    each to bind); else, a lake from before the log, a glob of every part (every footer read)."""
    if commits.is_ready(lake, table):
        by_schema: dict[str, list[str]] = {}
        for c in commits.committed(lake, table, run):
            by_schema.setdefault(c.schema, []).append(str(c.path(lake, table)))
        if not by_schema:
            return _empty_select(schema)
        return " union all by name ".join(
            f"select * from read_parquet([{', '.join(_quote(f) for f in files)}], hive_partitioning = true)"
            for files in by_schema.values())
    files = list((lake / table).glob("run_id=*/*.parquet"))
    if not files:
        return _empty_select(schema)
    glob = str(lake / table / "run_id=*" / "*.parquet")
    return f"select * from read_parquet({_quote(glob)}, hive_partitioning = true, union_by_name = true)"


TABLE_VIEWS = ("events", "episodes", "tvt_transports", "actions")


_VIEW_RE = re.compile(r"create\s+or\s+replace\s+view\s+([a-z_][a-z0-9_]*)", re.IGNORECASE)
_WORD_RE = re.compile(r"[a-z_][a-z0-9_]*")


def _shared_defs() -> dict[str, str]:
    """Every shared view's name -> the SQL that defines it (a file may define several)."""
    defs = {"ledger_hits": ledger_hits_sql()}
    for name in SHARED_VIEWS:
        text = (queries_dir() / f"{name}.sql").read_text()
        for v in _VIEW_RE.findall(text):
            defs[v.lower()] = text
    return defs


def views_needed(sql: str) -> set[str]:
    """The views ``sql`` reads, directly or through the shared views (their definitions scanned
    the same way): a connection made for one statement binds only these. Binding a view over many
    parts costs time for every view that reads it, so ``select count(*) from events`` should not
    pay for ``ledger_hits`` and the rest."""
    defs = _shared_defs()
    known = set(defs) | set(TABLE_VIEWS) | {"runs"}
    need: set[str] = set()
    todo = [w for w in _WORD_RE.findall(sql.lower()) if w in known]
    while todo:
        v = todo.pop()
        if v in need:
            continue
        need.add(v)
        if v in defs:
            todo += [w for w in _WORD_RE.findall(defs[v].lower()) if w in known and w not in need]
    return need


def connect(path: str | Path, run: str | None = None, params: dict[str, Any] | None = None,
            check_run: bool = True, sql: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake's views (see the module docstring); ``sql``: only the
    views that statement needs (:func:`views_needed`)."""
    need = None if sql is None else views_needed(sql) | ({"events"} if run and check_run else set())
    # s3: read through a filesystem holding the lake's listing as of now (pipelines.storage)
    lake = storage.snapshot(storage.resolve(path), ("runs", "_log", "events", "episodes",
                                                            "tvt_transports", "actions"))
    if not lake.is_dir():
        raise LakeError(f"lake not found: {lake} (create one with `karmic simulate --lake {lake}`)")
    # nothing is ever downloaded at run time: no extension is installed or autoloaded (an s3://
    # lake is read through the s3fs filesystem registered below, not DuckDB's httpfs)
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    storage.register_duckdb(con, lake)
    # every run.json is read for the runs view: only where the statement reads it (or --run)
    runs = _runs_table(lake) if need is None or "runs" in need or run else _runs_table_empty()
    con.register("_karmic_runs", runs)
    where = f" where run_id = {_quote(run)}" if run else ""
    try:  # binding the views reads every file's footer: a torn file fails here, named
        for table, schema in (("events", EVENTS_SCHEMA), ("episodes", EPISODES_SCHEMA),
                              ("tvt_transports", TVT_TRANSPORTS_SCHEMA), ("actions", ACTIONS_SCHEMA)):
            if need is not None and table not in need:
                continue
            con.execute(f"create view {table} as select * from ({_table_view(lake, table, schema, run)}){where}")
    except duckdb.Error as exc:
        raise LakeError(_first_line(exc)) from None
    con.execute(f"create view runs as select * replace (config::json as config) from _karmic_runs{where}")
    create_shared_views(con, need)
    if run and check_run:
        known = run in set(runs.column("run_id").to_pylist())
        if not known:
            known = bool(guard(con, "select count(*) from events")[0][0])
        if not known:
            raise LakeError(f"run not found in {lake}: {run}")
    set_params(con, params)
    return con


def set_params(con: duckdb.DuckDBPyConnection, params: dict[str, Any] | None) -> None:
    for k, v in (params or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise LakeError(f"invalid parameter name: {k!r}")
        try:
            con.execute(f'set variable "{k}" = {_quote(v)}')
        except duckdb.Error as exc:
            raise LakeError(f"parameter {k}: {_first_line(exc)}") from None


def check_read_only(sql: str) -> None:
    """Reject anything but SELECT / WITH / EXPLAIN (one line, before anything runs)."""
    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise LakeError(f"malformed SQL: {_first_line(exc)}") from None
    if not stmts:
        raise LakeError("empty SQL")
    for s in stmts:
        if s.type not in ALLOWED_STATEMENTS:
            kind = str(s.type).split(".")[-1]
            raise LakeError(f"the lake is read-only: {kind} statements are not allowed (SELECT only)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def guard(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    """Run read-only SQL; DuckDB errors (torn files included) become one-line LakeErrors."""
    rel = run_sql(con, sql)
    return rel.fetchall() if rel is not None else []


def run_sql(con: duckdb.DuckDBPyConnection, sql: str):
    """Check and run user SQL; returns a relation (None for statements without a result)."""
    check_read_only(sql)
    try:
        return con.sql(sql)
    except duckdb.Error as exc:
        raise LakeError(_first_line(exc)) from None


def fetch(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of read-only SQL, with errors as LakeError."""
    rel = run_sql(con, sql)
    if rel is None:
        return [], []
    try:
        return list(rel.columns), rel.fetchall()
    except duckdb.Error as exc:
        raise LakeError(_first_line(exc)) from None


# --- named queries -------------------------------------------------------------------------------
def queries_dir() -> Path:
    env = os.environ.get("KARMIC_QUERIES")
    if env:
        return Path(env)
    for cand in (Path(__file__).resolve().parent.parent / "queries", Path(__file__).resolve().parent / "queries"):
        if cand.is_dir():
            return cand
    raise LakeError("queries/ not found: set KARMIC_QUERIES to the folder of the .sql files")


# views every connection gets, in dependency order: the t table, the per-episode totals and
# social quantities (hits by the ledger rule, Gini, eating), the late-training per-seed metrics of
# the ablation and their per-cell statistics
SHARED_VIEWS = ("_t975", "_episode_totals", "_episode_social", "_late_seed_metrics", "_late_cell_stats")


def create_shared_views(con: duckdb.DuckDBPyConnection, only: set[str] | None = None) -> None:
    """The views the named queries share, over a connection that has ``events``, ``episodes`` and
    ``runs``: ``ledger_hits`` (every ZAP_HIT classified by the ledger rule) and SHARED_VIEWS.
    ``default_ledger_decay`` (karmic.ledger.DEFAULT_DECAY) is the decay of a run whose config
    does not record one."""
    from karmic.ledger import DEFAULT_DECAY

    con.execute(f"set variable default_ledger_decay = {float(DEFAULT_DECAY)!r}")
    if only is None or "ledger_hits" in only:
        con.execute(f"create view ledger_hits as {ledger_hits_sql()}")
    for name in SHARED_VIEWS:
        text = (queries_dir() / f"{name}.sql").read_text()
        if only is None or any(v.lower() in only for v in _VIEW_RE.findall(text)):
            con.execute(text)


def ledger_hits_sql() -> str:
    """The body of the ``ledger_hits`` view (``queries/_ledger_hits.sql``)."""
    return (queries_dir() / "_ledger_hits.sql").read_text().strip().rstrip(";")


def list_queries() -> list[tuple[str, str]]:
    """(name, one-line description) of every queries/*.sql; ``_*.sql`` are internal views."""
    out = []
    for p in sorted(queries_dir().glob("[!_]*.sql")):
        first = p.read_text().lstrip().splitlines()[0] if p.read_text().strip() else ""
        out.append((p.stem, first[2:].strip() if first.startswith("--") else ""))
    return out


def query_sql(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise LakeError(f"invalid query name: {name!r}")
    p = queries_dir() / f"{name}.sql"
    if not p.is_file():
        known = ", ".join(n for n, _ in list_queries())
        raise LakeError(f"unknown query {name!r}; known: {known}")
    return p.read_text()


def run_query(name: str, lake: str | Path, run: str | None = None,
              params: dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Run ``queries/NAME.sql`` over the lake: (column names, rows)."""
    sql = query_sql(name)
    con = connect(lake, run=run, params=params, sql=sql)
    return fetch(con, sql)


def scan_events(path: str | Path):
    """The events table as a polars LazyFrame (hive-partitioned scan)."""
    import polars as pl

    lake = storage.resolve(path)
    if not lake.is_dir():
        raise LakeError(f"lake not found: {lake}")
    files = list((lake / "events").glob("run_id=*/*.parquet"))
    if not files:
        return pl.LazyFrame(schema={f.name: pl.from_arrow(pa.array([], f.type)).dtype for f in EVENTS_SCHEMA})
    if storage.is_remote(lake):  # through the lake's s3fs filesystem (the files carry run_id)
        import pyarrow.dataset as ds

        return pl.scan_pyarrow_dataset(
            ds.dataset([f.key for f in files], filesystem=lake.fs, format="parquet", schema=EVENTS_SCHEMA))
    return pl.scan_parquet(str(lake / "events" / "run_id=*" / "*.parquet"), hive_partitioning=True)
