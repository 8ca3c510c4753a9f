"""The lake on S3-compatible object storage: a real S3 server (moto's, on loopback) started by the
test suite; writes, every reader, training and resume, no temporary objects, appends."""

from __future__ import annotations

import gc
import json
import logging
import socket
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("s3fs", reason="the s3 extra (s3fs)")
moto_server = pytest.importorskip("moto.server", reason="moto[server] (dev extra)")

from karmic.cli import app  # noqa: E402
from pipelines import storage  # noqa: E402

BUCKET = "karmic-test"
runner = CliRunner()
TINY = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10",
        "--hidden", "32", "--set", "max_steps=20", "--threads", "1"]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free loopback port; the AWS_* variables point every client at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for k in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        storage.filesystem().mkdir(BUCKET)
        yield env
    server.stop()


@pytest.fixture
def s3_lake(s3_server) -> str:
    """A fresh prefix in the test bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"


def keys(lake: str) -> list[str]:
    root = storage.resolve(lake)
    return sorted(k[len(root.key) + 1:] for k in root.fs.find(root.key))


def cli(*args: str, ok: bool = True):
    res = runner.invoke(app, list(args))
    if ok:
        assert res.exit_code == 0, (args, res.output)
    return res


def rows_json(*args: str) -> list[dict]:
    """A query's rows as JSON objects without run_id (same seed, different run ids)."""
    out = json.loads(cli(*args, "--format", "json").stdout)
    return [{k: v for k, v in r.items() if k != "run_id"} for r in out]


SIM = ["simulate", "--episodes", "2", "--seed", "5", "--policy", "mixed", "--matchmaker"]


@pytest.fixture(scope="module")
def sim_pair(s3_server, tmp_path_factory):
    """The same simulation on an s3 lake and on a local lake."""
    s3 = f"s3://{BUCKET}/sim-{uuid.uuid4().hex[:8]}"
    local = tmp_path_factory.mktemp("local-lake")
    cli(*SIM, "--lake", s3)
    cli(*SIM, "--lake", str(local))
    return s3, local


def test_simulate_sql_and_query_on_s3_match_a_local_lake(sim_pair):
    s3, local = sim_pair
    assert sorted({k.split("/")[0] for k in keys(s3)}) == ["_log", "actions", "episodes", "events", "runs"]
    sql = "select * exclude (run_id) from events order by episode, seq"
    a = rows_json("sql", sql, "--lake", s3)
    assert len(a) > 100 and a == rows_json("sql", sql, "--lake", str(local))
    assert rows_json("query", "zap_counts", "--lake", s3) == rows_json("query", "zap_counts", "--lake", str(local))
    eps = "select * exclude (run_id) from episodes order by episode, agent"
    assert rows_json("sql", eps, "--lake", s3) == rows_json("sql", eps, "--lake", str(local))
    # $KARMIC_LAKE works like --lake
    res = runner.invoke(app, ["sql", "select count(*) as n from events", "--format", "json"],
                        env={"KARMIC_LAKE": s3})
    assert res.exit_code == 0 and json.loads(res.stdout)[0]["n"] == len(a)
    # the polars scan reads through the same filesystem
    from karmic.lake import scan_events

    assert scan_events(s3).collect().height == len(a)
    # every episode replays from the s3 lake's action log
    run_id = json.loads(cli("sql", "select run_id from runs", "--format", "json", "--lake", s3).stdout)[0]["run_id"]
    res = cli("replay", "--check", run_id, "--lake", s3)
    assert "2 episodes replayed" in res.stdout


def test_ledger_rebuild_and_check_on_s3(sim_pair):
    s3, local = sim_pair
    res = cli("ledger", "--check", "--lake", s3)
    assert "ledger check passed" in res.stdout
    assert json.loads(cli("ledger", "--format", "json", "--lake", s3).stdout) == \
        json.loads(cli("ledger", "--format", "json", "--lake", str(local)).stdout)


