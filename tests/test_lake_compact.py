"""``karmic lake compact``: finished runs' parts read from a few large files, recorded in the log.

- every view (each table, ``runs``, the derived ``ledger_hits``) returns the same rows, sorted and
  compared in full, before and after a compaction and after a second one once more runs came, for
  the whole lake and for each run (``--run``); the log's counts and lists are unchanged and the
  fast count is DuckDB's;
- a killed compaction (at every step of the protocol, in-process and with SIGKILL) leaves a lake
  that reads the same rows, and running it again completes it;
- the parts of runs that are not finished are never compacted; the ``runs`` view reads no
  ``run.json`` of a compacted run;
- ``karmic lake check`` is clean on a compacted lake and reports compacted files that are not
  what their record says (known answers); bad input is one line and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from karmic.cli import app
from karmic.lake import LakeError, connect, fetch
from pipelines import commits, faults
from pipelines.compact import compact
from pipelines.lake_check import check_lake
from pipelines.schema import EVAL_AGENTS_SCHEMA
from pipelines.simulate import simulate
from pipelines.writer import write_table

TABLES = ("events", "episodes", "actions", "tvt_transports", "eval_agents")
VIEWS = (*TABLES, "runs", "ledger_hits")
TARGET = 150  # rows per compacted file: several files from a small lake


def _train(lake: Path, run_id: str, kill_at: tuple[str, int] | None = None) -> None:
    """A tiny TVT training run (transports every update); ``kill_at``: killed there, left running."""
    from karmic.training.learners import make_trainer
    from karmic.training.ppo import TrainConfig

    cfg = TrainConfig(mode="tvt", grid_size=10, seed=11, num_envs=2, num_steps=10, seq_len=5, hidden=16,
                      latent=8, total_steps=2 * 10 * 4, checkpoint_every=2, num_minibatches=2,
                      update_epochs=1, threads=1, memory_size=30, gamma=0.8, tvt_threshold=0.0,
                      precision="fp32", env_overrides={"max_steps": 10}, run_id=run_id)
    if kill_at is None:
        make_trainer(cfg, lake).run()
        return
    faults.arm(*kill_at)
    try:
        with pytest.raises(faults.InjectedCrash):
            make_trainer(cfg, lake).run()
    finally:
        faults.disarm()


def _running(lake: Path, run_id: str) -> None:
    """A simulation whose run.json says running (one still writing, or killed)."""
    p = lake / "runs" / f"run_id={run_id}" / "run.json"
    meta = json.loads(p.read_text())
    meta["status"] = "running"
    p.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    pytest.importorskip("karmic.envs.core", reason="needs the Harvest env")
    lake = tmp_path_factory.mktemp("compact") / "lake"
    simulate(lake, grid_size=10, episodes=4, policy="random", seed=4, max_steps=40, run_id="a", flush_episodes=1)
    simulate(lake, grid_size=10, episodes=2, policy="mixed", seed=5, max_steps=40, run_id="b", matchmaker=True)
    simulate(lake, grid_size=10, episodes=2, policy="random", seed=6, max_steps=40, run_id="s", flush_episodes=1)
    _running(lake, "s")
    _train(lake, "t")
    _train(lake, "k", kill_at=("update.after_shard", 2))
    rows = [{"run_id": "b", "agent": f"agent_{i}", "role": "focal", "policy": "random", "source": "scripted",
             "scenario": "solo"} for i in range(3)]
    write_table(lake, "eval_agents", "b", pa.Table.from_pylist(rows, schema=EVAL_AGENTS_SCHEMA))
    write_table(lake, "eval_agents", "s", pa.Table.from_pylist(rows[:1], schema=EVAL_AGENTS_SCHEMA))
    return lake


@pytest.fixture
def lake(base, tmp_path) -> Path:
    shutil.copytree(base, tmp_path / "lake")
    return tmp_path / "lake"


def _views(lake: Path, run: str | None = None) -> dict[str, tuple]:
    con = connect(lake, run=run, check_run=False)
    out = {}
    for v in VIEWS:
        cols = con.sql(f"describe select * from {v}").fetchall()
        _, rows = fetch(con, f"select * from {v}")
        out[v] = ([c[:2] for c in cols], sorted(rows, key=repr))
    return out


def _log_state(lake: Path) -> dict:
    return {t: (commits.count(lake, t), [c.name for c in commits.committed(lake, t)], commits.files(lake, t),
                {r: commits.count(lake, t, r) for r in "abstk"}) for t in TABLES}


def _listed_runs(lake: Path, table: str) -> set[str]:
    return {c.run_id for n in commits.names(lake, table) if (c := commits.parse(n)) is not None}


def _assert_compacted(lake: Path) -> None:
    """No compaction left unfinished, every finished run's parts out of the listing."""
    for t in TABLES:
        log = commits.read_log(lake, t)
        assert not log.covered, f"{t}: unfinished compaction {sorted(log.covered)}"
        assert _listed_runs(lake, t) <= {"s", "k"}, (t, _listed_runs(lake, t))


