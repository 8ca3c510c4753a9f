"""``karmic lake check``: known answers for every kind of problem, one line each, exit codes."""

from __future__ import annotations

import json
import shutil
import zipfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from karmic.cli import app
from pipelines import commits
from pipelines.lake_check import check_lake
from pipelines.schema import TVT_TRANSPORTS_SCHEMA
from pipelines.simulate import simulate


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    lake = tmp_path_factory.mktemp("check") / "lake"
    simulate(lake, episodes=4, seed=1, grid_size=10, max_steps=10, run_id="a", flush_episodes=2)
    simulate(lake, episodes=2, seed=2, grid_size=10, max_steps=10, run_id="b")
    return lake


@pytest.fixture
def lake(base, tmp_path):
    shutil.copytree(base, tmp_path / "lake")
    return tmp_path / "lake"


def _rows(path) -> int:
    return pq.read_metadata(path).num_rows


def test_a_sound_lake_is_ok_and_exits_0(lake):
    assert check_lake(lake) == []
    res = CliRunner().invoke(app, ["lake", "check", "--lake", str(lake)])
    assert res.exit_code == 0 and res.stdout.startswith("OK: ") and len(res.stdout.splitlines()) == 1


def test_each_problem_is_one_line_and_exit_1(lake):
    ev = sorted((lake / "events" / "run_id=a").glob("*.parquet"))
    # a part written twice (what the resume bug did): every row of it a duplicate
    shutil.copy(ev[1], ev[1].with_name("part-000099.parquet"))
    commits.commit(lake, "events", commits.record_from_file("a", ev[1].with_name("part-000099.parquet")))
    # a part its writer did not live to commit
    shutil.copy(ev[0], ev[0].with_name("part-000098.parquet"))
    # a run's rows without its run.json
    shutil.copytree(lake / "episodes" / "run_id=b", lake / "episodes" / "run_id=ghost")
    # a finished run that lost a part: episodes 2..3 of run a's actions
    sorted((lake / "actions" / "run_id=a").glob("*.parquet"))[1].unlink()  # (its commit stays)
    # a torn part and a temporary file of a killed writer (pid 2**22 + 1: no such process)
    torn = lake / "episodes" / "run_id=a" / "part-000077.parquet"
    torn.write_bytes(ev[0].read_bytes()[:200])
    tmpf = lake / "events" / "run_id=b" / f".part-000001.parquet.tmp-{2**22 + 1}"
    tmpf.write_bytes(b"PAR1")
    got = check_lake(lake)
    dup_rows = _rows(ev[1])
    assert got[0].startswith(f"torn: {torn}: unreadable Parquet (")  # pyarrow's reason follows
    assert got[1:] == [
        f"torn: {tmpf}: temporary file of a killed writer (never read; safe to delete, a resume of run b removes it)",
        f"uncommitted: {ev[0].with_name('part-000098.parquet')}: a part no commit names (its writer was killed "
        "before committing it; a resume of run a commits it)",
        f"uncommitted: {lake / 'episodes' / 'run_id=ghost' / 'part-000000.parquet'}: a part no commit names (its "
        "writer was killed before committing it; a resume of run ghost commits it)",
        f"missing: {sorted((lake / 'actions' / 'run_id=a').glob('*.parquet'))[0].with_name('part-000001.parquet')}: "
        "committed (10 rows) but not in the lake (or unreadable)",
        f"duplicates: events of run a: {dup_rows + _rows(ev[0])} row(s) written more than once (episodes 0 .. 3)",
        "missing: actions of run a: 2 of its 4 episodes (episodes 0 .. 3, highest present 1)",
        "orphans: episodes of run ghost: 2 episode(s) without events (first 0)",
        "orphans: episodes of run ghost: no runs/run_id=ghost/run.json",
    ]
    res = CliRunner().invoke(app, ["lake", "check", "--lake", str(lake)])
    assert res.exit_code == 1 and res.stdout.splitlines() == got


def _train_run(lake, run_id: str, status: str, checkpoint: int | None, episodes: range) -> None:
    """A training run's run.json (2 envs, 10-step rollouts of 10-step episodes: one round per
    update), a checkpoint after ``checkpoint`` updates and events of ``episodes``."""
    d = lake / "runs" / f"run_id={run_id}"
    d.mkdir(parents=True)
    d.joinpath("run.json").write_text(json.dumps({
        "run_id": run_id, "kind": "train", "status": status, "num_envs": 2,
        "train_config": {"num_steps": 10, "num_envs": 2}, "config": {"max_steps": 10}}))
    if checkpoint is not None:
        c = lake / "checkpoints" / f"run_id={run_id}"
        c.mkdir(parents=True)
        with zipfile.ZipFile(c / f"ckpt-{checkpoint:06d}.pt", "w") as z:
            z.writestr("archive/data.pkl", b"x")
    one = pc.field("episode") == 0
    src = pq.read_table(sorted((lake / "events" / "run_id=a").glob("*.parquet"))[0]).filter(one)
    e = lake / "events" / f"run_id={run_id}"
    e.mkdir(parents=True)
    for ep in episodes:
        t = src.set_column(1, "episode", pa.array([ep] * src.num_rows, pa.int64()))
        pq.write_table(t, e / f"round-{ep:06d}.parquet")
        commits.commit(lake, "events", commits.record_of(run_id, f"round-{ep:06d}.parquet", t))
    ep_src = pq.read_table(sorted((lake / "episodes" / "run_id=a").glob("*.parquet"))[0]).filter(one)
    ed = lake / "episodes" / f"run_id={run_id}"
    ed.mkdir(parents=True)
    for ep in episodes:
        t = ep_src.set_column(1, "episode", pa.array([ep] * ep_src.num_rows, pa.int64()))
        pq.write_table(t, ed / f"round-{ep:06d}.parquet")
        commits.commit(lake, "episodes", commits.record_of(run_id, f"round-{ep:06d}.parquet", t))


