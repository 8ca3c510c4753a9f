"""``karmic study reproduce``: run committed cells again from their recorded plans and compare.

A results folder records, for every cell of a study, the plan its run ran with (``runs.json``:
``plan``, the TrainConfig or simulate settings of its task) and one row per episode of every
count its metrics need (``metrics.parquet``). Here a cell's plan runs again, under the same run
id, in a scratch lake (never the study's), the new run is measured by the same SQL
(``queries/study/metrics.sql``), and its rows are compared with the committed ones: the same
episodes, every integer and text column equal, floats to 1e-9 relative (DuckDB may add a run's
floats in another order). Same seed, same code, same device type: the same events, so the same
rows; a difference names the episode and the column.

Uses: a new install (another torch build, another CPU) against the committed results; a code
change that should leave runs as they were. A cell costs what its run cost (``karmic study table
NAME --times``). A yoked cell's run reads its partner's transports, so the partner's cell runs
first in the same scratch lake, and is compared too.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.study import Study, StudyError, row_key
from pipelines.study_report import ADDED_COLUMNS, _same, run_metrics

CELL_FIELDS = ("run_id", "condition", "grid_size", "level", "seed", "scripted")
MADE_WITH = ("torch", "commit", "cpu")  # of a run's recorded versions, what reproduce reports


def find_cells(runs: list[dict[str, Any]], specs: list[str]) -> list[dict[str, Any]]:
    """The runs.json entries that ``specs`` name: a run id, a cell key (``LEVEL-COND-gG-sS``) or,
    where it names one cell, a key without its level (``COND-gG-sS``)."""
    by_id = {r["run_id"]: r for r in runs}
    by_key = {row_key(r): r for r in runs}
    out = []
    for spec in specs:
        hit = by_id.get(spec) or by_key.get(spec)
        if hit is None:
            tail = [r for k, r in by_key.items() if k.endswith(f"-{spec}")]
            if len(tail) > 1:
                raise StudyError(f"cell {spec!r} is in {len(tail)} levels; name one: "
                                 f"{', '.join(sorted(row_key(r) for r in tail))}")
            hit = tail[0] if tail else None
        if hit is None:
            example = row_key(runs[0]) if runs else "LEVEL-COND-gG-sS"
            raise StudyError(f"no cell {spec!r} in runs.json; name a run id or a cell key such as {example}")
        if hit not in out:
            out.append(hit)
    return out


def compare_rows(want: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[str]:
    """One line per difference between a run's committed rows and its new ones (by episode). A
    column the committed rows lack, or hold null where the column is newer than them
    (``ADDED_COLUMNS``), is not compared: those runs were not measured so."""
    problems = []
    w = {r["episode"]: r for r in want}
    g = {r["episode"]: r for r in got}
    if set(w) != set(g):
        only_w, only_g = sorted(set(w) - set(g)), sorted(set(g) - set(w))
        problems.append(f"episodes differ: {len(w)} committed, {len(g)} now"
                        + (f"; not made again: {only_w[:5]}" if only_w else "")
                        + (f"; new: {only_g[:5]}" if only_g else ""))
    for ep in sorted(set(w) & set(g)):
        for col in sorted(set(w[ep]) & set(g[ep])):
            a, b = w[ep][col], g[ep][col]
            if a is None and col in ADDED_COLUMNS:
                continue
            if not _same(a, b):
                problems.append(f"episode {ep}: {col} = {a} committed, {b} now")
    return problems


def _partners(study: Study, runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each yoked cell's partner entry, by the yoked run's id: the run its run.json named
    (``yoke_run`` in runs.json), else the study's pairing (the partner condition's cell of the next
    seed, ``pipelines.study.manifest_for``), which is how the sweep paired them."""
    from pipelines.study import manifest_for

    by_id = {r["run_id"]: r for r in runs}
    by_key = {row_key(r): r for r in runs}
    paired = {e["key"]: e["yoke"] for e in manifest_for(study)["tasks"] if e.get("yoke")}
    out = {}
    for r in runs:
        key = row_key(r)
        if r.get("yoke_run") is None and key not in paired:
            continue
        partner = by_id.get(r["yoke_run"]) if r.get("yoke_run") else by_key.get(paired[key])
        if partner is None:
            raise StudyError(f"{key}: its partner run ({r.get('yoke_run') or paired[key]}) is not in runs.json")
        out[r["run_id"]] = partner
    return out