def test_every_view_reads_the_same_rows_after_compactions(lake):
    before, log_before, problems = _views(lake), _log_state(lake), check_lake(lake)
    assert len(problems) == 2  # the running simulation's and the killed run's rows, as before
    per_run = {r: _views(lake, r) for r in "abstk"}
    assert all(before[v][1] for v in VIEWS), [v for v in VIEWS if not before[v][1]]
    results, runs = compact(lake, target_rows=TARGET)
    assert runs == 3 and sum(r.files for r in results) > 5
    _assert_compacted(lake)
    assert _views(lake) == before
    assert _log_state(lake) == log_before
    assert {r: _views(lake, r) for r in "abstk"} == per_run
    assert check_lake(lake) == problems
    # the running simulation finishes, a new run comes: a second compaction takes both
    simulate(lake, grid_size=10, episodes=2, policy="random", seed=7, max_steps=40, run_id="c")
    meta = json.loads((lake / "runs" / "run_id=s" / "run.json").read_text())
    (lake / "runs" / "run_id=s" / "run.json").write_text(json.dumps({**meta, "status": "completed"}))
    before2 = _views(lake)
    assert before2 != before
    results, runs = compact(lake, target_rows=TARGET)
    assert runs == 2 and all(r.finished == 0 for r in results)
    assert _views(lake) == before2
    for t in TABLES:
        assert _listed_runs(lake, t) <= {"k"}
    assert check_lake(lake) == problems[:1]
    # and a third finds nothing to do
    results, runs = compact(lake, target_rows=TARGET)
    assert runs == 0 and sum(r.files for r in results) == 0


def test_running_and_killed_runs_are_never_compacted(lake):
    listed = {t: {n for n in commits.names(lake, t) if (c := commits.parse(n)) and c.run_id in ("s", "k")}
              for t in TABLES}
    assert listed["events"] and listed["tvt_transports"]  # the killed training run wrote transports
    compact(lake, target_rows=TARGET)
    for t in TABLES:
        assert {n for n in commits.names(lake, t) if (c := commits.parse(n)) and c.run_id in ("s", "k")} == listed[t]
        covered = commits.read_log(lake, t, with_covered=True).covered
        assert not any(commits.parse(n).run_id in ("s", "k") for cov in covered.values() for n in cov)
    runs = pq.read_table(next((lake / "runs" / commits.COMPACTED).glob("*.parquet")))
    assert sorted(runs.column("run_id").to_pylist()) == ["a", "b", "t"]


def test_fast_count_is_duckdbs_after_compaction(lake):
    from karmic.commands._fast import run

    compact(lake, target_rows=TARGET)
    for t in ("events", "episodes", "actions", "tvt_transports"):
        for r in (None, "a", "t", "k"):
            want = connect(lake, run=r).sql(f"select count(*) from {t}").fetchall()[0][0]
            assert commits.count(lake, t, r) == want, (t, r)
            args = ["sql", f"select count(*) from {t}", "--lake", str(lake), "--format", "json"]
            res = subprocess.run([sys.executable, "-m", "karmic.cli", *args, *(["--run", r] if r else [])],
                                 capture_output=True, text=True, timeout=120)
            assert res.returncode == 0 and json.loads(res.stdout) == [{"count_star()": want}], res.stderr
    assert run(["sql", "select count(*) from events", "--lake", str(lake)]) is True


