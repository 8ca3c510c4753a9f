"""``karmic study report``: verdicts, cell tables, figures and the metrics that travel.

Two stages, so a report can be rebuilt without the lake:

1. **lake -> metrics** (``queries/study/metrics.sql``): one row per run x episode of the study's
   runs, every count a metric needs; written to ``results/<study>/metrics.parquet`` with
   ``runs.json`` (each run's status, steps, wall time, versions and ``plan``). Runs that the
   folder already holds, completed under the study's plan of today, and that this lake has not
   completed are **carried**: their rows and entries stay (``"carried": true``), so a study
   whose lakes do not outlive a machine accumulates its cells in the committed folder
   (``pipelines.study.carried_runs``).
2. **metrics -> everything else**: an in-memory DuckDB over metrics.parquet and the study file
   (``study_windows``, ``study_predictions``) runs ``queries/study/verdicts.sql``, ``cells.sql``
   and ``curves.sql``; the figures are drawn from those rows. ``--from-results`` runs stage 2
   alone, so its verdicts.json, report.md and figures equal those built from the lake.

No number in the report is computed in Python: verdicts, CIs and Holm's correction are the SQL's.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from karmic import conditions as conditions_registry
from karmic.definitions import LATE_WINDOW, late_label, window_fraction
from karmic.lake import register_conditions
from pipelines.study import (
    EVAL_METRICS,
    METRICS,
    Study,
    StudyError,
    carried_runs,
    cell_plan,
    cells_table,
    row_key,
    task_plan,
)

RESULTS_FILES = ("metrics.parquet", "runs.json")
# metrics.sql columns newer than some results/ on disk (read as NULL there): transported_amount
# (issue 33's studies/tvt-speed.toml)
ADDED_COLUMNS = ("transported_amount",)
# metrics.sql's order (a total order: one row per run x episode); the merged table is sorted again
METRICS_ORDER = ("grid_size", "level", "condition", "seed", "run_id", "episode")
# the figures: metric, title, y label
FIGURES = (
    ("predatory_hits_per_agent_step", "Predatory hits per agent-step", "predation hits / agent-step"),
    ("hits_per_agent_step", "Hits per agent-step", "ZAP_HIT / agent-step"),
    ("zaps_fired_per_agent_step", "Zaps fired per agent-step", "ZAP_FIRED / agent-step"),
    ("apples_per_agent_step", "Apples per agent-step", "APPLE_EATEN / agent-step"),
    ("retribution_ratio", "Retribution ratio", "retribution hits / hits"),
    ("total_debt", "Total ledger debt at episode end", "debt"),
)
MIN_RATIO_HITS = 20  # a retribution ratio resting on fewer hits (all seeds of a bin) is not drawn
# A figure draws a 95% CI (band or whiskers) only where it rests on this many seeds: with 2 the
# t-interval is the mean +- 12.7 standard errors (1 degree of freedom), which fills the panel and
# hides every line in it. The verdict tables give every CI, whatever the seeds.
MIN_BAND_SEEDS = 3
TABLE_METRICS = ("predatory_hits_per_agent_step", "hits_per_agent_step", "zaps_fired_per_agent_step",
                 "apples_per_agent_step", "retribution_ratio", "total_debt")


def _sql(name: str) -> str:
    from karmic.lake import queries_dir

    return (queries_dir() / "study" / f"{name}.sql").read_text()


# --- stage 1: the lake -> metrics.parquet ------------------------------------------------------------
def study_runs(study: Study, lake: str) -> list[dict[str, Any]]:
    """The study's cells with the run ids of its manifest (a retried scripted cell's new id)."""
    from pipelines.sweep import read_manifest

    try:
        manifest = read_manifest(lake, study.sweep_id)
    except ValueError:
        manifest = None
    return cells_table(study, manifest), manifest


def extract_metrics(study: Study, lake: str, out_dir: Path) -> list[str]:
    """Stage 1 into ``out_dir``; returns the run ids carried from what ``out_dir`` held."""
    from karmic.lake import SNAPSHOT_TABLES, LakeError, connect
    from pipelines import storage
    from pipelines.study import Cell
    from pipelines.sweep import DONE_STATUSES

    cells, manifest = study_runs(study, lake)
    try:
        con = connect(lake)
    except LakeError as exc:
        raise StudyError(str(exc)) from None
    meta = {r[0]: r[1:] for r in con.execute(
        "select run_id, status, kind, started_at, finished_at from runs").fetchall()}
    done = [c for c in cells if meta.get(c["run_id"], (None,))[0] in DONE_STATUSES]
    done_keys = {row_key(c) for c in done}
    carry = carried_runs(study, out_dir)
    carried = {k: r for k, r in carry.runs.items() if k not in done_keys}
    if not done and not carried:
        raise StudyError(f"no completed run of study {study.name} in {lake}; run: karmic study run {study.name}")
    # one listing of an object-storage lake for all the runs' connections, not one a run
    snap = storage.snapshot(storage.resolve(lake), SNAPSHOT_TABLES)
    parts = [run_metrics(snap, c) for c in done]
    if carried:
        old = pq.read_table(out_dir / "metrics.parquet")
        for c in ADDED_COLUMNS:  # carried rows from before a column existed: unknown (null)
            if c not in old.column_names:
                old = old.append_column(c, pa.nulls(old.num_rows, pa.float64()))
        if parts and not old.schema.equals(parts[0].schema):
            old = _widen(old, parts[0].schema)
            if old is None:
                raise StudyError(
                    f"cannot carry {len(carried)} run(s): {out_dir / 'metrics.parquet'} has other columns than "
                    f"queries/study/metrics.sql makes now; report into another --out, or rebuild it from a lake")
        keep = pa.array(sorted(r["run_id"] for r in carried.values()))
        parts.append(old.filter(pc.is_in(old.column("run_id"), value_set=keep)))
    table = pa.concat_tables(parts).sort_by([(k, "ascending") for k in METRICS_ORDER]).combine_chunks()
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / "metrics.parquet", compression="zstd")
    entries = {e["run_id"]: e for e in (manifest or {}).get("tasks", [])}
    runs = []
    for c in cells:
        key = row_key(c)
        if key in carried:
            runs.append({**carried[key], "carried": True})
            continue
        rid = c["run_id"]
        text = _read_run_json(lake, rid)
        e = entries.get(rid)
        status = meta.get(rid, (None,))[0]
        # a completed run the manifest does not know: what it ran with is not known either
        plan = (task_plan(e) if e is not None else
                None if status in DONE_STATUSES else
                cell_plan(study, Cell(c["condition"], c["grid_size"], c["level"], c["seed"])))
        e = e or {}
        runs.append({
            **c, "status": status, "seconds": e.get("seconds"), "attempts": e.get("attempts"),
            "seconds_all": e.get("seconds_all"), "attempts_timed": e.get("attempts_timed"),
            "global_step": e.get("global_step"), "host": e.get("host"),
            "versions": (text or {}).get("versions"),
            "precision": ((text or {}).get("train_config") or {}).get("precision"),
            "plan": plan, "carried": False,
        })
        yoke = ((text or {}).get("train_config") or {}).get("tvt_yoke_run")
        if yoke:  # a yoked run: the partner run whose transports it replayed (the plan does not say)
            runs[-1]["yoke_run"] = yoke
    (out_dir / "runs.json").write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")
    return sorted(r["run_id"] for r in carried.values())


def run_metrics(lake: Any, cell: dict[str, Any]) -> pa.Table:
    """metrics.parquet's rows of one run (``cell``: a cells_table row), read from ``lake`` (a path
    or a ``storage.snapshot``). One run at a time, on views of that run's files only: each row is
    one run's episode, and the memory is one run's (12 TVT runs at 10x10 at once took 20 GB beside
    a study's workers: the OOM killer ended the report)."""
    from karmic.lake import LakeError, connect, query_sql

    ledger = f"create temp view ledger_debt as {query_sql('ledger_debt').strip().rstrip(';')}"
    try:
        run_con = connect(lake, run=cell["run_id"], check_run=False, sql=_sql("metrics") + ledger)
    except LakeError as exc:
        raise StudyError(str(exc)) from None
    with run_con:
        run_con.register("study_cells", pa.Table.from_pylist([cell]))
        run_con.execute(ledger)
        return run_con.sql(_sql("metrics")).to_arrow_table()


def _widen(old: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """``old`` (a metrics.parquet written before metrics.sql gained columns) in ``schema``: the
    columns it lacks are null (its runs' episodes were not measured so; e.g. the welfare columns
    of issue 32); None when it has a column ``schema`` does not, or one of another type."""
    if not set(old.column_names) <= set(schema.names):
        return None
    cols = []
    for f in schema:
        if f.name not in old.column_names:
            cols.append(pa.nulls(old.num_rows, f.type))
        elif old.schema.field(f.name).type != f.type:
            return None
        else:
            cols.append(old.column(f.name))
    return pa.Table.from_arrays(cols, schema=schema)


def _read_run_json(lake: str, run_id: str) -> dict[str, Any] | None:
    from pipelines.storage import read_text, resolve

    text = read_text(resolve(lake) / "runs" / f"run_id={run_id}" / "run.json")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def copy_policies(lake: str, out_dir: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copy each trained run's kept policies (``<lake>/policies/run_id=<id>/*.pt``, fp16 weights
    only: ``pipelines.checkpoints``) to ``out_dir/policies/<run_id>/``; a completed run that
    predates kept policies gets ``final.pt`` from its last checkpoint. Carried runs keep the files
    the folder has. Writes and returns ``policies/index.json`` (one entry per file)."""
    import io

    import torch

    from pipelines.checkpoints import (
        compact_policy,
        list_checkpoints,
        list_policies,
        load_checkpoint,
    )
    from pipelines.storage import write_atomic
    from pipelines.sweep import DONE_STATUSES

    root = out_dir / "policies"
    for r in runs:
        if r.get("carried") or r.get("scripted") or r.get("status") not in DONE_STATUSES:
            continue
        rid = r["run_id"]
        dest = root / rid
        files = {p.name: p for p in list_policies(lake, rid)}
        if "final.pt" not in files and list_checkpoints(lake, rid):
            buf = io.BytesIO()
            torch.save(compact_policy(load_checkpoint(list_checkpoints(lake, rid)[-1])), buf)
            write_atomic(dest / "final.pt", lambda f, b=buf.getvalue(): f.write(b))
        for name, src in files.items():
            write_atomic(dest / name, lambda f, b=src.read_bytes(): f.write(b))
    index = []
    by_id = {r["run_id"]: r for r in runs}
    for p in sorted(root.glob("*/*.pt")) if root.is_dir() else []:
        r = by_id.get(p.parent.name, {})
        index.append({"file": str(p.relative_to(out_dir)), "run_id": p.parent.name, "name": p.stem,
                      "condition": r.get("condition"), "grid_size": r.get("grid_size"), "level": r.get("level"),
                      "seed": r.get("seed"), "bytes": p.stat().st_size})
    if index:
        (root / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


EVAL_COLUMNS = ("apples_per_agent_step", "hits_given_per_agent_episode", "hits_taken_per_agent_episode",
                "predation_per_agent_episode", "predation_per_encounter")


def play_evaluations(study: Study, lake: str, out_dir: Path, runs: list[dict[str, Any]],
                     seeds: set[int] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Play the study's ``[[evaluations]]`` on the kept policies of ``out_dir/policies/`` into
    ``lake`` (one eval run per evaluation, grid, level and seed, run id
    ``<study>-eval-<id>-<level>-g<G>-s<S>``; a finished one in the lake is reused): (rows, skipped),
    one row per eval run and role (queries/eval_summary.sql) with the cell it belongs to, and a
    line per cell without its policy file. A grid that is pending, or none of whose cells has
    finished, is left out. ``seeds``: only those seeds' cells (default: all)."""
    from pipelines import evaluate as E
    from pipelines.sweep import DONE_STATUSES, is_done, run_status

    done = {(r["condition"], r["grid_size"], r["level"], r["seed"]): r["run_id"] for r in runs
            if r.get("status") in DONE_STATUSES or r.get("carried")}
    # a grid none of whose cells has finished is not played yet (as a pending one), not "skipped":
    # a report written before its first cell and one written after the grid was released agree
    ran = {k[1] for k in done}
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for ev in study.evaluations:
        for c in study.cells():
            if (c.condition != ev["focal"] or c.grid_size in study.pending or c.grid_size not in ran
                    or (seeds is not None and c.seed not in seeds)):
                continue
            key = (c.grid_size, c.level, c.seed)
            names = [ev["focal"]] + ([ev["background"]] if ev["background"] else [])
            sources = []
            for cond in names:
                if cond in E.SCRIPTED:
                    sources.append(E.Source(cond, "scripted", "scripted"))
                    continue
                rid = done.get((cond, *key))
                path = out_dir / "policies" / str(rid) / f"{ev['policy']}.pt"
                if rid is None or not path.is_file():
                    skipped.append(f"{ev['id']} g{c.grid_size} {c.level} s{c.seed}: no {ev['policy']}.pt of {cond}")
                    break
                src = E.resolve_source(str(path))
                src.label = f"{cond}-s{c.seed}"
                sources.append(src)
            else:
                config = E.env_config_for(sources)
                sc = E.Scenario(ev["scenario"], sources[0], sources[1] if len(sources) > 1 else None, ev["n_focal"])
                base = f"{study.name}-eval-{ev['id']}-{c.level}-g{c.grid_size}-s{c.seed}"
                rid, n = base, 1
                while run_status(lake, rid) is not None and not is_done(lake, rid):
                    n += 1
                    rid = f"{base}-r{n}"
                if not is_done(lake, rid):
                    E.run_scenario(lake, sc, config, ev["episodes"], c.seed, run_id=rid)
                cols, res = E.summary(lake, [rid])
                for r in res:
                    row = dict(zip(cols, r, strict=True))
                    rows.append({"evaluation": ev["id"], "grid_size": c.grid_size, "level": c.level, "seed": c.seed,
                                 "policy_file": ev["policy"], **{k: _clean(v) for k, v in row.items()}})
    return rows, skipped


def run_evaluations(study: Study, lake: str, out_dir: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`play_evaluations` into the study's lake, written to ``out_dir/evaluations.json``
    (``rows`` and ``skipped``); a study without evaluations has no such file. Returns the rows."""
    if not study.evaluations:
        (out_dir / "evaluations.json").unlink(missing_ok=True)
        return []
    rows, skipped = play_evaluations(study, lake, out_dir, runs)
    (out_dir / "evaluations.json").write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=1,
                                                         sort_keys=True) + "\n")
    return rows


def _eval_key(r: dict[str, Any]) -> tuple:
    return (r.get("evaluation"), r.get("grid_size"), r.get("level"), r.get("seed"), r.get("role"), r.get("policy"))


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        import math

        return (isinstance(x, (int, float)) and isinstance(y, (int, float))
                and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12))
    return x == y


def check_evaluations(study: Study, out_dir: Path, seeds: set[int] | None = None) -> tuple[int, list[str]]:
    """Play every evaluation again from the kept policies of ``out_dir/policies/`` into a scratch
    lake (never the study's) and compare with ``out_dir/evaluations.json``: (rows compared, one
    line per difference). Every column but the eval run's id must be equal (floats to 1e-9).
    ``seeds``: check only those seeds' rows (a 10-episode 30x30 eval run is a few seconds of CPU: docs/performance.md)."""
    import tempfile

    path = out_dir / "evaluations.json"
    if not study.evaluations:
        raise StudyError(f"study {study.name} declares no [[evaluations]]: nothing to check")
    if not path.is_file():
        raise StudyError(f"no {path}: build it from the lake first (karmic study report {study.name})")
    if not (out_dir / "runs.json").is_file():
        raise StudyError(f"no {out_dir / 'runs.json'}: check a results folder built from a lake")
    old = json.loads(path.read_text())
    runs = json.loads((out_dir / "runs.json").read_text())
    with tempfile.TemporaryDirectory(prefix="karmic-eval-check-") as scratch:
        rows, skipped = play_evaluations(study, str(Path(scratch) / "lake"), out_dir, runs, seeds)
    problems = []
    old_skipped = [x for x in old.get("skipped", []) if seeds is None or int(x.split(":")[0].rsplit(" s", 1)[1]) in seeds]
    if sorted(skipped) != sorted(old_skipped):
        problems.append(f"skipped: {sorted(old_skipped)} in evaluations.json, {sorted(skipped)} now")
    want = {_eval_key(r): r for r in old.get("rows", []) if seeds is None or r.get("seed") in seeds}
    got = {_eval_key(r): r for r in rows}
    for k in sorted(set(want) | set(got), key=str):
        name = "{} g{} {} s{} {} {}".format(*k)
        if k not in got:
            problems.append(f"{name}: in evaluations.json, not played again (its policy file is missing?)")
        elif k not in want:
            problems.append(f"{name}: played again, not in evaluations.json")
        else:
            for col in sorted((set(want[k]) | set(got[k])) - {"run_id"}):
                if not _same(want[k].get(col), got[k].get(col)):
                    problems.append(f"{name}: {col} = {want[k].get(col)} in evaluations.json, {got[k].get(col)} now")
    return len(rows), problems


def evaluation_section(out_dir: Path) -> list[str]:
    """report.md's evaluations: the mean over seeds of each (evaluation, grid, level, role, policy
    condition), in SQL over evaluations.json's rows."""
    path = out_dir / "evaluations.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if not data.get("rows"):
        return ["## Evaluations", "", "No evaluation could be played: " + "; ".join(data.get("skipped", [])), ""]
    con = duckdb.connect()
    con.register("ev", pa.Table.from_pylist(data["rows"]))
    means = ", ".join(f"avg({c}) as {c}" for c in EVAL_COLUMNS)
    res = con.sql(f"select evaluation, any_value(scenario) as scenario, grid_size, level, role, "
                  f"regexp_replace(policy, '-s[0-9]+$', '') as policy, count(distinct seed) as seeds, {means} "
                  f"from ev group by evaluation, grid_size, level, role, regexp_replace(policy, '-s[0-9]+$', '') "
                  f"order by evaluation, grid_size, level, role desc, policy")
    head = ["evaluation", "scenario", "grid", "level", "role", "policy", "seeds", *EVAL_COLUMNS]
    out = ["## Evaluations", "",
           "`karmic evaluate` scenarios on the kept policies (docs/evaluation.md); means over seeds; per seed in "
           "`evaluations.json`.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res.fetchall():
        out.append("| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in r) + " |")
    if data.get("skipped"):
        out += ["", "Not played: " + "; ".join(data["skipped"])]
    return [*out, ""]


# --- stage 2: metrics -> verdicts, tables, curves ------------------------------------------------
# columns metrics.parquet gained after results/ablation and results/ecology were written
LATER_METRIC_COLUMNS = {"equality": "double", "equality_apples": "double", "sustainability": "double",
                        "encounters": "bigint", "rigged_pairs": "bigint", "rigged_pairs_hit_back": "bigint",
                        "transported_amount": "double"}

# verdicts.sql's columns for evaluation predictions: dropped from a training prediction's verdict,
# so the verdicts.json of a study without evaluation predictions is what it was before them
EVAL_VERDICT_KEYS = ("source", "a_evaluation", "b_evaluation")


def eval_rows_table(study: Study, evaluations_path: Path) -> pa.Table:
    """evaluations.json's rows as ``study_eval_rows`` (queries/study/_eval_values.sql): the cell
    keys, the role and the EVAL_METRICS; no file, or a study without evaluations: no rows."""
    schema = pa.schema([("evaluation", pa.string()), ("grid_size", pa.int64()), ("level", pa.string()),
                        ("seed", pa.int64()), ("role", pa.string())]
                       + [(m, pa.float64()) for m in EVAL_METRICS])
    rows = []
    if study.evaluations and evaluations_path.is_file():
        rows = [{k: r.get(k) for k in schema.names} for r in json.loads(evaluations_path.read_text()).get("rows", [])]
    return pa.Table.from_pylist(rows, schema=schema)


def analysis_connection(study: Study, metrics_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    # metrics.parquet of an older report lacks the later per-episode columns: they read as null
    have = set(pq.read_schema(metrics_path).names)
    extra = "".join(f", null::{t} as {c}" for c, t in LATER_METRIC_COLUMNS.items() if c not in have)
    con.execute(f"create view study_metrics as select *{extra} from read_parquet('{_q(str(metrics_path))}')")
    register_conditions(con)  # the registry, for queries that order or group by it
    con.register("study_windows", pa.Table.from_pylist(
        [{"name": n, "lo": lo, "hi": hi} for n, (lo, hi) in study.windows.items()]))
    focal = {e["id"]: e["focal"] for e in study.evaluations}
    preds = []
    for p in study.predictions:
        source = p.get("source", "training")
        row = {"id": p["id"], "claim": p["claim"], "source": source, "metric": p["metric"], "test": p["test"],
               "margin": None if p["margin"] is None else float(p["margin"]),
               "margin_abs": None if p["margin_abs"] is None else float(p["margin_abs"])}
        for s in ("a", "b"):
            for k in ("condition", "level", "window", "evaluation"):
                row[f"{s}_{k}"] = None if k not in p[s] else str(p[s][k])
            row[f"{s}_grid_size"] = None if "grid_size" not in p[s] else int(p[s]["grid_size"])
            if row[f"{s}_evaluation"] is not None:  # an evaluation side: its focal condition's policies
                row[f"{s}_condition"] = focal[row[f"{s}_evaluation"]]
        row["b_value"] = p["b"].get("value")
        preds.append(row)
    schema = pa.schema([("id", pa.string()), ("claim", pa.string()), ("source", pa.string()), ("metric", pa.string()),
                        ("test", pa.string()), ("margin", pa.float64()), ("margin_abs", pa.float64())]
                       + [(f"{s}_{k}", pa.int64() if k == "grid_size" else pa.string())
                          for s in ("a", "b") for k in ("condition", "level", "window", "evaluation", "grid_size")]
                       + [("b_value", pa.float64())])
    con.register("study_predictions", pa.Table.from_pylist(preds, schema=schema))
    con.register("study_eval_rows", eval_rows_table(study, metrics_path.parent / "evaluations.json"))
    from karmic.lake import queries_dir

    con.execute((queries_dir() / "_t975.sql").read_text())  # the t table every query shares
    for name in ("_t_sf", "_metric_values", "_seed_values", "_eval_values"):
        con.execute(_sql(name))
    if study.decision is not None:
        con.register("study_decision_rule", pa.Table.from_pylist([study.decision]))
        con.register("study_levels", pa.Table.from_pylist(
            [{"grid_size": g, "level": lv} for g, lv in
             dict.fromkeys((c.grid_size, c.level) for c in study.cells() if c.condition == study.decision["condition"])],
            schema=pa.schema([("grid_size", pa.int64()), ("level", pa.string())])))
    return con


def _q(s: str) -> str:
    return s.replace("'", "''")


def _rows(con, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return None
        return float(f"{v:.12g}")  # stable text across platforms' last-digit noise
    return v


def analyse(study: Study, out_dir: Path) -> dict[str, Any]:
    metrics_path = out_dir / "metrics.parquet"
    if not metrics_path.is_file():
        raise StudyError(f"no {metrics_path}: build it from the lake first (karmic study report {study.name})")
    con = analysis_connection(study, metrics_path)
    verdicts = [{k: _clean(v) for k, v in r.items()
                 if r["source"] == "evaluation" or k not in EVAL_VERDICT_KEYS} for r in _rows(con, _sql("verdicts"))]
    cells = [{k: _clean(v) for k, v in r.items()} for r in _rows(con, _sql("cells"))]
    curves = [{k: _clean(v) for k, v in r.items()} for r in _rows(con, _sql("curves"))]
    decision = None
    if study.decision is not None:
        con.execute(f"create temp view study_cells as {_sql('cells').strip().rstrip(';')}")
        decision = [{k: _clean(v) for k, v in r.items()} for r in _rows(con, _sql("decision"))]
    summary = _rows(con, "select count(distinct run_id) as runs, count(*) as episodes, "
                         "sum(agent_steps) as agent_steps from study_metrics")[0]
    eval_cells = [{k: _clean(v) for k, v in r.items()} for r in _rows(con, _sql("eval_cells"))]
    eval_seeds = [{k: _clean(v) for k, v in r.items()} for r in _rows(
        con, "select * exclude (runs) from study_eval_values order by all")]
    return {"verdicts": verdicts, "cells": cells, "curves": curves, "decision": decision, "summary": summary,
            "eval_cells": eval_cells, "eval_seeds": eval_seeds}


# --- figures ----------------------------------------------------------------------------------------
def _seed_span(counts) -> str:
    """Seeds per point for a figure's title: "5", "3-4", or "no"."""
    ns = sorted({n for n in counts if n})
    return "no" if not ns else (f"{ns[0]}" if ns[0] == ns[-1] else f"{ns[0]}-{ns[-1]}")


def draw_figures(study: Study, curves: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from karmic import plots

    paths = []
    grids = study.grid_sizes
    from karmic import conditions as registry
    from karmic.plots import MARKERS, condition_style

    trained = [c for c in study.conditions if c in registry.names(trained=True)]
    series_keys = [(lv.name, c) for lv in study.levels for c in study.conditions]
    for metric, title, ylabel in FIGURES:
        rows = [r for r in curves if r["metric"] == metric]
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(grids), figsize=(5.2 * len(grids), 3.6), squeeze=False)
        lo_w, hi_w = study.windows["late"]
        for ax, g in zip(axes[0], grids, strict=True):
            if not any(r["grid_size"] == g for r in rows):
                plots._empty(ax, f"no {g}x{g} runs yet")
                ax.set_title(f"{g}x{g}")
                continue
            # the late window the verdicts read, shaded on every learning curve
            steps = study.total_steps.get(g) or 0
            if steps and trained:
                ax.axvspan(lo_w * steps, hi_w * steps, color="#999999", alpha=0.18, lw=0, zorder=0,
                           label=f"late window ({lo_w:g}-{hi_w:g} of steps)")
            levels_here = [lv.name for lv in study.levels if lv.grid_sizes is None or g in lv.grid_sizes]
            for lv, cond in series_keys:
                pts = [r for r in rows if r["grid_size"] == g and r["level"] == lv and r["condition"] == cond]
                if metric == "retribution_ratio":
                    pts = [r for r in pts if (r["den_total"] or 0) >= MIN_RATIO_HITS]
                if not pts:
                    continue
                # a condition's colour and line style are its record's (the same in every figure);
                # several levels: a marker per level
                colour, style, _ = condition_style(cond)
                marker = MARKERS[levels_here.index(lv) % len(MARKERS)] if len(levels_here) > 1 else None
                label = cond if len(levels_here) == 1 else f"{lv} / {cond}"
                if cond in trained:
                    xs = [r["step"] for r in pts]
                    ys = [r["mean"] for r in pts]
                    ax.plot(xs, ys, color=colour, ls=style, marker=marker, ms=3, label=label, lw=1.5)
                    banded = [(x, r["ci_low"], r["ci_high"]) for x, r in zip(xs, pts, strict=True)
                              if (r["n_seeds"] or 0) >= MIN_BAND_SEEDS and r["ci_low"] is not None]
                    if banded:
                        bx, lo, hi = zip(*banded, strict=True)
                        ax.fill_between(bx, lo, hi, color=colour, alpha=0.12, lw=0)
                else:
                    ax.axhline(pts[0]["mean"], color=colour, ls=style, lw=1.2, label=label)
            ax.set_title(f"{g}x{g}")
            ax.set_xlabel("env steps")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        # one legend under the panels (inside one, it covered the curves it names)
        legend: dict[str, Any] = {}
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(lab, h)
        seeds = _seed_span(r["n_seeds"] for r in rows if r["condition"] in trained)
        note = f" (bins with >= {MIN_RATIO_HITS} hits)" if metric == "retribution_ratio" else ""
        refs = [c for c in study.conditions if c not in trained]
        ref_note = f"; {' and '.join(refs)} policy: horizontal line" if refs else ""
        plots.wrapped_suptitle(fig, f"{title}{note}: mean over {seeds} seeds, 95% CI band where >= "
                               f"{MIN_BAND_SEEDS} seeds{ref_note}; "
                               f"shaded: {study_late_label(study)}", fontsize=9)
        rows_of_legend = math.ceil(len(legend) / 5) if legend else 0
        fig.set_size_inches(5.2 * len(grids), 3.6 + 0.25 * rows_of_legend)
        if legend:
            fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(5, len(legend)),
                       fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.045 * rows_of_legend, 1, 1))
        p = out_dir / f"fig_{metric}.png"
        fig.savefig(p, dpi=90, metadata={"Software": None})
        plt.close(fig)
        paths.append(p)
    return paths


SCALE_METRICS = ("predatory_hits_per_agent_step", "zaps_fired_per_agent_step", "apples_per_agent_step",
                 "total_debt")


def study_late_label(study: Study) -> str:
    """The study's late window named as every report names it (karmic.definitions.late_label)."""
    lo, hi = study.windows["late"]
    f = window_fraction((lo, hi))
    if f is None:
        return f"late = [{lo:g}, {hi:g}) of each run's env steps (the study's own window)"
    own = "" if tuple(study.windows["late"]) == LATE_WINDOW else " (the study's own window)"
    return late_label(f) + own


def draw_scale_figure(study: Study, cells: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """``fig_scale.png``: each condition's late-window mean [95% CI] at the smallest and the
    largest grid, one panel per metric (karmic.plots.plot_scale). Only for a study with two or
    more grids and one level per grid, where the two points differ by grid alone; None otherwise."""
    from karmic import plots

    grids = sorted(study.grid_sizes)
    late = [c for c in cells if c["win"] == "late" and c["metric"] in SCALE_METRICS]
    if len(grids) < 2 or any(len({c["level"] for c in late if c["grid_size"] == g}) > 1 for g in grids):
        return None
    small, big = grids[0], grids[-1]
    by = {(c["grid_size"], c["condition"], c["metric"]): c for c in late}
    rows = []
    for cond in study.conditions:
        for metric in SCALE_METRICS:
            row = {"condition": cond, "metric": metric, "small_grid": small, "big_grid": big}
            for side, g in (("small", small), ("big", big)):
                c = by.get((g, cond, metric), {})
                banded = (c.get("n_seeds") or 0) >= MIN_BAND_SEEDS
                for k in ("mean", "ci_low", "ci_high"):
                    row[f"{side}_{k}"] = c.get(k) if k == "mean" or banded else None
            if row["small_mean"] is not None or row["big_mean"] is not None:
                rows.append(row)
    if not rows:
        return None
    n = _seed_span(c.get("n_seeds") for c in late)
    steps = ", ".join(f"{g}x{g}: {study.total_steps[g]:,}" for g in (small, big) if g in study.total_steps)
    note = (f"{n} seeds per point (whiskers where >= {MIN_BAND_SEEDS}); env steps per run {steps}; "
            f"{study_late_label(study)}")
    return plots.plot_scale(rows, out_dir / "fig_scale.png", plots.Styles(study.conditions),
                            SCALE_METRICS, note=note)


# the evaluation figures: file, scenarios, (metric, y label) panels, title
EVAL_FIGURES = (
    ("fig_solo_competence.png", ("solo",), (("apples_per_agent_step", "apples / agent-step"),),
     "Solo competence: the kept policy alone on the board"),
    ("fig_cross_play.png", ("cross-play",), (("apples_per_agent_step", "apples / agent-step"),
                                             ("hits_taken_per_agent_step", "hits taken / agent-step")),
     "Cross-play: focal agents among another condition's agents"),
)


def _eval_label(ev: dict[str, Any]) -> str:
    bg = f" among {ev['background']}" if ev["background"] else ""
    n = f"{ev['n_focal']} x " if ev["background"] and ev["n_focal"] > 1 else ""
    return f"{ev['id']}\n({n}{ev['focal']}{bg})"


def draw_eval_figures(study: Study, eval_cells: list[dict[str, Any]], eval_seeds: list[dict[str, Any]],
                      out_dir: Path) -> list[Path]:
    """``fig_solo_competence.png`` (solo evaluations: the focal policy's apples per agent-step)
    and ``fig_cross_play.png`` (cross-play: the focal agents' apples and hits taken per
    agent-step): per evaluation and grid, each seed's value as a dot and the mean over seeds with
    its 95% CI (queries/study/eval_cells.sql); a figure without data is not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from karmic import plots
    from karmic.plots import condition_style

    paths = []
    for fname, scenarios, panels, title in EVAL_FIGURES:
        evs = [e for e in study.evaluations if e["scenario"] in scenarios]
        ids = {e["id"] for e in evs}
        cells = [c for c in eval_cells if c["evaluation"] in ids]
        if not cells:
            continue
        keys = sorted({(c["grid_size"], c["level"]) for c in cells})
        fig, axes = plt.subplots(len(panels), len(keys), figsize=(max(4.5, 1.3 * len(evs) + 1.5) * len(keys),
                                                                  3.4 * len(panels)), squeeze=False)
        for col, (g, lv) in enumerate(keys):
            for row, (metric, ylabel) in enumerate(panels):
                ax = axes[row][col]
                for x, ev in enumerate(evs):
                    colour, _, marker = condition_style(ev["focal"])
                    seeds = [r["value"] for r in eval_seeds if r["evaluation"] == ev["id"] and r["grid_size"] == g
                             and r["level"] == lv and r["metric"] == metric and r["value"] is not None]
                    ax.scatter([x + 0.12] * len(seeds), seeds, s=12, color=colour, alpha=0.5, lw=0)
                    c = next((c for c in cells if c["evaluation"] == ev["id"] and c["grid_size"] == g
                              and c["level"] == lv and c["metric"] == metric), None)
                    if c is None or c["mean"] is None:
                        continue
                    err = None
                    if c["ci_low"] is not None and (c.get("n_seeds") or 0) >= MIN_BAND_SEEDS:
                        err = [[c["mean"] - c["ci_low"]], [c["ci_high"] - c["mean"]]]
                    ax.errorbar([x], [c["mean"]], yerr=err, color=colour, marker=marker, ms=6, capsize=4, lw=1.5)
                ax.set_xticks(range(len(evs)), [_eval_label(e) for e in evs], fontsize=7)
                ax.set_xlim(-0.5, len(evs) - 0.5)
                ax.set_ylabel(ylabel)
                ax.set_title(f"{g}x{g}" + (f", {lv}" if len(study.levels) > 1 else ""), fontsize=9)
                ax.grid(alpha=0.3, axis="y")
        seeds = _seed_span(c["n_seeds"] for c in cells)
        plots.wrapped_suptitle(fig, f"{title}. Mean over {seeds} seeds with 95% CI where >= {MIN_BAND_SEEDS} "
                               "seeds; dots: one seed each "
                               "(the kept policies, karmic evaluate)", fontsize=9)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=90, metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths


# --- the report -------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and abs(v) < 1e-12:  # float noise of a 0 (-5.55e-17)
        return "0"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def decided_by(v: dict[str, Any], alpha: float = 0.05) -> str:
    """The p-value that decided the verdict, named for what it tests: the support test's when
    supported, the contradiction test's when contradicted (for an equivalence, each is the test
    against the margin, TOST), both when neither reached alpha; a check against a constant says so."""
    test, m = v["test"], _fmt(v.get("margin"))
    support = {"equivalent": f"TOST against the margin +-{m}", "not_less": f"test against the margin -{m}",
               "not_greater": f"test against the margin +{m}"}.get(test, f"{test} test")
    contra = {"equivalent": f"test of |diff| > margin {m}", "not_less": f"test of diff < -{m}",
              "not_greater": f"test of diff > +{m}"}.get(test, "test of the opposite")
    ps, pc = _fmt(v.get("p_support_holm"), 3), _fmt(v.get("p_contra_holm"), 3)
    const = (f"; one-sample, against the constant {_fmt(v['b_value'])}"
             if v.get("b_value") is not None else "")
    if v["verdict"] == "supported":
        return f"decided by p = {ps} (Holm), the {support}{const}"
    if v["verdict"] == "contradicted":
        return f"decided by p = {pc} (Holm), the {contra}{const}"
    return f"neither p < {alpha:g}: {support} p = {ps or 'n/a'}, {contra} p = {pc or 'n/a'} (Holm){const}"


def _side(v: dict[str, Any], s: str) -> str:
    if s == "b" and v.get("b_value") is not None:
        return f"the constant {_fmt(v['b_value'])} (a check against a constant)"
    if v.get(f"{s}_evaluation") is not None:
        return (f"evaluation {v[f'{s}_evaluation']} ({v[f'{s}_condition']} focal) g{v[f'{s}_grid_size']} "
                f"{v[f'{s}_level']}")
    return f"{v[f'{s}_condition']} g{v[f'{s}_grid_size']} {v[f'{s}_level']} [{v[f'{s}_window']}]"


def verdict_table(verdicts: list[dict[str, Any]]) -> list[str]:
    head = ("| prediction | metric | test | a | b | mean a | mean b | diff [95% CI] | margin | p (Holm) | "
            "p against (Holm) | verdict | note |")
    out = [head, "|" + "---|" * 13]
    for v in verdicts:
        ci = f"{_fmt(v['diff'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]"
        p = f"{_fmt(v['p_support'], 3)} ({_fmt(v['p_support_holm'], 3)})"
        pc = f"{_fmt(v['p_contra'], 3)} ({_fmt(v['p_contra_holm'], 3)})"
        out.append(f"| {v['id']} | {v['metric']} | {v['test']} | {_side(v, 'a')} (n={v['n_a'] or 0}) | "
                   f"{_side(v, 'b')} (n={v['n_b'] or 0}) | {_fmt(v['mean_a'])} | {_fmt(v['mean_b'])} | {ci} | "
                   f"{_fmt(v['margin'])} | {p} | {pc} | **{v['verdict']}** ({decided_by(v)}) | {v['note'] or ''} |")
    return out


def _per_seed(study: Study, v: dict[str, Any], s: str, short: bool = False) -> str:
    """What one seed of a side is: a trained run's env steps (and the window read), a scripted
    policy's episodes, or an evaluation's episodes and policy file (from the study file).
    ``short``: in a few characters (``750k``, ``10 ep``, ``-`` for a constant)."""
    if s == "b" and v.get("b_value") is not None:
        return "-" if short else "constant"
    ev = next((e for e in study.evaluations if e["id"] == v.get(f"{s}_evaluation")), None)
    episodes = ev["episodes"] if ev is not None else (
        study.episodes if v[f"{s}_condition"] in conditions_registry.names(trained=False) else None)
    if episodes is not None:
        if short:
            return f"{episodes} ep"
        return (f"{episodes} episode{'s' if episodes != 1 else ''}, {ev['policy']} policy" if ev is not None
                else f"{episodes} episodes")
    steps = study.total_steps.get(v[f"{s}_grid_size"])
    if short:
        return "?" if not steps else f"{steps / 1e6:g}M" if steps >= 1_000_000 else f"{steps / 1e3:g}k"
    return f"{steps:,} env steps, {v[f'{s}_window']} window" if steps else f"{v[f'{s}_window']} window"


def _short_side(study: Study, v: dict[str, Any], s: str) -> str:
    """A side in a few words: condition or evaluation, grid, the level where there are several,
    the window where it is not ``late``; a constant."""
    if s == "b" and v.get("b_value") is not None:
        return _fmt(v["b_value"])
    name = v.get(f"{s}_evaluation") or v[f"{s}_condition"]
    level = f" {v[f'{s}_level']}" if len(study.levels) > 1 else ""
    window = f" [{v[f'{s}_window']}]" if v.get(f"{s}_window") not in (None, "late") else ""
    return f"{name} g{v[f'{s}_grid_size']}{level}{window}"


def summary_table(study: Study, verdicts: list[dict[str, Any]]) -> list[str]:
    """Every verdict in one line as a front page shows it (the README's table): the estimate
    mean(a) - mean(b) with its 95% CI, the Holm-adjusted p that decided it, the verdict, and the
    data behind each side (seeds; steps or episodes per seed). Training and evaluation
    predictions are one Holm family; the numbers are verdicts.sql's."""
    head = ["prediction", "metric", "test", "a", "b", "mean a", "mean b", "estimate [95% CI]", "margin", "p (Holm)",
            "verdict", "seeds a / b", "per seed a / b"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in verdicts:
        p = v["p_contra_holm"] if v["verdict"] == "contradicted" else v["p_support_holm"]
        per = dict.fromkeys([_per_seed(study, v, "a"), _per_seed(study, v, "b")])
        out.append(f"| {v['id']} | {v['metric']} | {v['test']} | {_short_side(study, v, 'a')} | "
                   f"{_short_side(study, v, 'b')} | {_fmt(v['mean_a'], 3)} | {_fmt(v['mean_b'], 3)} | "
                   f"{_fmt(v['diff'], 3)} [{_fmt(v['ci_low'], 3)}, {_fmt(v['ci_high'], 3)}] | "
                   f"{_fmt(v['margin'], 3)} | {_fmt(p, 3)} | **{v['verdict']}** | {v['n_a'] or 0} / "
                   f"{(v['n_b'] or 0) if v.get('b_value') is None else '-'} | {' / '.join(per)} |")
    return out


def front_table(study: Study, verdicts: list[dict[str, Any]], grid_size: int | None = None) -> list[str]:
    """The verdicts as a front page shows them (``karmic study table``; the README's mechanism
    table is this text): one line a prediction with the two sides' means, the estimate
    mean(a) - mean(b) and its unadjusted 95% CI, the Holm-adjusted p that decided the verdict,
    the verdict, and what is behind each side (seeds; env steps or episodes a seed). ``grid_size``
    keeps the predictions whose sides are all at that grid. The numbers are verdicts.json's."""
    def num(x: Any) -> str:  # 2 significant digits, whole numbers from 100 up (no 3.6e+02)
        return f"{x:,.0f}" if isinstance(x, float) and abs(x) >= 100 else _fmt(x, 2)

    head = ["prediction", "metric", "a / b", "mean a / b", "estimate [95% CI]", "p (Holm)", "verdict", "seeds",
            "per seed"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in verdicts:
        grids = {v["a_grid_size"], v["b_grid_size"] if v.get("b_value") is None else v["a_grid_size"]}
        if grid_size is not None and grids != {grid_size}:
            continue
        p = v["p_contra_holm"] if v["verdict"] == "contradicted" else v["p_support_holm"]
        a = v.get("a_evaluation") or v["a_condition"]
        b = _fmt(v["b_value"]) if v.get("b_value") is not None else (v.get("b_evaluation") or v["b_condition"])
        if a == b and v.get("b_value") is None and v.get("a_level") != v.get("b_level"):
            sides = f"{a}: {v['a_level']} / {v['b_level']}"  # one condition, two levels (methods)
        else:
            sides = a if a == b else f"{a} / {b}"
        n_b = (v["n_b"] or 0) if v.get("b_value") is None else "-"
        steps = dict.fromkeys([_per_seed(study, v, "a", short=True), _per_seed(study, v, "b", short=True)])
        ci = (f"{num(v['diff'])} [{num(v['ci_low'])}, {num(v['ci_high'])}]"
              if v.get("diff") is not None else "no data")
        out.append(f"| {v['id']} | {v['metric']} | {sides} | {num(v['mean_a'])} / {num(v['mean_b'])} | {ci} | "
                   f"{_fmt(p, 2)} | **{v['verdict']}** | {v['n_a'] or 0} / {n_b} | {' / '.join(steps)} |")
    return out


def results_front_table(study: Study, results_dir: Path, grid_size: int | None = None) -> list[str]:
    """:func:`front_table` of ``results_dir/verdicts.json``, in the study file's order of predictions.
    Raises StudyError when the file is missing or unreadable, or no prediction is at ``grid_size``."""
    path = Path(results_dir) / "verdicts.json"
    if not path.is_file():
        raise StudyError(f"no {path}: report the study first (karmic study report {study.name})")
    try:
        verdicts = json.loads(path.read_text())["predictions"]
        order = {p["id"]: i for i, p in enumerate(study.predictions)}
        verdicts = sorted(verdicts, key=lambda v: order.get(v["id"], len(order)))
        grids = {v["a_grid_size"] for v in verdicts}
    except (ValueError, KeyError, TypeError) as exc:
        raise StudyError(f"unreadable {path}: {exc}") from None
    if grid_size is not None and grid_size not in grids:
        raise StudyError(f"study {study.name} has no prediction at grid {grid_size}")
    return front_table(study, verdicts, grid_size=grid_size)


# what else moved beside the verdicts: harvest, predation, activity (zaps, encounters), accuracy
# (hits per zap), selectivity (predation per encounter; retribution_ratio: the hits landed that
# were not predatory) and TVT's dose (|value| transported)
CELL_METRICS = ("apples_per_agent_step", "predatory_hits_per_agent_step", "zaps_fired_per_agent_step",
                "hits_per_zap", "encounters_per_agent_step", "predatory_hits_per_encounter",
                "retribution_ratio", "transported_per_agent_step")


def _columns_and_grids(path: Path, metrics: tuple[str, ...] | None, known: set[str], present: set[int],
                       grid_size: int | None, what: str) -> tuple[tuple[str, ...], list[int]]:
    """A --cells / --seeds table's metric columns (by default those of CELL_METRICS that ``known``
    has: results written before a metric existed lack it) and its grids, largest first (only
    ``grid_size`` if given); an unknown metric or an absent grid is a StudyError naming ``path``."""
    metrics = tuple(metrics) if metrics else tuple(m for m in CELL_METRICS if m in known)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise StudyError(f"{path} has no metric {', '.join(unknown)}; it has {', '.join(sorted(known))}")
    if grid_size is not None and grid_size not in present:
        raise StudyError(f"{path} has no {what} at grid {grid_size}")
    return metrics, [grid_size] if grid_size is not None else sorted(present, reverse=True)


def cells_front_table(study: Study, results_dir: Path, grid_size: int | None = None,
                      metrics: tuple[str, ...] | None = None) -> list[str]:
    """The late window's mean over seeds of each cell (``results_dir/cells.json``), one line a
    condition (and grid and level where there are several) in the study file's order, a column
    a metric (``None``: those of CELL_METRICS the results have), with the seeds behind each line.
    Raises StudyError on a missing or unreadable file, an unknown metric or a grid without cells."""
    path = Path(results_dir) / "cells.json"
    if not path.is_file():
        raise StudyError(f"no {path}: report the study first (karmic study report {study.name})")
    try:
        cells = [c for c in json.loads(path.read_text()) if c["win"] == "late"]
        known = {c["metric"] for c in cells}
    except (ValueError, KeyError, TypeError) as exc:
        raise StudyError(f"unreadable {path}: {exc}") from None
    metrics, grids = _columns_and_grids(path, metrics, known, {c["grid_size"] for c in cells}, grid_size, "cell")
    by = {(c["grid_size"], c["level"], c["condition"], c["metric"]): c for c in cells}
    levels = [lv.name for lv in study.levels]
    head = (["grid"] if len(grids) > 1 else []) + (["level"] if len(levels) > 1 else []) + ["condition", "seeds"]
    out = ["| " + " | ".join(head + list(metrics)) + " |", "|" + "---|" * (len(head) + len(metrics))]
    for g in grids:
        for lv in levels:
            for cond in study.conditions:
                row = [by.get((g, lv, cond, m)) for m in metrics]
                if not any(row):
                    continue
                seeds = min((c["n_seeds"] for c in row if c), default=0)
                lead = ([f"{g}x{g}"] if len(grids) > 1 else []) + ([lv] if len(levels) > 1 else [])
                vals = [_fmt(c["mean"], 2) if c and c["mean"] is not None else "" for c in row]
                out.append("| " + " | ".join([*lead, cond, str(seeds), *vals]) + " |")
    return out


def seeds_front_table(study: Study, results_dir: Path, grid_size: int | None = None,
                      metrics: tuple[str, ...] | None = None) -> list[str]:
    """Each seed's late-window value of each metric (``None``: those of CELL_METRICS the results
    have) from ``results_dir/metrics.parquet`` through queries/study/seeds.sql: one line a seed
    of a cell, in the study file's order, a column a metric; the values a cell's mean and a verdict are made of, so a claim such as "every seed
    of a above every seed of b" is one command. Raises StudyError on a missing or unreadable
    file, an unknown metric or a grid without runs."""
    path = Path(results_dir) / "metrics.parquet"
    if not path.is_file():
        raise StudyError(f"no {path}: report the study first (karmic study report {study.name})")
    try:
        con = analysis_connection(study, path)
        try:
            rows = _rows(con, _sql("seeds"))
        finally:
            con.close()
    except (duckdb.Error, OSError, pa.ArrowException) as exc:
        from pipelines.sweep import one_line

        raise StudyError(f"unreadable {path}: {one_line(exc)}") from None
    known = {r["metric"] for r in rows}
    metrics, grids = _columns_and_grids(path, metrics, known, {r["grid_size"] for r in rows}, grid_size, "run")
    by: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        by.setdefault((r["grid_size"], r["level"], r["condition"], r["seed"]), {})[r["metric"]] = r["value"]
    levels = [lv.name for lv in study.levels]
    head = (["grid"] if len(grids) > 1 else []) + (["level"] if len(levels) > 1 else []) + ["condition", "seed"]
    out = ["| " + " | ".join(head + list(metrics)) + " |", "|" + "---|" * (len(head) + len(metrics))]
    for g in grids:
        for lv in levels:
            for cond in study.conditions:
                for seed in sorted(sd for gg, ll, cc, sd in by if (gg, ll, cc) == (g, lv, cond)):
                    vals = by[(g, lv, cond, seed)]
                    lead = ([f"{g}x{g}"] if len(grids) > 1 else []) + ([lv] if len(levels) > 1 else [])
                    out.append("| " + " | ".join([*lead, cond, str(seed), *(_fmt(vals.get(m), 2) for m in metrics)])
                               + " |")
    return out


def times_front_table(study: Study, results_dir: Path, grid_size: int | None = None) -> list[str]:
    """What each trained cell cost (``results_dir/runs.json``): one line a condition (and grid and
    level where there are several), the runs completed in a single attempt (a resumed run's time
    is partly lost or spread over attempts, so it is left out and counted), their mean minutes a
    run and mean env-steps per wall second (runs whose attempts were not recorded are not timed).
    The cells of a study run side by side (``--workers``), so a figure is a run's pace beside its
    neighbours, comparable within one study. Raises
    StudyError on a missing or unreadable file or a grid without trained runs."""
    path = Path(results_dir) / "runs.json"
    if not path.is_file():
        raise StudyError(f"no {path}: report the study first (karmic study report {study.name})")
    try:
        runs = [r for r in json.loads(path.read_text()) if not r.get("scripted") and r.get("status") == "completed"]
        rows: dict[tuple[int, str, str], list[tuple[float, int] | None]] = {}
        for r in runs:
            key = (int(r["grid_size"]), r["level"], r["condition"])
            # attempts unrecorded (results written before the manifest counted them): not timed
            single = r.get("attempts") == 1 and r.get("seconds") and r.get("global_step")
            rows.setdefault(key, []).append((float(r["seconds"]), int(r["global_step"])) if single else None)
    except (ValueError, KeyError, TypeError) as exc:
        raise StudyError(f"unreadable {path}: {exc}") from None
    grids = sorted({g for g, _, _ in rows}, reverse=True)
    if grid_size is not None:
        if grid_size not in grids:
            raise StudyError(f"{path} has no completed trained run at grid {grid_size}")
        grids = [grid_size]
    levels = [lv.name for lv in study.levels]
    head = (["grid"] if len(grids) > 1 else []) + (["level"] if len(levels) > 1 else [])
    out = ["| " + " | ".join([*head, "condition", "runs timed", "min a run", "env-steps/s"]) + " |",
           "|" + "---|" * (len(head) + 4)]
    for g in grids:
        for lv in levels:
            for cond in study.conditions:
                got = rows.get((g, lv, cond))
                if not got:
                    continue
                timed = [t for t in got if t is not None]
                lead = ([f"{g}x{g}"] if len(grids) > 1 else []) + ([lv] if len(levels) > 1 else [])
                n = f"{len(timed)}" + (f" of {len(got)}" if len(timed) < len(got) else "")
                mins = f"{sum(s for s, _ in timed) / len(timed) / 60:.1f}" if timed else ""
                pace = f"{sum(n_ / s for s, n_ in timed) / len(timed):,.0f}" if timed else ""
                out.append("| " + " | ".join([*lead, cond, n, mins, pace]) + " |")
    return out


# a front-page table kept equal to its results: `karmic study table NAME --into FILE` fills the
# block, and tests/test_readme.py fails when a committed block differs from its results
TABLE_BLOCK = re.compile(r"(<!-- karmic study table (?P<name>[\w.-]+)(?P<cells> --cells)?(?P<times> --times)?"
                         r"(?P<seeds> --seeds)?"
                         r"(?: --grid (?P<grid>\d+))?"
                         r"(?: --metrics (?P<metrics>[\w,]+))? -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


@dataclass(frozen=True)
class TableBlock:
    """A ``<!-- karmic study table NAME [--cells | --times | --seeds] [--grid G] [--metrics m,...] -->`` block."""

    name: str
    grid: int | None = None
    cells: bool = False
    metrics: tuple[str, ...] | None = None
    body: str = ""
    times: bool = False
    seeds: bool = False

    def render(self, study: Study, results_dir: Path) -> list[str]:
        """The table the block asks for, from ``results_dir``."""
        if self.cells + self.times + self.seeds > 1:
            raise StudyError("--cells, --times and --seeds are three tables: choose one")
        if self.seeds:
            return seeds_front_table(study, results_dir, self.grid, self.metrics)
        if self.times:
            if self.metrics:
                raise StudyError("--metrics goes with --cells, not --times")
            return times_front_table(study, results_dir, self.grid)
        if self.cells:
            return cells_front_table(study, results_dir, self.grid, self.metrics)
        if self.metrics:
            raise StudyError(f"<!-- karmic study table {self.name} --metrics ... --> needs --cells or --seeds")
        return results_front_table(study, results_dir, self.grid)


def _block(m: re.Match) -> TableBlock:
    return TableBlock(m["name"], int(m["grid"]) if m["grid"] else None, bool(m["cells"]),
                      tuple(m["metrics"].split(",")) if m["metrics"] else None, m["body"], bool(m["times"]),
                      bool(m["seeds"]))


def table_blocks(text: str) -> list[TableBlock]:
    """Every table block of a Markdown text, its body as written."""
    return [_block(m) for m in TABLE_BLOCK.finditer(text)]


def fill_table_blocks(text: str, name: str, render) -> tuple[str, int]:
    """``text`` with the body of every block of study ``name`` replaced by ``render(block)``
    (lines), and how many blocks were filled."""
    n = 0

    def sub(m: re.Match) -> str:
        nonlocal n
        if m["name"] != name:
            return m.group(0)
        n += 1
        return m.group(1) + "\n".join(render(_block(m))) + "\n" + m.group(m.re.groups)

    return TABLE_BLOCK.sub(sub, text), n


def summary_section(study: Study, verdicts: list[dict[str, Any]]) -> list[str]:
    """report.md's one-table summary, for a study that declares evaluations (their verdicts sit in
    the same Holm family as the training ones); the reports of studies without evaluations are
    unchanged."""
    if not study.evaluations:
        return []
    n_eval = sum(1 for v in verdicts if v.get("source") == "evaluation")
    return [
        "## Summary",
        "",
        f"All {len(verdicts)} predictions, {n_eval} of them on the evaluations of the kept policies, in one Holm "
        "family. Estimate: mean(a) - mean(b) over seeds with its unadjusted 95% CI; p: the Holm-adjusted p-value "
        "that decided the verdict (the contradiction test's when contradicted, else the support test's); "
        "margin: the absolute margin of a `not_less` / `not_greater` / `equivalent` test. "
        f"{study_late_label(study)}.",
        "",
        *summary_table(study, verdicts),
        "",
    ]


def cell_table(cells: list[dict[str, Any]], window: str = "late") -> list[str]:
    keys = sorted({(c["grid_size"], c["level"], c["condition"]) for c in cells})
    by = {(c["grid_size"], c["level"], c["condition"], c["metric"]): c for c in cells if c["win"] == window}
    out = ["| grid | level | condition | seeds | " + " | ".join(TABLE_METRICS) + " |",
           "|" + "---|" * (4 + len(TABLE_METRICS))]
    for g, lv, cond in keys:
        vals, n = [], 0
        for m in TABLE_METRICS:
            c = by.get((g, lv, cond, m))
            if c is None or c["mean"] is None:
                vals.append("")
                continue
            n = max(n, c["n_seeds"] or 0)
            ci = f" [{_fmt(c['ci_low'], 3)}, {_fmt(c['ci_high'], 3)}]" if c["ci_low"] is not None else ""
            vals.append(f"{_fmt(c['mean'], 3)}{ci}")
        out.append(f"| {g} | {lv} | {cond} | {n} | " + " | ".join(vals) + " |")
    return out


def decision_section(study: Study, rows: list[dict[str, Any]] | None) -> list[str]:
    """The ``[decision]`` rule's table: per grid size and level, each criterion and the choice."""
    if rows is None:
        return []
    r = study.decision
    yes = {True: "yes", False: "no", None: "n/a"}
    lines = [
        "## Decision",
        "",
        f"The study's pre-registered rule (`[decision]`, queries/study/decision.sql): per grid size, the level "
        f"whose `{r['condition']}` {r['window']} `{r['metric']}` is highest among those where (a) it is above "
        f"`{r['above']}`'s, (b) it is at least {r['sustained_ratio']:g} x its {r['sustained_window']} window's, "
        f"(c) its {r['window']} `{r['floor_metric']}` is above `{r['floor_condition']}`'s (point estimates); "
        "if none passes, the highest-rate level, marked as not passing. `final`: every level of the grid has "
        f"all {r['seeds']} seeds.",
        "",
        "| grid | level | seeds | rate | (a) ref | (b) ref | (c) value / ref | a | b | c | chosen | final |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in rows:
        lines.append(
            f"| {d['grid_size']} | {d['level']} | {d['n_seeds']} | {_fmt(d['rate'])} | {_fmt(d['above_rate'])} | "
            f"{_fmt(d['sustained_ref'])} | {_fmt(d['floor_value'])} / {_fmt(d['floor_ref'])} | {yes[d['above_ok']]} | "
            f"{yes[d['sustained_ok']]} | {yes[d['floor_ok']]} | {'**chosen**' if d['chosen'] else ''}"
            f"{' (passes none)' if d['chosen'] and not d['passes'] else ''} | {yes[d['final']]} |")
    return lines + [""]


def _versions_note(runs: list[dict[str, Any]]) -> list[str]:
    try:
        from pipelines.versions import compare_with_lock
    except ImportError:
        return []
    seen, out = set(), []
    for r in runs:
        for line in compare_with_lock(r.get("versions") or {}):
            if line not in seen:
                seen.add(line)
                out.append(line)
    return out


def made_with_section(runs: list[dict[str, Any]]) -> list[str]:
    """report.md's "Made with": how many runs recorded each torch build, code commit and CPU (a
    study run across sessions can mix them; `karmic study reproduce` says whether a mix matters)."""
    from collections import Counter

    done = [r for r in runs if r.get("carried") or r.get("status") in ("completed", "finished")]
    lines = []
    for key, what in (("torch", "torch"), ("commit", "code commit"), ("cpu", "CPU")):
        # a scripted run imports no torch
        seen = Counter((r.get("versions") or {}).get(key) for r in done if key != "torch" or not r.get("scripted"))
        if set(seen) == {None}:
            continue
        parts = [f"{v} ({n} run{'s' if n != 1 else ''})" for v, n in sorted(
            seen.items(), key=lambda kv: (kv[0] is None, -kv[1], str(kv[0])))]
        lines.append(f"- {what}: " + ", ".join(p.replace("None (", "not recorded (") for p in parts))
    if not lines:
        return []
    return ["## Made with", "", "What each run recorded in its run.json (`versions`); runs made under different "
            "builds, commits or CPUs can differ in the last bits, which `karmic study reproduce` measures.", "",
            *lines, ""]


def machine_time(trained: list[dict[str, Any]]) -> tuple[float, int, int]:
    """(seconds, cells timed by their last attempt only, attempts known to be missing) of the
    trained cells. ``seconds_all`` (every attempt timed: pipelines.sweep) where the manifest has
    it; else the last attempt's ``seconds``, from a manifest written before every attempt was
    timed, with ``attempts - 1`` attempts known to be missing."""
    secs, last_only, missing = 0.0, 0, 0
    for r in trained:
        if r.get("seconds_all") is not None:
            secs += float(r["seconds_all"])
            missing += max(0, int(r.get("attempts") or 0) - int(r.get("attempts_timed") or 0))
        elif r.get("seconds") is not None:
            secs += float(r["seconds"])
            last_only += 1
            missing += max(0, int(r.get("attempts") or 1) - 1)
    return secs, last_only, missing


def render_markdown(study: Study, res: dict[str, Any], runs: list[dict[str, Any]], figures: list[Path],
                    lake_hint: str | None, out_dir: Path) -> str:
    s = res["summary"]
    trained = [r for r in runs if not r["scripted"]]
    secs, last_only, missing = machine_time(trained)
    n_all = sum(1 for r in trained if r.get("seconds_all") is not None)
    done = sum(1 for r in runs if r["status"] in ("completed", "finished"))
    n_carried = sum(1 for r in runs if r.get("carried"))
    carried = (f" ({n_carried} carried from earlier lakes: `carried` in runs.json)" if n_carried else "")
    budget = ", ".join(f"{g}x{g}: {n:,}" for g, n in study.total_steps.items())
    lines = [
        f"# Study `{study.name}`",
        "",
        study.description,
        "",
        f"Registered {study.registered or '(no date)'}; {done} of {len(runs)} cells completed{carried}; "
        f"{len(study.seeds)} seeds per cell ({', '.join(map(str, study.seeds))}); budget per trained run "
        f"{budget} env steps; windows: "
        + ", ".join(f"{n} = [{lo:g}, {hi:g}) of each run's steps" for n, (lo, hi) in study.windows.items())
        + f". Data: {s['runs']} runs, {s['episodes']:,} episodes, {int(s['agent_steps'] or 0):,} agent-steps. "
        f"Machine time of the trained cells: {secs / 3600:.2f} h, from the sweep manifest ("
        + "; ".join(x for x in (
            f"{last_only} cell(s) by their last attempt only, recorded before every attempt was timed"
            if last_only else "",
            f"{n_all} cell(s) by every attempt, one cut off with its driver counted to its run's last write"
            if n_all else "",
            f"{missing} earlier attempt(s) known and not timed" if missing else "") if x) + ").",
        "",
        "## Verdicts",
        "",
        "Each prediction's estimate is mean(a) - mean(b) over seeds, with its unadjusted 95% CI; "
        "`p` is the support test's p-value and `p against` the contradiction test's, each "
        f"Holm-adjusted across the study's {len(res['verdicts'])} predictions in brackets "
        "(queries/study/verdicts.sql).",
        "",
        *verdict_table(res["verdicts"]),
        "",
        "Claims:",
        "",
        *[f"- **{v['id']}**: {v['claim']}" for v in res["verdicts"]],
        "",
        *summary_section(study, res["verdicts"]),
        *decision_section(study, res.get("decision")),
        "## Cells, late window (mean over seeds [95% CI])",
        "",
        study_late_label(study) + ".",
        "",
        *cell_table(res["cells"]),
        "",
        "## Figures",
        "",
    ]
    for f in figures:
        lines += [f"![{f.stem}]({f.name})", ""]
    gifs = sorted(out_dir.glob("episode_*.gif"))
    skipped_path = out_dir / "episodes_skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.is_file() else []
    if gifs or skipped:
        lines += ["## Late-training episodes", "",
                  "The last episode of the lowest seed of each cell, re-simulated from the lake's action "
                  "log and checked against its stored events (`karmic replay`).", ""]
        for g in gifs:
            lines += [f"![{g.stem}]({g.name})", ""]
        if skipped:
            lines += ["Not replayable (runs written before the lake kept an action log, or a failed check):", "",
                      *[f"- {x}" for x in skipped], ""]
    lines += made_with_section(runs)
    notes = _versions_note(runs)
    if notes:
        lines += ["## Versions", "", "Some runs were produced under versions other than the lock:", "",
                  *[f"- {n}" for n in notes], ""]
    where = f" --lake {shlex.quote(lake_hint)}" if lake_hint else ""
    lines += [
        "## Reproduce",
        "",
        "```bash",
        f"karmic study run {study.name}{where}        # trains every missing cell (resumes)",
        f"karmic study report {study.name}{where}     # this report, from the lake",
        f"karmic study report {study.name} --from-results   # the same, from results/{study.name}/ alone",
        f"karmic study reproduce {study.name} CELL    # a cell trained again from its plan, compared row by row",
        "```",
        "",
        f"## The study file (`{study.path.name}`)",
        "",
        "```toml",
        study.text.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def embed_episodes(study: Study, lake: str, out_dir: Path, max_frames: int = 120,
                   carried: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """A late-training episode of each trained (grid, level, condition), re-simulated from the
    lake's action log (`karmic replay`) and checked against its events, as a GIF. Runs written
    before the lake kept actions cannot be replayed: they are skipped and named. A ``carried``
    run is not in this lake: its GIF, made from the lake it ran in, is kept as it is."""
    try:
        from pipelines.replay import render_episode
    except ImportError:
        return ["episodes not embedded: this install has no pipelines.replay"]
    con = duckdb.connect()
    last = con.execute(
        f"select grid_size, level, condition, arg_min(run_id, seed), arg_min(max_ep, seed) from ("
        f" select grid_size, level, condition, seed, run_id, max(episode) as max_ep"
        f" from read_parquet('{_q(str(out_dir / 'metrics.parquet'))}') where not scripted group by all)"
        f" group by all order by all").fetchall()
    wanted = {out_dir / f"episode_g{g}_{lv}_{cond}.gif" for g, lv, cond, _, _ in last}
    for old in out_dir.glob("episode_*.gif"):
        if old not in wanted:
            old.unlink()
    skipped = []
    for g, lv, cond, run_id, ep in last:
        out = out_dir / f"episode_g{g}_{lv}_{cond}.gif"
        if run_id in carried:
            if not out.is_file():
                skipped.append(f"{run_id} episode {ep}: carried from an earlier lake, which made no GIF of it")
            continue
        try:
            render_episode(lake, run_id, int(ep), out, max_frames=max_frames)
        except Exception as exc:  # noqa: BLE001 (a run without actions, or one that fails its check)
            out.unlink(missing_ok=True)
            skipped.append(f"{run_id} episode {ep}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return skipped


def build_report(study: Study, lake: str | None, out_dir: Path, from_results: bool = False,
                 episodes: bool = True) -> dict[str, Any]:
    out_dir = Path(out_dir)
    carried: list[str] = []
    if not from_results:
        carried = extract_metrics(study, lake, out_dir)
        copy_policies(lake, out_dir, json.loads((out_dir / "runs.json").read_text()))
        run_evaluations(study, lake, out_dir, json.loads((out_dir / "runs.json").read_text()))
        if episodes:
            skipped = embed_episodes(study, lake, out_dir, carried=set(carried))
            (out_dir / "episodes_skipped.json").write_text(json.dumps(skipped, indent=1) + "\n")
    elif not (out_dir / "runs.json").is_file():
        raise StudyError(f"no {out_dir / 'runs.json'}: --from-results needs a results folder built from a lake")
    runs = json.loads((out_dir / "runs.json").read_text())
    res = analyse(study, out_dir)
    for old in out_dir.glob("fig_*.png"):
        old.unlink()
    figures = draw_figures(study, res["curves"], out_dir)
    scale = draw_scale_figure(study, res["cells"], out_dir)
    if scale is not None:
        figures.append(scale)
    figures += draw_eval_figures(study, res["eval_cells"], res["eval_seeds"], out_dir)
    verdicts = {"study": study.name, "registered": study.registered, "seeds": study.seeds,
                "total_steps": {str(k): v for k, v in study.total_steps.items()},
                "alpha": 0.05, "correction": "holm", "predictions": res["verdicts"]}
    (out_dir / "verdicts.json").write_text(json.dumps(verdicts, indent=1, sort_keys=True) + "\n")
    (out_dir / "cells.json").write_text(json.dumps(res["cells"], indent=1, sort_keys=True) + "\n")
    if res["decision"] is not None:
        (out_dir / "decision.json").write_text(json.dumps(
            {"study": study.name, "rule": study.decision, "levels": res["decision"]}, indent=1, sort_keys=True) + "\n")
    report = render_markdown(study, res, runs, figures, None, out_dir)
    section = evaluation_section(out_dir) if study.evaluations else []
    (out_dir / "report.md").write_text(report.rstrip("\n") + "\n\n" + "\n".join(section) if section else report)
    summary = [f"{v['id']}: {v['verdict']} (diff {_fmt(v['diff'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]; "
               f"{decided_by(v)})" for v in res["verdicts"]]
    return {"summary": summary, "verdicts": res["verdicts"], "figures": figures, "carried": carried}


__all__ = ["METRICS", "analyse", "build_report", "check_evaluations", "copy_policies", "draw_eval_figures",
           "CELL_METRICS", "TableBlock", "cells_front_table", "evaluation_section", "extract_metrics",
           "fill_table_blocks", "front_table", "play_evaluations", "results_front_table", "run_evaluations",
           "summary_table", "table_blocks"]
