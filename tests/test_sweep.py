"""`karmic sweep` end to end: local process pool and a local Ray cluster, retries, resume, bad input.

Tiny budgets (as TINY in test_train.py): 2 envs x 20 steps per update, 20-step episodes, hidden 32,
80 env steps per task = 2 updates, a checkpoint after every update.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from karmic.cli import app
from pipelines.sweep import FAIL_ENV, manifest_path, run_task

pytest.importorskip("karmic.envs.core", reason="needs the Harvest env (karmic.envs.core)")

TINY = ["--total-steps", "80", "--set", "num_envs=2", "--set", "num_steps=20", "--set", "seq_len=10",
        "--set", "hidden=32", "--set", "latent=16", "--set", "max_steps=20", "--set", "checkpoint_every=1"]


def _sweep(*args: str):
    return CliRunner().invoke(app, ["sweep", *args])


def _manifest(lake: Path, sweep_id: str) -> dict:
    return json.loads(Path(manifest_path(str(lake), sweep_id)).read_text())


def _tasks(lake: Path, sweep_id: str) -> dict[str, dict]:
    return {t["key"]: t for t in _manifest(lake, sweep_id)["tasks"]}


def _rows(lake: Path, table: str, run_id: str) -> list[tuple]:
    """A run's table, every column but run_id, in a fixed order."""
    files = str(lake / table / f"run_id={run_id}" / "*.parquet")
    order = "episode, seq" if table == "events" else "episode, agent"
    return duckdb.sql(f"select * exclude (run_id) from read_parquet('{files}') order by {order}").fetchall()


def _run_json(lake: Path, run_id: str) -> dict:
    return json.loads((lake / "runs" / f"run_id={run_id}" / "run.json").read_text())


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """2 conditions x 1 grid x 2 seeds on the local pool; baseline seed 2 fails once after its
    first update and is retried (from its checkpoint)."""
    lake = tmp_path_factory.mktemp("sweep_local")
    mp = pytest.MonkeyPatch()
    mp.setenv(FAIL_ENV, "baseline-g10-s2:1")
    try:
        res = _sweep("--modes", "baseline,matchmaker", "--grid-sizes", "10", "--seeds", "1,2",
                     "--backend", "local", "--workers", "2", "--sweep-id", "loc", "--lake", str(lake), *TINY)
    finally:
        mp.undo()
    return lake, res


def test_local_sweep_runs_every_task_retries_and_prints_ablation(local_sweep):
    lake, res = local_sweep
    assert res.exit_code == 0, res.output
    m = _manifest(lake, "loc")
    assert m["status"] == "completed"
    tasks = {t["key"]: t for t in m["tasks"]}
    assert sorted(tasks) == ["baseline-g10-s1", "baseline-g10-s2", "matchmaker-g10-s1", "matchmaker-g10-s2"]
    for key, t in tasks.items():
        assert t["status"] == "completed" and t["run_id"] == f"loc-{key}"
        run = _run_json(lake, t["run_id"])
        assert run["status"] == "completed" and run["seed"] == t["seed"] and run["condition"] == t["mode"]
        assert len(_rows(lake, "episodes", t["run_id"])) == 4 * 5  # 4 episodes x 5 agents
    # the injected failure was reported, retried, and the retry resumed from the checkpoint
    assert "retry   baseline-g10-s2: attempt 1 failed: InjectedFailure" in res.stderr
    assert tasks["baseline-g10-s2"]["attempts"] == 2
    assert tasks["baseline-g10-s2"]["how"] == "resumed at update 1"
    assert all(t["attempts"] == 1 for k, t in tasks.items() if k != "baseline-g10-s2")
    assert "4/4" in res.stderr and "failed 0" in res.stderr
    # every run wrote its own partitions: one run_id per partition directory
    assert sorted(p.name for p in (lake / "events").iterdir()) == sorted(f"run_id=loc-{k}" for k in tasks)
    # the ablation table: both conditions, with a difference from baseline for matchmaker
    out = res.stdout
    assert "ablation" in out and "predatory_zaps" in out and "retribution_ratio" in out
    assert [ln for ln in out.splitlines() if "│ matchmaker" in ln and "efficiency" in ln]
    from karmic.lake import run_query

    cols, rows = run_query("ablation", lake)
    eff = {r[cols.index("condition")]: r for r in rows if r[cols.index("metric")] == "efficiency"}
    assert set(eff) == {"baseline", "matchmaker"}
    assert eff["matchmaker"][cols.index("n_seeds")] == 2 and eff["matchmaker"][cols.index("diff")] is not None


