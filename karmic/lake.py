"""Reading the lake: DuckDB views, named queries and a polars scan. Imports no torch and no env.

``connect(path, run=None, params=None)`` returns an in-memory DuckDB connection with these views
(``path``: a directory or ``s3://bucket/prefix``, read through s3fs, see ``pipelines.storage``):

Each table view reads the table's committed parts, learned from its commit log
(``<lake>/_log/<table>/``, ``pipelines.commits``: one listing; the paths reach DuckDB as a list
in a variable and binding reads one footer per schema, see :func:`_table_view`), or, in a lake
written before the log, every ``<lake>/<table>/run_id=*/*.parquet`` (docs/lake.md).
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
  environment ``config`` as JSON (``json_extract(config, '$.ledger_decay')``), and a training
  run's ``memory_size`` (its TVT memory rows; null for runs that do not record one);
- ``conditions`` the registry of conditions (``karmic.conditions.table_rows``): condition,
  display_order, agent, spawns, transport, shaping, policy, trained, color, linestyle, marker,
  claim, controls_for, yoke (a yoked condition's partner); queries order conditions by joining it (``left join conditions using
  (condition)``, ``order by display_order nulls last``), so a new condition needs no SQL edit;
- ``eval_agents`` over ``<lake>/eval_agents/run_id=*/part-*.parquet``: for ``karmic evaluate``'s
  runs (kind ``eval``), each agent's role (focal | background | solo | frozen) and policy;
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
committed ``*.parquet`` makes a query that reads it fail with one line naming the file
(``LakeError``); a part no commit names is not read (``karmic lake check`` reports both). A bare
``karmic sql "select count(*) from <table>"`` is answered from the log's row counts without
opening a part (``karmic.commands._fast``).

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
    EVAL_AGENTS_SCHEMA,
    EVENTS_SCHEMA,
    LEGACY_STATUSES,
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
     for c in RUNS_COLUMNS] + [("config", pa.string()), ("memory_size", pa.int64())]
)


RUNS_FOLDER = "_folder"  # a compacted runs file's column: the run's folder (``run_id=<id>``)


def _runs_table(lake: LakePath) -> pa.Table:
    """One row per run: the compacted runs files (``pipelines.compact``: finished runs, one read
    each), then the ``run.json`` of every run folder they do not hold or that was reopened since
    (``pipelines.commits.reopened``), in folder-name order."""
    compacted = compacted_runs(lake)
    if compacted is not None and (again := commits.reopened(lake)):  # their run.json is newer
        import pyarrow.compute as pc

        compacted = compacted.filter(pc.invert(pc.is_in(compacted.column(RUNS_FOLDER), pa.array(sorted(again)))))
    skip = set(compacted.column(RUNS_FOLDER).to_pylist()) if compacted is not None else set()
    if storage.is_remote(lake):
        paths = [p for p in sorted((lake / "runs").glob("run_id=*/run.json")) if p.parent.name not in skip]
        try:
            raws = storage.read_many(paths)  # object storage: concurrent GETs
        except OSError as exc:
            raise LakeError(f"unreadable run.json in the lake: {exc}") from None
        folders = [p.parent.name for p in paths]
    else:  # one listing, names sorted as strings (sorting 200,000 Paths took 11 s), no stat per run
        folders, raws = _read_run_jsons(lake / "runs", skip)
    rows = [run_row(lake, folder, raw) for folder, raw in zip(folders, raws, strict=True)]
    if compacted is None:
        return pa.Table.from_pylist(rows, schema=_RUNS_SCHEMA)
    table = pa.Table.from_pylist(rows, schema=_RUNS_SCHEMA).append_column(RUNS_FOLDER, pa.array(folders, pa.string()))
    both = pa.concat_tables([compacted.select(table.column_names).cast(table.schema), table])
    return both.sort_by(RUNS_FOLDER).drop_columns([RUNS_FOLDER])


def compacted_runs(lake: LakePath) -> pa.Table | None:
    """The rows of the compacted runs files named in ``_log/runs/_compacted/`` (with their
    ``_folder`` column), None where there is none."""
    import pyarrow.parquet as pq

    found = sorted((c for n in commits._listdir(commits.compaction_dir(lake, "runs"))
                    if (c := commits.parse_done(n)) is not None), key=lambda c: c.cid)
    if not found:
        return None
    tables = []
    for c in found:
        path = c.path(lake, "runs")
        try:
            tables.append(storage.read_parquet(path) if storage.is_remote(path) else pq.read_table(path))
        except (OSError, pa.ArrowException) as exc:
            raise LakeError(f"unreadable compacted runs file in the lake: {path} ({_first_line(exc)})") from None
    out = pa.concat_tables(tables, promote_options="default")
    if len(tables) > 1:  # a run in two files (two compactions that raced): read once
        import pyarrow.compute as pc

        first = pc.equal(pa.array(range(out.num_rows)), pc.index_in(out.column(RUNS_FOLDER), out.column(RUNS_FOLDER)))
        out = out.filter(first)
    return out


def run_row(lake: LakePath, folder: str, raw: bytes) -> dict[str, Any]:
    """The ``runs`` view's row of one ``run.json`` (``folder``: ``run_id=<id>``)."""
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        raise LakeError(f"unreadable run.json in the lake: {lake / 'runs' / folder / 'run.json'} ({exc})") from None
    row = {c: meta.get(c) for c in RUNS_COLUMNS}
    row["run_id"] = row["run_id"] or folder.split("=", 1)[1]
    for c in ("grid_size", "seed", "n_agents", "num_envs"):
        row[c] = int(row[c]) if isinstance(row[c], (int, float)) else None
    # the learner of a training run; runs written before learners had names are ppo
    tc = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
    row["algo"] = row["algo"] or tc.get("algo") or ("ppo" if meta.get("kind") == "train" else None)
    for c in ("kind", "condition", "policy", "status", "started_at", "finished_at", "algo"):
        row[c] = None if row[c] is None else str(row[c])
    row["status"] = LEGACY_STATUSES.get(row["status"], row["status"])  # one vocabulary
    row["config"] = json.dumps(meta.get("config") or {})
    # a training run's TVT memory rows (the window of the transport checks, _transport_targets.sql)
    ms = tc.get("memory_size")
    row["memory_size"] = int(ms) if isinstance(ms, (int, float)) and not isinstance(ms, bool) else None
    return row


