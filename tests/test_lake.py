"""The event lake: round trips, read-only SQL, torn files, crash safety, determinism, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from karmic.cli import app
from karmic.events import EVENT_COLUMNS, EVENT_TYPES, NULL, SPAWN, SPAWN_CAUSES, ZAP_HIT, EventBatch
from karmic.lake import LakeError, connect, fetch, run_query, scan_events
from pipelines.simulate import simulate
from pipelines.writer import LakeWriter, events_table

runner = CliRunner()


def snapshot(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*")) if p.is_file()}


# --- round trip ------------------------------------------------------------------------------
@st.composite
def event_batches(draw):
    n = draw(st.integers(0, 40))
    et = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int8)
    agent = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), np.int16)
    has_target = (et == ZAP_HIT) | ((et == SPAWN) & np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool))
    target = np.where(has_target, (agent + 1) % 7, NULL).astype(np.int16)
    cols = {
        "env": np.zeros(n, np.int32),
        "episode": np.array(sorted(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))), np.int64),
        "t": np.arange(n, dtype=np.int32),
        "seq": np.arange(n, dtype=np.int32),
        "event_type": et,
        "agent": agent,
        "target": target,
        "x": np.arange(n, dtype=np.int16),
        "y": np.arange(n, dtype=np.int16)[::-1].copy(),
        "target_x": np.where(has_target, 3, NULL).astype(np.int16),
        "target_y": np.where(has_target, 4, NULL).astype(np.int16),
        "direction": (np.arange(n) % 4).astype(np.int8),
        "apple_context": np.where(et == ZAP_HIT, np.arange(n) % 2, NULL).astype(np.int8),
        "spawn_cause": np.where(et == SPAWN, np.arange(n) % 3, NULL).astype(np.int8),
    }
    return EventBatch(**{k: v.astype(EVENT_COLUMNS[k]) for k, v in cols.items()})


@settings(max_examples=40, deadline=None)
@given(batch=event_batches())
def test_events_round_trip_through_the_lake(tmp_path_factory, batch):
    lake = tmp_path_factory.mktemp("lake")
    w = LakeWriter(lake, "r1", meta={"kind": "test", "config": {}})
    gs = np.arange(len(batch), dtype=np.int64) * 7
    w.write_events(batch, gs)
    w.close()
    cols, rows = fetch(connect(lake), "select * from events order by episode, seq")
    assert len(rows) == len(batch)
    got = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    order = np.lexsort((batch.seq, batch.episode))
    b = batch.take(order)
    assert got["event_type"] == [EVENT_TYPES[i] for i in b.event_type]
    assert got["agent"] == [f"agent_{i}" for i in b.agent]
    assert got["target"] == [None if i == NULL else f"agent_{i}" for i in b.target]
    assert got["target_x"] == [None if i == NULL else int(i) for i in b.target_x]
    assert got["apple_context"] == [None if i == NULL else bool(i) for i in b.apple_context]
    assert got["spawn_cause"] == [None if i == NULL else SPAWN_CAUSES[i] for i in b.spawn_cause]
    assert got["global_step"] == list(gs[order])
    assert set(got["run_id"]) <= {"r1"}


def test_empty_lake_gives_empty_views(tmp_path):
    con = connect(tmp_path)
    for view in ("events", "episodes", "runs"):
        assert fetch(con, f"select count(*) from {view}")[1] == [(0,)]
    assert "apple_context" in fetch(con, "select * from events")[0]
    assert scan_events(tmp_path).collect().height == 0


# --- a simulated lake ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_lake(tmp_path_factory):
    lake = tmp_path_factory.mktemp("sim")
    simulate(lake, grid_size=10, episodes=4, policy="mixed", matchmaker=True, seed=3, max_steps=150,
             run_id="a", flush_episodes=2)
    simulate(lake, grid_size=10, episodes=3, policy="random", seed=4, max_steps=150, run_id="b",
             flush_episodes=2)
    return lake


def test_simulate_writes_runs_events_episodes(sim_lake):
    con = connect(sim_lake)
    runs = dict(fetch(con, "select run_id, status from runs")[1])
    assert runs == {"a": "completed", "b": "completed"}
    assert fetch(con, "select count(distinct episode) from episodes where run_id = 'a'")[1] == [(4,)]
    # (run_id, episode, seq) is unique
    dup = fetch(con, "select run_id, episode, seq from events group by all having count(*) > 1")[1]
    assert dup == []
    assert len(list((sim_lake / "events" / "run_id=a").glob("part-*.parquet"))) >= 2  # batched flushes
    assert run_query("check_episode_returns", sim_lake)[1] == []
    rigged = fetch(con, "select count(*) from events where spawn_cause = 'rigged'")[1][0][0]
    assert rigged > 0  # the matchmaker rigged some spawns


def test_run_filter_and_polars(sim_lake):
    cols, rows = run_query("episode_summary", sim_lake, run="b")
    assert {r[0] for r in rows} == {"b"} and len(rows) == 3
    n = fetch(connect(sim_lake), "select count(*) from events")[1][0][0]
    assert scan_events(sim_lake).collect().height == n
    with pytest.raises(LakeError, match="run not found"):
        connect(sim_lake, run="nope")


def test_zap_counts_matches_events(sim_lake):
    cols, rows = run_query("zap_counts", sim_lake, run="a")
    ev = scan_events(sim_lake).collect().to_pandas() if False else None  # noqa: F841
    con = connect(sim_lake, run="a")
    fired = dict(fetch(con, "select agent, count(*) from events where event_type = 'ZAP_FIRED' group by agent")[1])
    got = {r[1]: r[2] for r in rows}
    assert {k: v for k, v in got.items() if v} == fired
    hits = fetch(con, "select count(*) from events where event_type = 'ZAP_HIT'")[1][0][0]
    assert sum(r[3] for r in rows) == hits == sum(r[4] for r in rows)


def test_same_seed_same_events(tmp_path):
    for rid in ("x", "y"):
        simulate(tmp_path, grid_size=10, episodes=2, policy="mixed", matchmaker=True, seed=9,
                 max_steps=120, run_id=rid)
    simulate(tmp_path, grid_size=10, episodes=2, policy="mixed", matchmaker=True, seed=10,
             max_steps=120, run_id="z")
    con = connect(tmp_path)
    q = "select * exclude (run_id) from events where run_id = '{}' order by episode, seq"
    x, y, z = (fetch(con, q.format(r))[1] for r in "xyz")
    assert x == y and x != z


# --- read-only, torn files, CLI errors ---------------------------------------------------------
@pytest.mark.parametrize("sql", [
    "copy (select 1) to 'out.csv'",
    "create table t as select 1",
    "attach 'x.db'",
    "install httpfs",
    "select 1; drop view events",
    "insert into events select * from events",
])
def test_sql_cannot_write(sim_lake, sql, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(sim_lake)
    res = runner.invoke(app, ["sql", sql, "--lake", str(sim_lake)])
    assert res.exit_code == 2
    assert not (tmp_path / "out.csv").exists()
    assert snapshot(sim_lake) == before


def test_sql_formats(sim_lake):
    res = runner.invoke(app, ["sql", "select run_id, count(*) as n from episodes group by 1 order by 1",
                              "--format", "json", "--lake", str(sim_lake)])
    assert res.exit_code == 0
    assert json.loads(res.stdout) == [{"run_id": "a", "n": 20}, {"run_id": "b", "n": 15}]
    res = runner.invoke(app, ["query", "episode_summary", "--format", "csv", "--run", "b", "--lake", str(sim_lake)])
    assert res.exit_code == 0 and res.stdout.splitlines()[0].startswith("run_id,episode")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "karmic.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, msg", [
    (["query", "no_such_query"], "unknown query"),
    (["sql", "selec oops"], "error"),
    (["sql", "select 1", "--format", "xml"], "--format"),
    (["query", "zap_counts", "--run", "nope"], "run not found"),
])
def test_cli_errors_are_one_line(sim_lake, args, msg):
    before = snapshot(sim_lake)
    r = _cli(*args, "--lake", str(sim_lake))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(sim_lake) == before


def test_missing_lake_and_bad_options(tmp_path):
    r = _cli("sql", "select 1", "--lake", str(tmp_path / "nope"))
    assert r.returncode == 2 and "lake not found" in r.stderr and len(r.stderr.splitlines()) == 1
    r = _cli("simulate", "--episodes", "0", "--lake", str(tmp_path / "new"))
    assert r.returncode == 2 and not (tmp_path / "new").exists()
    r = _cli("simulate", "--grid-size", "2", "--lake", str(tmp_path / "new"))
    assert r.returncode == 2 and not (tmp_path / "new").exists()
    r = _cli("simulate", "--policy", "nonsense", "--lake", str(tmp_path / "new"))
    assert r.returncode == 2 and not (tmp_path / "new").exists() and "Traceback" not in r.stderr


def test_torn_or_foreign_file_is_one_line_naming_it(tmp_path):
    simulate(tmp_path, grid_size=10, episodes=1, policy="random", seed=1, max_steps=50, run_id="ok")
    bad = tmp_path / "events" / "run_id=ok" / "part-999999.parquet"
    good = next((tmp_path / "events" / "run_id=ok").glob("part-000000.parquet"))
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a torn copy
    # not committed (pipelines.commits): readers do not see it, `karmic lake check` does
    r = _cli("sql", "select count(*) from events", "--lake", str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = _cli("lake", "check", "--lake", str(tmp_path))
    assert r.returncode == 1 and "part-999999.parquet" in r.stdout
    # committed (a part the log names, torn afterwards): the query fails, naming it
    from pipelines import commits

    commits.commit(tmp_path, "events", commits.Commit("ok", bad.name, 1, 0, 0, "00000000"))
    r = _cli("sql", "select count(*), max(seq) from events", "--lake", str(tmp_path))
    assert r.returncode == 2 and "part-999999.parquet" in r.stderr and len(r.stderr.splitlines()) == 1
    # a bare count is the log's (karmic.commands._fast): it opens no part, torn or not
    r = _cli("sql", "select count(*) from events", "--lake", str(tmp_path), "--format", "csv")
    assert r.returncode == 0 and r.stdout.splitlines()[1] == str(len(events_table_rows(good)) + 1)
    bad.write_text("not parquet at all")
    r = _cli("query", "zap_counts", "--lake", str(tmp_path))
    assert r.returncode == 2 and "part-999999.parquet" in r.stderr


def events_table_rows(part: Path) -> list:
    return pq.read_table(part).column("seq").to_pylist()


def test_query_commands_import_neither_torch_nor_the_env(sim_lake):
    code = (
        "import sys; from typer.testing import CliRunner; from karmic.cli import app; "
        f"r = CliRunner().invoke(app, ['query', 'zap_counts', '--lake', {str(sim_lake)!r}]); "
        "assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'numba', 'karmic.envs.core') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# --- crash safety ------------------------------------------------------------------------------------
def _start_sim(lake: Path, run_id_hint: str, episodes: int = 100000):
    return subprocess.Popen(
        [sys.executable, "-m", "karmic.cli", "simulate", "--policy", "random", "--episodes", str(episodes),
         "--max-steps", "100", "--grid-size", "10", "--seed", "5", "--lake", str(lake)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _wait_parts(lake: Path, n: int, proc, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if len(list(lake.glob("events/run_id=*/part-*.parquet"))) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"simulate ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no part files appeared")


def test_sigkill_leaves_a_whole_queryable_lake_and_later_runs_append(tmp_path):
    simulate(tmp_path, grid_size=10, episodes=2, policy="random", seed=1, max_steps=50, run_id="before")
    before = snapshot(tmp_path)
    p = _start_sim(tmp_path, "killed")
    _wait_parts(tmp_path, 3, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    for f in tmp_path.rglob("*.parquet"):
        pq.read_metadata(f)  # every visible file is a whole Parquet file
    con = connect(tmp_path)
    status = dict(fetch(con, "select run_id, status from runs")[1])
    killed = [r for r in status if r != "before"]
    assert len(killed) == 1 and status[killed[0]] == "running"
    for name in ("zap_counts", "episode_summary", "check_episode_returns"):
        run_query(name, tmp_path)
    simulate(tmp_path, grid_size=10, episodes=1, policy="random", seed=2, max_steps=50, run_id="after")
    after = snapshot(tmp_path)
    for k, v in before.items():
        assert after[k] == v  # nothing earlier is lost or changed
    assert dict(fetch(connect(tmp_path), "select run_id, status from runs")[1])["after"] == "completed"


def test_ctrl_c_flushes_and_marks_interrupted(tmp_path):
    p = _start_sim(tmp_path, "int")
    _wait_parts(tmp_path, 1, p)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130 and "Traceback" not in err
    con = connect(tmp_path)
    (rid, status), = fetch(con, "select run_id, status from runs")[1]
    assert status == "interrupted"
    ep = fetch(con, "select count(distinct episode) from episodes")[1][0][0]
    done = json.loads((tmp_path / "runs" / f"run_id={rid}" / "run.json").read_text())["episodes_done"]
    assert ep == done > 0  # everything simulated was flushed
    assert run_query("check_episode_returns", tmp_path)[1] == []
    assert not [f for f in os.listdir(tmp_path / "events" / f"run_id={rid}") if f.endswith(".tmp")]


def test_events_table_schema_is_explicit():
    from pipelines.schema import EVENTS_SCHEMA, SCHEMA_VERSION

    t = events_table("r", EventBatch.empty(0), np.zeros(0, np.int64))
    assert t.schema.equals(EVENTS_SCHEMA)
    assert t.schema.metadata[b"karmic_schema_version"] == str(SCHEMA_VERSION).encode()


def test_a_lake_written_before_a_column_existed_still_answers(tmp_path):
    """Episodes written before `encounters` was counted (every lake before 2026-12-04): the
    column reads as null and the views that use it (episode_welfare) bind and answer."""
    import shutil

    import pyarrow.parquet as pq

    lake = tmp_path / "old"
    simulate(lake, grid_size=10, episodes=2, policy="mixed", seed=5, max_steps=60, run_id="old")
    for f in (lake / "episodes").rglob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.drop(["encounters"]), tmp_path / "x.parquet")
        shutil.move(tmp_path / "x.parquet", f)
    con = connect(lake)
    assert fetch(con, "select count(*), count(encounters) from episodes")[1] == [(10, 0)]
    assert len(fetch(con, "select * from episode_welfare")[1]) == 2