def test_report_on_s3(sim_pair, tmp_path):
    s3, _ = sim_pair
    out = tmp_path / "rep"
    res = cli("report", "--out", str(out), "--lake", s3)
    assert res.stdout.strip().endswith("index.html") and (out / "report.md").is_file()
    assert s3 in (out / "report.md").read_text()


def test_sql_stays_read_only_on_s3(sim_pair):
    s3, _ = sim_pair
    before = keys(s3)
    for sql in (f"copy (select 1 as a) to '{s3}/events/run_id=x/part-000000.parquet'",
                "create table t as select 1", "install httpfs"):
        res = cli("sql", sql, "--lake", s3, ok=False)
        assert res.exit_code == 2 and res.output.startswith("error: the lake is read-only"), res.output
    assert keys(s3) == before


def test_train_on_s3_writes_shards_checkpoints_and_resumes(s3_lake):
    res = cli("train", "--mode", "matchmaker", "--seed", "3", "--total-steps", "40", "--lake", s3_lake, *TINY)
    run_id = res.stdout.strip().splitlines()[-1].split("\t")[0]
    ks = keys(s3_lake)
    assert f"runs/run_id={run_id}/run.json" in ks
    assert any(k.startswith(f"trajectories/run_id={run_id}/shard-") for k in ks)
    assert any(k.startswith(f"checkpoints/run_id={run_id}/ckpt-") for k in ks)
    res = cli("train", "--resume", run_id, "--total-steps", "80", "--lake", s3_lake)
    assert "steps=80" in res.stdout
    eps = json.loads(cli("sql", "select distinct episode from episodes order by 1", "--format", "json",
                         "--lake", s3_lake).stdout)
    assert [r["episode"] for r in eps] == [0, 1, 2, 3]
    run = json.loads(storage.read_text(f"{s3_lake}/runs/run_id={run_id}/run.json"))
    assert run["status"] == "completed" and run["kind"] == "train"
    assert "ledger check passed" in cli("ledger", "--check", "--run", run_id, "--lake", s3_lake).stdout
    # the trained policy, read straight from the object store, plays a simulation
    ckpts = f"{s3_lake}/checkpoints/run_id={run_id}"
    res = cli("simulate", "--policy", ckpts, "--episodes", "1", "--grid-size", "10", "--seed", "1", "--lake", s3_lake)
    sims = json.loads(cli("sql", "select run_id from runs where kind = 'simulate'", "--format", "json",
                          "--lake", s3_lake).stdout)
    assert len(sims) == 1
    assert not [k for k in keys(s3_lake) if ".tmp" in k]


def _params(agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}


def _events(lake, run_id) -> list[tuple]:
    from karmic.lake import connect

    return connect(lake, run=run_id).sql("select * exclude (run_id) from events order by episode, seq").fetchall()


@pytest.mark.parametrize("mode", ["matchmaker", "full"])
def test_resume_from_s3_reproduces_an_uninterrupted_local_run(s3_lake, tmp_path, mode):
    """Stop after 2 updates on s3, resume from the s3 checkpoint, trajectory shards and ledger:
    bit-for-bit the parameters and events of one uninterrupted run on a local lake."""
    from karmic.training.ppo import TrainConfig, Trainer, resumed_trainer

    def cfg(run_id):
        return TrainConfig(mode=mode, grid_size=10, seed=7, num_envs=2, num_steps=20, seq_len=10,
                           hidden=32, latent=16, total_steps=160, checkpoint_every=1, threads=1,
                           env_overrides={"max_steps": 20}, run_id=run_id)

    whole = Trainer(cfg("whole"), tmp_path)
    whole.run()
    part = Trainer(cfg("split"), s3_lake)
    part.run(stop_after=2)
    resumed = resumed_trainer("split", s3_lake)
    assert resumed.update == 2
    resumed.run()
    for k, v in _params(whole.agent).items():
        torch.testing.assert_close(v, _params(resumed.agent)[k], rtol=0, atol=0)
    ea, eb = _events(tmp_path, "whole"), _events(s3_lake, "split")
    assert len(ea) > 0 and ea == eb
    for a, b in zip(whole.ledger.ledgers, resumed.ledger.ledgers, strict=True):
        np.testing.assert_array_equal(a.debts, b.debts)