def test_runs_view_reads_no_run_json_of_a_compacted_run(lake):
    compact(lake, target_rows=TARGET)
    want = _views(lake)["runs"]
    # a compacted run's run.json is not read (it could be anything now) ...
    (lake / "runs" / "run_id=a" / "run.json").write_text("not json")
    assert _views(lake)["runs"] == want
    # ... the run.json of a run no compaction holds is
    (lake / "runs" / "run_id=s" / "run.json").write_text("not json")
    with pytest.raises(LakeError, match="unreadable run.json.*run_id=s"):
        connect(lake)


STEPS = [("write._compacted", 0), ("compact.events.written", 0), ("compact.events.recorded", 0),
         ("compact.events.move", 0), ("compact.events.move", 3), ("compact.events.moved", 0),
         ("compact.tvt_transports.recorded", 0), ("compact.runs.written", 0)]


@pytest.mark.parametrize("point, hit", STEPS)
def test_a_compaction_killed_at_each_step_reads_the_same_and_completes(lake, point, hit):
    before, log_before, base_problems = _views(lake), _log_state(lake), check_lake(lake)
    faults.arm(point, hit)
    try:
        with pytest.raises(faults.InjectedCrash):
            compact(lake, target_rows=TARGET)
    finally:
        faults.disarm()
    assert _views(lake) == before
    assert _log_state(lake) == log_before
    problems = [p for p in check_lake(lake) if p not in base_problems]
    assert all(p.startswith("uncommitted: ") and "_compacted" in p for p in problems), problems
    compact(lake, target_rows=TARGET)
    _assert_compacted(lake)
    assert _views(lake) == before
    assert _log_state(lake) == log_before
    assert check_lake(lake) == base_problems