def test_ray_backend_gives_the_same_events(local_sweep, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    lake_local, res_local = local_sweep
    assert res_local.exit_code == 0, res_local.output
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = _sweep("--modes", "baseline", "--grid-sizes", "10", "--seeds", "1,2", "--backend", "ray",
                     "--sweep-id", "ray", "--lake", str(tmp_path), *TINY)
    finally:
        ray.shutdown()
    assert res.exit_code == 0, res.output
    assert "ran on ray (local cluster: 1 node(s), 2 CPU(s))" in res.stderr
    assert _manifest(tmp_path, "ray")["status"] == "completed"
    # same seeds, same events and episodes, whichever backend ran them (seed 2 was a retried,
    # resumed run on the local pool)
    for seed in (1, 2):
        for table in ("events", "episodes"):
            a = _rows(lake_local, table, f"loc-baseline-g10-s{seed}")
            b = _rows(tmp_path, table, f"ray-baseline-g10-s{seed}")
            assert a and a == b, (table, seed)


def test_failed_task_is_reported_others_finish_and_resume_runs_only_it(local_sweep, tmp_path, monkeypatch):
    lake_local, _ = local_sweep
    monkeypatch.setenv(FAIL_ENV, "baseline-g10-s1:5")  # fails on every attempt
    args = ["--modes", "baseline", "--grid-sizes", "10", "--seeds", "1,2", "--retries", "1",
            "--sweep-id", "f", "--lake", str(tmp_path), *TINY]
    res = _sweep(*args)
    assert res.exit_code == 1, res.output
    assert "retry   baseline-g10-s1: attempt 1 failed: InjectedFailure" in res.stderr
    assert "FAILED  baseline-g10-s1 after 2 attempt(s): InjectedFailure" in res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "1 of 2 task(s) failed: baseline-g10-s1" in err[0] and "--resume f" in err[0]
    assert "Traceback" not in res.output
    tasks = _tasks(tmp_path, "f")
    assert tasks["baseline-g10-s1"]["status"] == "failed" and tasks["baseline-g10-s1"]["attempts"] == 2
    assert len(tasks["baseline-g10-s1"]["errors"]) == 2
    assert tasks["baseline-g10-s2"]["status"] == "completed"
    assert _run_json(tmp_path, "f-baseline-g10-s2")["status"] == "completed"
    assert _run_json(tmp_path, "f-baseline-g10-s1")["status"] == "interrupted"
    assert "ablation" in res.stdout  # the table of what did finish
    done_files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if "f-baseline-g10-s2" in str(p) and p.is_file()}

    # a new sweep under the same id is refused; --resume takes no task settings
    res = _sweep(*args)
    assert res.exit_code == 2 and "already exists" in res.stderr
    res = _sweep("--resume", "f", "--seeds", "3", "--lake", str(tmp_path))
    assert res.exit_code == 2 and "drop --seeds" in res.stderr

    monkeypatch.delenv(FAIL_ENV)
    res = _sweep("--resume", "f", "--lake", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "2 task(s), 1 to run" in res.stderr
    assert "done    baseline-g10-s1: resumed at update 2" in res.stderr  # attempt 2 got to the end, then failed
    assert "baseline-g10-s2:" not in res.stderr  # not run again
    tasks = _tasks(tmp_path, "f")
    assert tasks["baseline-g10-s1"]["status"] == "completed" and tasks["baseline-g10-s1"]["attempts"] == 3
    assert tasks["baseline-g10-s2"]["attempts"] == 1
    assert {p: p.stat().st_mtime_ns for p in done_files} == done_files
    # the resumed run is the run an uninterrupted one would have been
    for table in ("events", "episodes"):
        assert _rows(tmp_path, table, "f-baseline-g10-s1") == _rows(lake_local, table, "loc-baseline-g10-s1")
    # nothing left to do
    res = _sweep("--resume", "f", "--lake", str(tmp_path))
    assert res.exit_code == 0 and "0 to run" in res.stderr


def test_run_task_restarts_a_run_without_checkpoint_and_skips_a_completed_one(local_sweep, tmp_path):
    from karmic.training.ppo import TrainConfig, Trainer

    lake_local, _ = local_sweep
    m = _manifest(lake_local, "loc")
    cfg = {**m["train"], "mode": "matchmaker", "grid_size": 10, "seed": 1, "run_id": "x-matchmaker-g10-s1",
           "threads": 1, "checkpoint_every": 100}
    # a run killed after its first round, before any checkpoint
    Trainer(TrainConfig.from_dict(cfg), tmp_path).run(stop_after=1)
    assert _run_json(tmp_path, cfg["run_id"])["status"] == "interrupted"
    assert not (tmp_path / "checkpoints" / f"run_id={cfg['run_id']}").exists()
    out = run_task({"lake": str(tmp_path), "config": cfg, "attempt": 0})
    assert out["status"] == "completed" and out["how"] == "restarted", out
    for table in ("events", "episodes"):  # no round written twice, same rows as the sweep's run
        assert _rows(tmp_path, table, cfg["run_id"]) == _rows(lake_local, table, "loc-matchmaker-g10-s1")
    again = run_task({"lake": str(tmp_path), "config": cfg, "attempt": 0})
    assert again["status"] == "completed" and again["how"] == "already completed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modes", "baseline,bogus"], "unknown mode 'bogus'"),
        (["--modes", ""], "--modes is empty"),
        (["--grid-sizes", "10,x"], "--grid-sizes must be a comma-separated list of integers"),
        (["--grid-sizes", "10,,30"], "--grid-sizes must be a comma-separated list of integers"),
        (["--grid-sizes", "3"], "--grid-sizes: every value must be >= 5"),
        (["--seeds", ""], "--seeds must be a comma-separated list of integers"),
        (["--backend", "spark"], "unknown --backend 'spark'"),
        (["--retries", "-1"], "--retries must be >= 0"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--total-steps", "0"], "--total-steps must be >= 1"),
        (["--set", "seed=3"], "a sweep sets seed per task"),
        (["--set", "nonsense=1"], "--set nonsense=1: no such field"),  # the flag typed (issue 36)
        (["--set", "max_steps=abc"], "--set max_steps=abc: must be an integer"),
        (["--set", "num_steps=25"], "num_steps (25) must be a multiple of seq_len"),
        (["--sweep-id", "a/b"], "invalid --sweep-id"),
        (["--address", "localhost:6379"], "--address is for the ray backend"),
        (["--resume", "nope"], "no sweep nope in"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    lake = tmp_path / "lake"
    lake.mkdir()
    base = [] if "--resume" in args else ["--modes", "baseline", *TINY]  # typer keeps an option's last value
    res = _sweep("--lake", str(lake), *base, *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert list(lake.iterdir()) == []  # nothing written


def test_episode_length_check_uses_the_default_length(tmp_path):
    """Without --set max_steps the episode length is the grid's default (500 at 10x10): a
    num_steps that neither divides it nor is a multiple of it is one line, not a TypeError."""
    lake = tmp_path / "lake"
    lake.mkdir()
    res = _sweep("--lake", str(lake), "--modes", "baseline", "--total-steps", "10",
                 "--set", "num_steps=300", "--set", "seq_len=10")
    assert res.exit_code == 2, res.output
    assert "num_steps (300) must divide the episode length (500)" in res.stderr
    assert list(lake.iterdir()) == []


def test_compact_after_a_sweep_keeps_every_row_and_every_answer(local_sweep, tmp_path):
    """`--compact`: once every task has completed, the lake's finished runs go into compacted files
    (`karmic lake compact`); each table then holds exactly the rows of its parts, and the sweep's
    ablation table is the same."""
    import shutil

    from karmic.lake import connect, run_query

    lake = tmp_path / "lake"
    shutil.copytree(local_sweep[0], lake)
    before = run_query("ablation", lake)
    res = _sweep("--resume", "loc", "--lake", str(lake), "--compact")
    assert res.exit_code == 0, res.output
    assert "sweep loc: lake compacted: " in res.stderr
    assert list((lake / "events" / "_compacted").glob("*.parquet"))
    for table in ("events", "episodes", "actions"):
        parts = duckdb.sql(f"select count(*) from read_parquet('{lake}/{table}/run_id=*/*.parquet')").fetchall()[0][0]
        assert connect(lake).execute(f"select count(*) from {table}").fetchone()[0] == parts, table
    assert run_query("ablation", lake) == before


def test_ctrl_c_in_a_terminal_stops_a_sweep_with_one_line_and_it_resumes(tmp_path):
    """Ctrl-C reaches the driver and every worker (one process group). Each worker returns
    `interrupted` and ignores the driver's second signal, so the user reads the driver's line on
    how to continue, not a traceback per worker; the sweep then resumes to completion."""
    import os
    import signal
    import subprocess
    import sys
    import time

    lake = tmp_path / "lake"
    args = ["--modes", "baseline,matchmaker", "--grid-sizes", "10", "--seeds", "1", "--workers", "2",
            "--sweep-id", "cc", "--lake", str(lake), "--total-steps", "800", *TINY[2:]]
    # SIGINT back to its default in the child, as in a terminal: a test suite started in the
    # background (`make test &`, nohup) inherits it ignored, and Python then never raises
    # KeyboardInterrupt, so the sweep ran to the end and exited 0
    p = subprocess.Popen([sys.executable, "-m", "karmic.cli", "sweep", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until both runs have written a round
        runs = list((lake / "events").glob("run_id=*/*.parquet")) if (lake / "events").is_dir() else []
        if len({f.parent for f in runs}) == 2 or p.poll() is not None:
            break
        time.sleep(0.2)
    assert p.poll() is None, "the sweep ended before the test could interrupt it"
    os.killpg(p.pid, signal.SIGINT)  # what a terminal does
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0, out
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    assert _manifest(lake, "cc")["status"] == "interrupted"
    res = _sweep("--resume", "cc", "--lake", str(lake))
    assert res.exit_code == 0, res.output
    assert _manifest(lake, "cc")["status"] == "completed"
    # machine time: the cut attempts (to their run's last write) and the resumed ones, all timed
    for t in _manifest(lake, "cc")["tasks"]:
        assert t["attempts_timed"] == t["attempts"] and t["seconds_all"] >= t["seconds"] > 0, t


def test_an_attempt_cut_off_with_its_driver_counts_to_its_runs_last_write(tmp_path):
    """A task still `running` in the manifest (its driver was killed) is timed from its start to
    the newest file of its run; on object storage, or with nothing written, it is left untimed."""
    import os
    from datetime import UTC, datetime

    from pipelines.sweep import count_cut_attempt

    started = 1_700_000_000.0
    d = tmp_path / "checkpoints" / "run_id=r1"
    d.mkdir(parents=True)
    (d / "ckpt-000003.pt").write_bytes(b"x")
    os.utime(d / "ckpt-000003.pt", (started + 125.0, started + 125.0))
    (tmp_path / "events" / "run_id=r1").mkdir(parents=True)
    (tmp_path / "events" / "run_id=r1" / "round-000001.parquet").write_bytes(b"x")
    os.utime(tmp_path / "events" / "run_id=r1" / "round-000001.parquet", (started + 40.0, started + 40.0))
    at = datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds")
    e = {"run_id": "r1", "status": "running", "started_at": at, "seconds_all": 10.0, "attempts_timed": 1}
    count_cut_attempt(str(tmp_path), e)
    assert e["seconds_all"] == pytest.approx(135.0) and e["attempts_timed"] == 2
    for other in ({"run_id": "r1", "status": "completed", "started_at": at},  # reported back: timed then
                  {"run_id": "r2", "status": "running", "started_at": at}):  # wrote nothing
        count_cut_attempt(str(tmp_path), other)
        assert "seconds_all" not in other
    s3 = {"run_id": "r1", "status": "interrupted", "started_at": at}
    count_cut_attempt("s3://bucket/lake", s3)
    assert "seconds_all" not in s3


def test_a_reports_machine_time_counts_every_timed_attempt_and_says_what_it_misses():
    from pipelines.study_report import machine_time

    assert machine_time([]) == (0.0, 0, 0)
    assert machine_time([
        {"seconds": 100.0, "attempts": 1},                                            # last attempt only
        {"seconds": 50.0, "attempts": 3},                                             # and 2 known missing
        {"seconds": 60.0, "attempts": 2, "seconds_all": 200.0, "attempts_timed": 2},  # both timed
        {"seconds": 70.0, "attempts": 3, "seconds_all": 90.0, "attempts_timed": 2},   # one not
        {"seconds": None, "attempts": None},                                          # carried: no time
    ]) == (100.0 + 50.0 + 200.0 + 90.0, 2, 2 + 1)