def test_rows_past_a_killed_runs_checkpoint_are_uncommitted(lake):
    # checkpoint after update 2 = 2 rounds = episodes 0..3 committed; 4..6 are past it
    _train_run(lake, "killed", "running", 2, range(7))
    _train_run(lake, "fresh", "running", None, range(2))
    _train_run(lake, "done", "completed", 3, range(6))
    # transports of updates 1 and 2 of the killed run, update 2 in two parts
    tr = lake / "tvt_transports" / "run_id=killed"
    tr.mkdir(parents=True)
    row = {"run_id": "killed", "agent": "agent_0", "source_episode": 2, "source_t": 5,
           "target_episode": 0, "target_t": 1, "amount": 0.5, "mode": "learned", "head": 0}
    for name, update in (("update-000001", 1), ("update-000002", 2), ("part-000000", 2)):
        t = pa.Table.from_pylist([{**row, "update": update}], schema=TVT_TRANSPORTS_SCHEMA)
        pq.write_table(t, tr / f"{name}.parquet")
        commits.commit(lake, "tvt_transports", commits.record_of("killed", f"{name}.parquet", t))
    got = check_lake(lake)
    assert got == [
        "duplicates: tvt_transports of run killed: 1 row(s) written more than once (updates 2 .. 2)",
        "uncommitted: run fresh (running): 2 episode(s) 0 .. 1 past its last checkpoint (update none): "
        "`karmic train --resume fresh` rewrites them identically, unless it is still running",
        "uncommitted: run killed (running): 3 episode(s) 4 .. 6 past its last checkpoint (update 2): "
        "`karmic train --resume killed` rewrites them identically, unless it is still running",
        "uncommitted: run killed (running): transports of 1 update(s) past its last checkpoint (update 2)",
    ], got


def test_a_simulation_that_did_not_finish_is_uncommitted(lake):
    meta = json.loads((lake / "runs" / "run_id=b" / "run.json").read_text())
    meta["status"] = "running"
    (lake / "runs" / "run_id=b" / "run.json").write_text(json.dumps(meta))
    assert check_lake(lake) == [
        "uncommitted: simulated run b did not finish (status running): its rows are a partial simulation"]


def test_no_lake_is_one_line_and_exit_2(tmp_path):
    res = CliRunner().invoke(app, ["lake", "check", "--lake", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "lake not found" in res.stderr


def test_a_lake_from_before_the_log_stays_readable_and_is_migrated_by_its_next_writer(lake):
    from karmic.lake import connect

    def count(sql="select count(*), count(distinct run_id) from events"):
        return connect(lake).sql(sql).fetchall()[0]

    with_log = count()
    shutil.rmtree(lake / "_log")  # the layout of a lake written before the commit log
    assert count() == with_log  # read by glob
    simulate(lake, episodes=1, seed=3, grid_size=10, max_steps=10, run_id="c")  # its first writer
    assert (lake / "_log" / "events" / "_ready").is_file()
    n_c = pq.read_metadata(next((lake / "events" / "run_id=c").glob("*.parquet"))).num_rows
    assert count() == (with_log[0] + n_c, 3)  # the old parts were committed before the new one
    assert check_lake(lake) == []
    shutil.rmtree(lake / "_log")
    res = CliRunner().invoke(app, ["lake", "migrate", "--lake", str(lake)])
    assert res.exit_code == 0 and "events: 4 part(s) committed" in res.stdout  # a: 2 parts, b, c, res.output
    assert count() == (with_log[0] + n_c, 3)


def test_an_evaluations_agents_written_twice_are_duplicates(lake):
    """eval_agents (who played whom in a `karmic evaluate` run) is checked like every table: a sound
    one is no problem, a second copy of it is one line naming the run and its agents."""
    from pipelines.schema import EVAL_AGENTS_SCHEMA

    d = lake / "eval_agents" / "run_id=b"
    d.mkdir(parents=True)
    t = pa.Table.from_pylist([
        {"run_id": "b", "agent": f"agent_{i}", "role": "focal" if i == 0 else "background", "policy": "random",
         "source": "scripted", "scenario": "cross-play"} for i in range(2)], schema=EVAL_AGENTS_SCHEMA)
    pq.write_table(t, d / "part-000000.parquet")
    commits.commit(lake, "eval_agents", commits.record_of("b", "part-000000.parquet", t))
    assert check_lake(lake) == []
    pq.write_table(t, d / "part-000001.parquet")
    commits.commit(lake, "eval_agents", commits.record_of("b", "part-000001.parquet", t))
    assert check_lake(lake) == ["duplicates: eval_agents of run b: 2 agent row(s) written more than once "
                                "(agent_0, agent_1)"]