def _read_run_jsons(runs: Path, skip: set[str] = frozenset()) -> tuple[list[str], list[bytes]]:
    """``runs/run_id=*/run.json`` of a local lake, in folder-name order: (folder names, contents)
    (strings, not Paths: at 200,000 runs, building and sorting Paths cost more than the reads)."""
    try:
        dirs = sorted(n for n in os.listdir(runs) if n.startswith("run_id=") and n not in skip)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    base = str(runs)
    folders, raws = [], []
    for n in dirs:
        p = f"{base}/{n}/run.json"
        try:
            with open(p, "rb") as f:
                raws.append(f.read())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue  # a run folder without its run.json (yet), as the glob skipped it
        except OSError as exc:
            raise LakeError(f"unreadable run.json in the lake: {exc}") from None
        folders.append(n)
    return folders, raws


def _runs_table_empty() -> pa.Table:
    return pa.Table.from_pylist([], schema=_RUNS_SCHEMA)


# a part's run id from its path (``.../<table>/run_id=<id>/<part>``): what hive partitioning gives,
# without DuckDB's hive check of every path at bind (which grows with the number of files)
_RUN_ID_FROM_PATH = r"regexp_extract(filename, '/run_id=([^/]*)/[^/]*$', 1)"


def _table_view(con: duckdb.DuckDBPyConnection, lake: LakePath, table: str, schema: pa.Schema,
                run: str | None = None) -> str:
    """The view's SELECT: from the commit log (``pipelines.commits``) where the table has one;
    else, a lake from before the log, a glob of every part (every footer read to bind).

    From the log: the committed parts' paths go to DuckDB as a list in a variable
    (``_karmic_files_<table>_<n>``, one per schema, set as a prepared parameter, so no SQL text
    grows with the lake), read by ``read_parquet(getvariable(...))`` without hive partitioning:
    binding reads the first file's footer and nothing else (the files are opened when a query
    scans them), and ``run_id`` comes from each part's path, as the glob's hive partitioning
    gives it. Binding costs one name per listed part; parts a compaction covers
    (``pipelines.compact``) are read from its few large files instead, ``run_id`` a column in
    them, and cost nothing more to bind as the lake grows (docs/lake.md)."""
    if commits.is_ready(lake, table):
        by_schema, compacted = commits.layout(lake, table, run)
        if not by_schema and not compacted:
            return _empty_select(schema)
        base = str(lake / table)
        selects = []
        for i, parts in enumerate(by_schema.values()):
            var = f"_karmic_files_{table}_{i}"
            con.execute(f"set variable {var} = ?", [[f"{base}/run_id={r}/{p}" for r, p in parts]])
            selects.append(
                f"select * exclude (filename) replace ({_RUN_ID_FROM_PATH} as run_id) "
                f"from read_parquet(getvariable('{var}'), hive_partitioning = false, filename = true)")
        # compacted files (pipelines.compact) hold many runs' rows, run_id a real column
        for i, comps in enumerate(compacted.values()):
            var = f"_karmic_compacted_{table}_{i}"
            con.execute(f"set variable {var} = ?", [[str(c.path(lake, table)) for c in comps]])
            selects.append(f"select * from read_parquet(getvariable('{var}'), hive_partitioning = false)")
        return " union all by name ".join(selects)
    files = list((lake / table).glob("run_id=*/*.parquet"))
    if not files:
        return _empty_select(schema)
    glob = str(lake / table / "run_id=*" / "*.parquet")
    return f"select * from read_parquet({_quote(glob)}, hive_partitioning = true, union_by_name = true)"