def _plan(entry: dict[str, Any]) -> dict[str, Any]:
    if not (entry.get("carried") or entry.get("status") in ("completed", "finished")):
        raise StudyError(f"{row_key(entry)}: the results hold no completed run of it (status "
                         f"{entry.get('status') or 'not run'}): nothing to compare with")
    plan = entry.get("plan")
    if not plan:
        raise StudyError(f"{row_key(entry)}: runs.json records no plan for its run (a run the study's manifest "
                         "did not know), so it cannot be run again")
    return plan


def _run(entry: dict[str, Any], lake: str, partner: dict[str, Any] | None = None) -> dict[str, Any]:
    from pipelines.sweep import run_task

    plan = _plan(entry)
    if entry.get("scripted"):
        payload = {"lake": lake, "simulate": plan, "run_id": entry["run_id"], "seed": entry["seed"],
                   "grid_size": entry["grid_size"]}
    else:
        payload = {"lake": lake, "config": {**plan, "run_id": entry["run_id"]}}
        if partner is not None:  # the sweep hands a yoked task its partner's run when it starts
            payload["config"]["tvt_yoke_run"] = partner["run_id"]
    out = run_task(payload)
    if out.get("status") != "completed":
        raise StudyError(f"{row_key(entry)}: its run failed again: {out.get('error') or out.get('status')}")
    if out.get("run_id") != entry["run_id"]:  # a simulated cell retried under another id: its rows say so
        raise StudyError(f"{row_key(entry)}: ran as {out.get('run_id')}, not {entry['run_id']}")
    return out


def reproduce(study: Study, out_dir: Path, specs: list[str], scratch: str | None = None,
              say=print) -> list[dict[str, Any]]:
    """Run the named cells of ``out_dir`` again in ``scratch`` (default: a temporary lake) and
    compare; one dict a cell run (partners included): ``cell``, ``run_id``, ``episodes``,
    ``seconds``, ``recorded`` and ``now`` (torch, commit, cpu: ``MADE_WITH``), ``problems``
    (empty: reproduced)."""
    import torch

    from pipelines.sweep import run_status
    from pipelines.writer import versions

    now = {**versions(), "torch": torch.__version__}
    now = {k: now.get(k) for k in MADE_WITH}
    metrics = out_dir / "metrics.parquet"
    runs_path = out_dir / "runs.json"
    for p in (metrics, runs_path):
        if not p.is_file():
            raise StudyError(f"no {p}: reproduce reads a results folder built by karmic study report {study.name}")
    runs = json.loads(runs_path.read_text())
    targets = find_cells(runs, specs)
    order: list[dict[str, Any]] = []
    partners = _partners(study, runs)
    for t in targets:
        partner = partners.get(t["run_id"])
        if partner is not None and partner not in order:
            order.append(partner)
        if t not in order:
            order.append(t)
    for e in order:  # every plan, and the scratch lake, checked before the first run starts
        _plan(e)
        if scratch and run_status(scratch, e["run_id"]) is not None:
            raise StudyError(f"the scratch lake {scratch} already holds run {e['run_id']}: give a new or empty one")
    table = pq.read_table(metrics)
    results = []
    with tempfile.TemporaryDirectory(prefix="karmic-reproduce-") as tmp:
        lake = scratch or str(Path(tmp) / "lake")
        for e in order:
            say(f"{row_key(e)}: running {e['run_id']} again ...")
            t0 = time.perf_counter()
            _run(e, lake, partners.get(e["run_id"]))
            got = run_metrics(lake, {k: e[k] for k in CELL_FIELDS}).to_pylist()
            want = table.filter(pc.equal(table.column("run_id"), e["run_id"])).to_pylist()
            problems = (compare_rows(want, got) if want else
                        [f"{metrics} has no rows of {e['run_id']}"])
            results.append({"cell": row_key(e), "run_id": e["run_id"], "episodes": len(got),
                            "seconds": round(time.perf_counter() - t0, 1),
                            "recorded": {k: (e.get("versions") or {}).get(k) for k in MADE_WITH},
                            "now": now, "problems": problems})
    return results


def made_with(recorded: dict[str, Any], now: dict[str, Any]) -> str:
    """``torch 2.13.0+cu130 -> 2.13.0+cpu, commit 1669fd01711c (both), cpu ? -> Intel(R) Xeon(R)``:
    what the run was recorded under and what it ran under now (``?``: not recorded)."""
    parts = []
    for k in MADE_WITH:
        a, b = recorded.get(k), now.get(k)
        if a is None and b is None:
            continue
        parts.append(f"{k} {a} (both)" if a == b else f"{k} {a or '?'} -> {b or '?'}")
    return ", ".join(parts)
