"""Known-answer tests for the metric queries (efficiency, equality, sustainability, peace).

Each test writes a tiny hand-written lake (docs/DESIGN.md hive layout, Parquet via pyarrow), opens it
through ``karmic.lake.connect`` (or an equivalent DuckDB connection while that does not exist) and
checks the numbers a person computed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

QUERIES = Path(__file__).resolve().parents[1] / "queries"

EVENT_FIELDS = [
    ("run_id", pa.string()),
    ("episode", pa.int64()),
    ("t", pa.int32()),
    ("global_step", pa.int64()),
    ("seq", pa.int32()),
    ("event_type", pa.string()),
    ("agent", pa.string()),
    ("target", pa.string()),
    ("x", pa.int16()),
    ("y", pa.int16()),
    ("target_x", pa.int16()),
    ("target_y", pa.int16()),
    ("direction", pa.int8()),
    ("apple_context", pa.bool_()),
    ("spawn_cause", pa.string()),
]
EPISODE_FIELDS = [
    ("run_id", pa.string()),
    ("episode", pa.int64()),
    ("global_step", pa.int64()),
    ("agent", pa.string()),
    ("steps", pa.int32()),
    ("return", pa.float64()),
    ("apples", pa.int32()),
    ("zaps_fired", pa.int32()),
    ("zaps_hit", pa.int32()),
    ("times_hit", pa.int32()),
    ("frozen_steps", pa.int32()),
    ("condition", pa.string()),
    ("grid_size", pa.int32()),
    ("seed", pa.int64()),
]


def _schema(kind: str) -> pa.Schema:
    """The lake's own Arrow schema when pipelines/schema.py provides it, else docs/DESIGN.md's."""
    try:  # pragma: no cover - depends on the lake engineer's module
        from pipelines import schema as lake_schema

        for name in (f"{kind.upper()}_SCHEMA", f"{kind}_schema"):
            s = getattr(lake_schema, name, None)
            if isinstance(s, pa.Schema):
                return s
    except ImportError:
        pass
    return pa.schema(EVENT_FIELDS if kind == "events" else EPISODE_FIELDS)


def _table(rows: list[dict], kind: str) -> pa.Table:
    schema = _schema(kind)
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.table(cols, schema=schema)


def write_run(
    lake: Path,
    run_id: str,
    *,
    condition: str | None,
    grid_size: int,
    seed: int,
    episodes: list[dict],
    events: list[dict],
    config: dict | None = None,
) -> None:
    """Write one run: run.json, one episodes part and one events part (hive layout)."""
    meta = {"condition": condition, "grid_size": grid_size, "seed": seed}
    for r in episodes:
        r.setdefault("run_id", run_id)
        for k, v in meta.items():
            r.setdefault(k, v)
        for k in ("zaps_fired", "zaps_hit", "times_hit", "frozen_steps", "apples"):
            r.setdefault(k, 0)
        r.setdefault("return", float(r["apples"]))
    for i, r in enumerate(events):
        r.setdefault("run_id", run_id)
        r.setdefault("seq", i)
        r.setdefault("x", 0)
        r.setdefault("y", 0)
        r.setdefault("direction", 0)
    run_dir = lake / "runs" / f"run_id={run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"grid_size": grid_size, "decay": 0.95} | (config or {})
    (run_dir / "run.json").write_text(
        json.dumps(
            {"run_id": run_id, "status": "finished", "config": cfg, **meta},
        )
    )
    for kind, rows in (("episodes", episodes), ("events", events)):
        d = lake / kind / f"run_id={run_id}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(rows, kind), d / "part-0.parquet")


def _fallback_connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        f"create view events as select * from read_parquet('{path}/events/*/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )
    con.execute(
        f"create view episodes as select * from read_parquet('{path}/episodes/*/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )
    con.execute(f"create view runs as select * from read_json_auto('{path}/runs/*/run.json')")
    return con


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        from karmic.lake import connect as lake_connect
    except ImportError:
        return _fallback_connect(path)
    return lake_connect(path)


def run_query(con: duckdb.DuckDBPyConnection, name: str, **params) -> list[dict]:
    for k, v in params.items():
        con.execute(f"set variable {k} = {v!r}")
    rel = con.sql((QUERIES / f"{name}.sql").read_text())
    cols = rel.columns
    return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]


def ep_rows(episode: int, global_step: int, steps: int, per_agent: list[dict]) -> list[dict]:
    return [
        {"episode": episode, "global_step": global_step, "steps": steps, "agent": f"agent_{i}"} | a
        for i, a in enumerate(per_agent)
    ]


def apple(episode: int, t: int, agent: int, global_step: int = 0) -> dict:
    return {
        "episode": episode,
        "t": t,
        "global_step": global_step + t,
        "event_type": "APPLE_EATEN",
        "agent": f"agent_{agent}",
    }


@pytest.fixture
def social_lake(tmp_path: Path) -> Path:
    """r1: two episodes of 10 steps, 3 agents, worked out by hand in the tests below."""
    episodes = ep_rows(
        0,
        0,
        10,
        [
            {"apples": 3, "return": 3.0},
            {"apples": 1, "return": 1.0, "frozen_steps": 5, "times_hit": 1},
            {"apples": 0, "return": 0.0},
        ],
    ) + ep_rows(1, 10, 10, [{"apples": 0, "return": 0.0}] * 3)
    events = [apple(0, 1, 0), apple(0, 2, 0), apple(0, 3, 0), apple(0, 9, 1)]
    write_run(
        tmp_path,
        "r1",
        condition="baseline",
        grid_size=10,
        seed=1,
        episodes=episodes,
        events=events,
    )
    return tmp_path


def by_episode(rows: list[dict]) -> dict[int, dict]:
    return {r["episode"]: r for r in rows}


def test_efficiency_known_answer(social_lake: Path) -> None:
    rows = by_episode(run_query(connect(social_lake), "efficiency"))
    assert rows[0]["efficiency"] == pytest.approx(0.4)  # (3 + 1 + 0) / 10
    assert rows[1]["efficiency"] == 0.0
    assert rows[1]["global_step"] == 10 and rows[0]["condition"] == "baseline"


def test_equality_known_answer(social_lake: Path) -> None:
    rows = by_episode(run_query(connect(social_lake), "equality"))
    # apples (3, 1, 0): ordered-pair |diffs| sum 12, / n^2 = 4/3, mean 4/3 -> Gini 0.5
    assert rows[0]["gini"] == pytest.approx(0.5)
    assert rows[0]["equality"] == pytest.approx(0.5)
    assert rows[1]["equality"] == 1.0  # nobody ate: perfectly equal, not NaN


def test_gini_matches_pairwise_definition(tmp_path: Path) -> None:
    apples = [7, 0, 2, 2, 11]
    write_run(
        tmp_path,
        "g",
        condition="tvt",
        grid_size=10,
        seed=0,
        episodes=ep_rows(0, 0, 5, [{"apples": a} for a in apples]),
        events=[],
    )
    n, mean = len(apples), sum(apples) / len(apples)
    md = sum(abs(a - b) for a in apples for b in apples) / n**2
    (row,) = run_query(connect(tmp_path), "equality")
    assert row["gini"] == pytest.approx(md / (2 * mean))


def test_sustainability_known_answer(social_lake: Path) -> None:
    rows = by_episode(run_query(connect(social_lake), "sustainability"))
    assert rows[0]["sustainability"] == pytest.approx((1 + 2 + 3 + 9) / 4)
    assert rows[0]["apples_eaten"] == 4
    assert rows[1]["sustainability"] is None  # no apple eaten: undefined, not 0


def test_peace_known_answer(social_lake: Path) -> None:
    rows = by_episode(run_query(connect(social_lake), "peace"))
    assert rows[0]["peace"] == pytest.approx((3 * 10 - 5) / 10)
    assert rows[1]["peace"] == 3.0