def test_second_run_appends_and_parts_are_never_overwritten(s3_lake, monkeypatch):
    from pipelines import writer as lk
    from pipelines.simulate import simulate

    simulate(s3_lake, episodes=1, seed=1, run_id="r", flush_episodes=1)
    simulate(s3_lake, episodes=2, seed=2, run_id="r", flush_episodes=1)  # same run id: appends
    assert [k for k in keys(s3_lake) if k.startswith("events/")] == [
        f"events/run_id=r/part-{n:06d}.parquet" for n in range(3)]
    first = storage.resolve(f"{s3_lake}/events/run_id=r/part-000000.parquet").read_bytes()
    # a writer whose listing is stale (another process took the number meanwhile) takes the next one
    monkeypatch.setattr(lk, "next_part", lambda d: 0)
    written = lk.write_table(s3_lake, "events", "r", lk.events_table("r", _one_event(), np.zeros(1, np.int64)))
    assert written.name == "part-000003.parquet"
    assert storage.resolve(f"{s3_lake}/events/run_id=r/part-000000.parquet").read_bytes() == first
    parts = storage.resolve(s3_lake).glob("events/run_id=r/*.parquet")
    assert len(parts) == 4
    n = json.loads(cli("sql", "select count(*) as n from events", "--format", "json", "--lake", s3_lake).stdout)[0]["n"]
    assert n == sum(storage.read_parquet(p).num_rows for p in parts)
    assert not [k for k in keys(s3_lake) if ".tmp" in k or k.rsplit("/", 1)[-1].startswith(".")]


def _one_event():
    from karmic.events import EVENT_COLUMNS, NULL, SPAWN, EventBatch

    cols = {k: np.zeros(1, dt) for k, dt in EVENT_COLUMNS.items()}
    cols["event_type"][:] = SPAWN
    cols["target"][:] = NULL
    cols["apple_context"][:] = NULL
    return EventBatch(**cols)


def test_bad_s3_lakes_are_one_line(s3_server):
    for args, msg in [
        (["sql", "select 1", "--lake", f"s3://{BUCKET}/no-such-prefix"], "lake not found: s3://"),
        (["sql", "select 1", "--lake", "s3://no-such-bucket/x"], "lake not found: s3://no-such-bucket/x"),
        (["simulate", "--episodes", "1", "--lake", "s3://no-such-bucket/x"], "cannot write s3://no-such-bucket/"),
        (["query", "zap_counts", "--lake", "gs://bucket/x"], "unsupported lake URL"),
        (["sql", "select 1", "--lake", "s3://"], "has no bucket"),
    ]:
        res = cli(*args, ok=False)
        assert res.exit_code == 2, (args, res.output)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], (args, res.output)
        assert "Traceback" not in res.output


def test_local_lakes_do_not_need_s3fs(tmp_path):
    """Query commands on a directory never import s3fs; without it, an s3 lake says what to install."""
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from typer.testing import CliRunner; from karmic.cli import app\n"
        f"r = CliRunner().invoke(app, ['simulate', '--episodes', '1', '--lake', {str(tmp_path)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['sql', 'select count(*) from events', '--lake', {str(tmp_path)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['sql', 'select 1', '--lake', 's3://b/p'])\n"
        "print(r.exit_code, r.output.strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 error: an s3:// lake needs s3fs: pip install 'karmic-rl[s3]'"