TABLE_VIEWS = ("events", "episodes", "tvt_transports", "actions", "eval_agents")


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


# the prefixes a connection's snapshot of an object-storage lake lists once (pipelines.storage)
SNAPSHOT_TABLES = ("runs", "_log", "events", "episodes", "tvt_transports", "actions", "eval_agents")


def connect(path: str | Path, run: str | None = None, params: dict[str, Any] | None = None,
            check_run: bool = True, sql: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake's views (see the module docstring); ``sql``: only the
    views that statement needs (:func:`views_needed`)."""
    need = None if sql is None else views_needed(sql) | ({"events"} if run and check_run else set())
    # s3: read through a filesystem holding the lake's listing as of now (pipelines.storage)
    lake = storage.snapshot(storage.resolve(path), SNAPSHOT_TABLES)
    if not lake.is_dir():
        raise LakeError(f"lake not found: {lake} (create one with `karmic simulate --lake {lake}`)")
    check_is_lake(lake)
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
                              ("tvt_transports", TVT_TRANSPORTS_SCHEMA), ("actions", ACTIONS_SCHEMA),
                              ("eval_agents", EVAL_AGENTS_SCHEMA)):
            if need is not None and table not in need:
                continue
            body = _table_view(con, lake, table, schema, run)
            # files written before a column of the schema existed: it reads as null, so a query
            # over an older lake binds instead of failing on the missing column
            have = {r[0] for r in con.execute(f"describe select * from ({body})").fetchall()}
            missing = "".join(f', null::{_DUCK_TYPES[f.type]} as "{f.name}"' for f in schema if f.name not in have)
            con.execute(f"create view {table} as select *{missing} from ({body}){where}")
    except duckdb.Error as exc:
        raise LakeError(_first_line(exc)) from None
    con.execute(f"create view runs as select * replace (config::json as config) from _karmic_runs{where}")
    register_conditions(con)
    create_shared_views(con, need)
    if run and check_run:
        known = run in set(runs.column("run_id").to_pylist())
        if not known:
            known = bool(guard(con, "select count(*) from events")[0][0])
        if not known:
            raise LakeError(f"run not found in {lake}: {run}")
    set_params(con, params)
    return con


CONDITIONS_SCHEMA = pa.schema([
    ("condition", pa.string()), ("display_order", pa.int32()), ("agent", pa.string()),
    ("spawns", pa.string()), ("transport", pa.string()), ("shaping", pa.string()), ("policy", pa.string()),
    ("trained", pa.bool_()), ("color", pa.string()), ("linestyle", pa.string()), ("marker", pa.string()),
    ("claim", pa.string()), ("controls_for", pa.string()), ("yoke", pa.string()),
])


def register_conditions(con: duckdb.DuckDBPyConnection) -> None:
    """The registry (karmic.conditions) as the table ``conditions`` of this connection."""
    from karmic.conditions import table_rows

    con.register("_karmic_conditions", pa.Table.from_pylist(table_rows(), schema=CONDITIONS_SCHEMA))
    con.execute("create or replace view conditions as select * from _karmic_conditions")


LAKE_FOLDERS = ("runs", "events", "episodes", "actions", "tvt_transports", "trajectories", "checkpoints")


def check_is_lake(lake: LakePath) -> None:
    """A local folder with files but none of a lake's folders is not a lake (a mistyped --lake
    would otherwise answer every query with 0 rows); an empty folder is an empty lake."""
    if not isinstance(lake, Path):
        return
    entries = [p.name for p in lake.iterdir() if not p.name.startswith(".")]
    if entries and not any(name in LAKE_FOLDERS for name in entries):
        raise LakeError(f"not a lake: {lake} (no runs/, events/ or episodes/ folder in it; "
                        f"--lake or $KARMIC_LAKE names the folder `karmic simulate` wrote)")


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
# social quantities (hits by the ledger rule, Gini, eating), the welfare and matchmaker quantities
# (Gini of returns, encounters, rigged pairs hit back), the late-training per-seed metrics of
# the ablation and their per-cell statistics, and every TVT transport with what its target step was
SHARED_VIEWS = ("_t975", "_episode_totals", "_episode_social", "_episode_welfare", "_late_seed_metrics",
                "_late_cell_stats", "_transport_targets")


def create_shared_views(con: duckdb.DuckDBPyConnection, only: set[str] | None = None) -> None:
    """The views the named queries share, over a connection that has ``events``, ``episodes`` and
    ``runs``: ``ledger_hits`` (every ZAP_HIT classified by the ledger rule) and SHARED_VIEWS.
    ``default_ledger_decay`` (karmic.ledger.DEFAULT_DECAY) is the decay of a run whose config
    does not record one; ``default_late_fraction`` and ``default_min_hits`` (karmic.definitions)
    are used where ``late_fraction`` / ``min_hits`` are not set."""
    from karmic.definitions import LATE_FRACTION, MIN_HITS
    from karmic.ledger import DEFAULT_DECAY

    con.execute(f"set variable default_ledger_decay = {float(DEFAULT_DECAY)!r}")
    # the one definition of "late" and of min_hits (karmic.definitions) as the SQL's defaults
    con.execute(f"set variable default_late_fraction = {float(LATE_FRACTION)!r}")
    con.execute(f"set variable default_min_hits = {int(MIN_HITS)}")
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


def query_variables(name: str) -> set[str]:
    """The variables ``queries/NAME.sql`` reads with ``getvariable('...')``, its own and those of
    the shared views it selects from (``late_fraction`` of late_seed_metrics ...); the ``default_*``
    variables the connection sets are not the user's to give."""
    texts = [query_sql(name)]
    own = texts[0]
    for view in SHARED_VIEWS:
        body = (queries_dir() / f"{view}.sql").read_text()
        created = re.search(r"create or replace view (\w+)", body)
        if created and re.search(rf"\b{created.group(1)}\b", own):
            texts.append(body)
    if "late_cell_stats" in own:  # built on late_seed_metrics
        texts.append((queries_dir() / "_late_seed_metrics.sql").read_text())
    found = set()
    for t in texts:
        found |= set(re.findall(r"getvariable\('([A-Za-z_][A-Za-z0-9_]*)'\)", t))
    return {v for v in found if not v.startswith("default_")}


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
