"""Helpers of the crash tests: every table of a run, comparable row for row across two runs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# what each table's rows are ordered by (a table compares equal whatever its files' order)
TABLE_KEYS = {
    "events": ["episode", "seq"],
    "episodes": ["episode", "agent"],
    "actions": ["episode", "agent"],
    "tvt_transports": ["update", "agent", "source_episode", "source_t", "target_episode", "target_t",
                       "head", "mode", "amount"],
}
WALL_CLOCK = ("started_at", "finished_at")


def table_rows(lake: Path, table: str, run_id: str) -> pa.Table | None:
    files = sorted((lake / table / f"run_id={run_id}").glob("*.parquet"))
    if not files:
        return None
    t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    t = t.drop([c for c in ("run_id",) if c in t.column_names])
    return t.sort_by([(k, "ascending") for k in TABLE_KEYS[table]])


def run_json(lake: Path, run_id: str) -> dict:
    meta = json.loads((lake / "runs" / f"run_id={run_id}" / "run.json").read_text())
    for k in (*WALL_CLOCK, "run_id", "versions"):
        meta.pop(k, None)
    if isinstance(meta.get("train_config"), dict):
        meta["train_config"].pop("run_id", None)
    return meta


def shard_tables(lake: Path, run_id: str) -> dict[str, pa.Table]:
    d = lake / "trajectories" / f"run_id={run_id}"
    out = {}
    for f in sorted(d.glob("*.parquet")):
        t = pq.read_table(f)
        out[f.name] = t.replace_schema_metadata(None)
    return out


def assert_same_run(lake: Path, a: str, b: str, tables=tuple(TABLE_KEYS)) -> dict[str, int]:
    """Run ``b`` holds exactly run ``a``'s rows in every table (wall-clock columns aside), the same
    kept trajectory shards and the same run.json; returns the row counts compared."""
    counts = {}
    for table in tables:
        ta, tb = table_rows(lake, table, a), table_rows(lake, table, b)
        if ta is None or tb is None:
            assert ta is None and tb is None, f"{table}: only one of the runs has rows"
            continue
        assert ta.num_rows == tb.num_rows, f"{table}: {ta.num_rows} rows uninterrupted, {tb.num_rows} resumed"
        assert ta.equals(tb), f"{table}: rows differ"
        counts[table] = ta.num_rows
    sa, sb = shard_tables(lake, a), shard_tables(lake, b)
    assert sorted(sa) == sorted(sb), f"trajectories: {sorted(sa)} vs {sorted(sb)}"
    for name in sa:
        assert sa[name].drop(["obs"]).equals(sb[name].drop(["obs"])) and sa[name]["obs"] == sb[name]["obs"], name
    assert run_json(lake, a) == run_json(lake, b)
    return counts