def test_foreign_object_in_an_s3_lake_is_one_line_naming_it(s3_lake):
    cli("simulate", "--episodes", "1", "--max-steps", "20", "--lake", s3_lake)
    storage.write_bytes(f"{s3_lake}/events/run_id=zz/part-000000.parquet", b"not parquet at all")
    cli("sql", "select count(*) from events", "--lake", s3_lake)  # not committed: not read
    from pipelines import commits

    commits.commit(s3_lake, "events", commits.Commit("zz", "part-000000.parquet", 1, 0, 0, "00000000"))
    res = cli("sql", "select count(*) from events", "--lake", s3_lake, ok=False)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "run_id=zz/part-000000.parquet" in lines[0]


def test_sweep_on_an_s3_lake_and_resume(s3_lake):
    """`karmic sweep` with worker processes writing to the object store: every task's run, the
    manifest as one object, the ablation table read back from s3; --resume finds nothing to do."""
    args = ["--modes", "baseline,matchmaker", "--grid-sizes", "10", "--seeds", "1", "--total-steps", "40",
            "--backend", "local", "--workers", "2", "--sweep-id", "s3w", "--lake", s3_lake,
            "--set", "num_envs=2", "--set", "num_steps=20", "--set", "seq_len=10", "--set", "hidden=32",
            "--set", "max_steps=20"]
    res = cli("sweep", *args)
    assert "ablation" in res.stdout
    ks = keys(s3_lake)
    assert "sweeps/sweep_id=s3w/sweep.json" in ks
    for mode in ("baseline", "matchmaker"):
        run = json.loads(storage.read_text(f"{s3_lake}/runs/run_id=s3w-{mode}-g10-s1/run.json"))
        assert run["status"] == "completed"
        assert any(k.startswith(f"events/run_id=s3w-{mode}-g10-s1/round-") for k in ks)
    manifest = json.loads(storage.read_text(f"{s3_lake}/sweeps/sweep_id=s3w/sweep.json"))
    assert manifest["status"] == "completed"
    res = cli("sweep", "--resume", "s3w", "--lake", s3_lake)
    assert "0 to run" in res.stderr
    assert not [k for k in keys(s3_lake) if ".tmp" in k]


def test_compaction_on_s3_reads_the_same_rows(s3_lake):
    """`karmic lake compact` on an s3 lake: the views read the same rows, the markers moved."""
    from karmic.lake import connect
    from pipelines import commits

    cli(*SIM, "--lake", s3_lake)
    cli("simulate", "--episodes", "2", "--seed", "6", "--lake", s3_lake)

    def views() -> dict:
        con = connect(s3_lake)
        return {v: sorted(con.sql(f"select * from {v}").fetchall(), key=repr)
                for v in ("events", "episodes", "actions", "runs", "ledger_hits")}

    before = views()
    res = cli("lake", "compact", "--lake", s3_lake, "--target-rows", "100")
    assert "runs: 2 finished run(s)" in res.stdout, res.stdout
    assert views() == before
    root = storage.resolve(s3_lake)
    assert not [n for n in commits.names(root, "events") if commits.parse(n)]  # all moved out
    assert commits.read_log(root, "events").compactions
    assert cli("lake", "check", "--lake", s3_lake).stdout.startswith("OK: ")
    assert not [k for k in keys(s3_lake) if ".tmp-" in k or k.endswith("_compact.lock")]


def test_a_snapshot_is_read_through_as_it_is(sim_pair):
    """A study report connects once a run: the runs share one listing of the lake, not one each."""
    from karmic.lake import connect

    root = storage.resolve(sim_pair[0])
    # Snapshot filesystems compare equal to one another (fsspec tokens): an older snapshot that
    # is gone must not make a live one look like a plain root.
    older = storage.snapshot(root)
    snap = storage.snapshot(root, ("events",))
    del older
    gc.collect()
    assert snap is not root and snap.fs is not root.fs
    assert storage.snapshot(snap, ("events", "runs")) is snap
    assert storage.snapshot(root) is not snap  # the lake as of now, a new listing
    with connect(snap, sql="select count(*) from events") as con:
        assert con.execute("select count(*) from events").fetchone()[0] > 0