def test_a_compaction_killed_by_sigkill_is_finished_by_the_next(lake):
    before, problems = _views(lake), check_lake(lake)
    env = {**os.environ, faults.ENV: "compact.episodes.move:2"}
    cmd = [sys.executable, "-m", "karmic.cli", "lake", "compact", "--lake", str(lake), "--target-rows", str(TARGET)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == -9, res.stderr
    assert (lake / commits.LOG / "_compact.lock").is_file()  # its holder died: taken over below
    assert _views(lake) == before
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "episodes: 0 part(s), 0 row(s) into 0 file(s); finished 1 interrupted compaction(s)" in res.stdout
    _assert_compacted(lake)
    assert _views(lake) == before and check_lake(lake) == problems


def test_lake_check_known_answers_on_a_compacted_lake(lake):
    problems = check_lake(lake)
    compact(lake, target_rows=TARGET)
    assert check_lake(lake) == problems
    log = commits.read_log(lake, "events", with_covered=True)
    c0, c1 = log.compactions[0], log.compactions[1]
    f0, f1 = c0.path(lake, "events"), c1.path(lake, "events")
    t = pq.read_table(f0)
    pq.write_table(t.slice(0, t.num_rows - 1), f0)  # a row short of its record
    f1.rename(f1.with_name("elsewhere.parquet"))  # gone (and an unnamed compacted file)
    again = log.covered[c0.cid][0]  # a covered part committed again
    (commits.log_dir(lake, "events") / again).touch()
    got = [p for p in check_lake(lake) if p not in problems]
    assert got == [
        f"torn: {f0}: holds {c0.rows - 1} rows (keys {c0.lo} .. {c0.hi}, schema {c0.schema}), its record "
        f"{c0.rows} (keys {c0.lo} .. {c0.hi}, schema {c0.schema}): not the rows of the parts it replaces",
        f"missing: {f1}: compacted ({c1.rows} rows) but not in the lake",
        f"duplicates: {commits.log_dir(lake, 'events') / again}: committed again after compaction {c0.cid} "
        "covered it (its rows are read twice; `karmic lake compact` moves it out)",
        f"uncommitted: {f1.with_name('elsewhere.parquet')}: a compacted file no record names (never read; left "
        "by a compaction killed before its commit, which `karmic lake compact` redoes)",
    ], got
    res = CliRunner().invoke(app, ["lake", "check", "--lake", str(lake)])
    assert res.exit_code == 1 and res.stdout.splitlines() == got + problems


def test_the_marker_committed_again_is_moved_out_and_migrate_does_not_recommit(lake):
    before, problems = _views(lake), check_lake(lake)
    compact(lake, target_rows=TARGET)
    log = commits.read_log(lake, "events", with_covered=True)
    again = next(iter(log.covered.values()))[0]
    (commits.log_dir(lake, "events") / again).touch()
    compact(lake, target_rows=TARGET)
    assert again not in commits.names(lake, "events") and _views(lake) == before
    res = CliRunner().invoke(app, ["lake", "migrate", "--lake", str(lake)])
    assert res.exit_code == 0, res.output
    assert _views(lake) == before and check_lake(lake) == problems


@pytest.mark.parametrize("args, message", [
    (["--table", "nope"], "unknown table 'nope'"),
    (["--target-rows", "0"], "--target-rows must be >= 1"),
])
def test_bad_input_is_one_line(lake, args, message):
    res = CliRunner().invoke(app, ["lake", "compact", "--lake", str(lake), *args])
    assert res.exit_code != 0 and len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.output


def test_no_lake_and_a_held_lock_are_one_line(lake, tmp_path):
    res = CliRunner().invoke(app, ["lake", "compact", "--lake", str(tmp_path / "nope")])
    assert res.exit_code != 0 and len(res.stderr.strip().splitlines()) == 1 and "lake not found" in res.stderr
    lock = lake / commits.LOG / "_compact.lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "then"}))
    res = CliRunner().invoke(app, ["lake", "compact", "--lake", str(lake)])
    assert res.exit_code != 0 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "another compaction holds" in res.stderr and not (lake / "events" / commits.COMPACTED).exists()


def _extend(lake: Path, run_id: str, total_steps: int) -> None:
    from karmic.training.learners import resumed_trainer

    resumed_trainer(run_id, lake, total_steps=total_steps).run()


def _drop_compactions(lake: Path) -> None:
    """The same lake as if it had never been compacted: the covered markers back, the records gone."""
    for t in (*TABLES, "runs"):
        d = lake / "_log" / t
        for cid_dir in (d / commits.COVERED).glob("*") if (d / commits.COVERED).is_dir() else []:
            for m in cid_dir.iterdir():
                m.rename(d / m.name)
        shutil.rmtree(d / commits.COVERED, ignore_errors=True)
        shutil.rmtree(d / commits.COMPACTED, ignore_errors=True)
    shutil.rmtree(lake / "runs" / commits.REOPENED, ignore_errors=True)


def _views_no_clock(lake: Path) -> dict[str, tuple]:
    """``_views`` without the wall-clock columns (two runs of the same extension differ there only)."""
    out = _views(lake)
    cols, rows = out["runs"]
    keep = [i for i, c in enumerate(cols) if c[0] not in ("started_at", "finished_at")]
    out["runs"] = ([cols[i] for i in keep], sorted((tuple(r[i] for i in keep) for r in rows), key=repr))
    return out


def test_a_compacted_run_extended_later_reads_as_if_never_compacted(lake, tmp_path):
    """``karmic train --resume RUN --total-steps MORE`` on a finished, compacted run: its run.json
    is rewritten and its later updates committed; every view equals the uncompacted lake's."""
    plain = tmp_path / "plain"
    shutil.copytree(lake, plain)
    compact(lake, target_rows=TARGET)
    _assert_compacted(lake)
    for d in (lake, plain):
        _extend(d, "t", total_steps=2 * 10 * 6)
    assert (lake / "runs" / commits.REOPENED / "run_id=t").exists()
    assert _views_no_clock(lake) == _views_no_clock(plain)
    finished = json.loads((lake / "runs" / "run_id=t" / "run.json").read_text())["finished_at"]
    assert fetch(connect(lake), "select status, finished_at from runs where run_id = 't'")[1] == [("completed", finished)]
    assert check_lake(lake) == check_lake(plain)
    compact(lake, target_rows=TARGET)  # a second compaction takes the new parts; run t still from its run.json
    assert _views_no_clock(lake) == _views_no_clock(plain)
    _drop_compactions(lake)
    assert _views_no_clock(lake) == _views_no_clock(plain)
