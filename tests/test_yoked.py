"""The yoked sham (condition ``yoked``, karmic.conditions): a run that receives, update by update,
the semantic transports its partner ``tvt`` run logged, on the same streams and steps.

- the replay is faithful: yoked to a partner of its own seed, a yoked run makes the partner's
  run again, bit for bit (same draws, so the transports it is handed are the ones it would have
  made), and it logs exactly the partner's transports;
- yoked to another seed it logs the partner's transports, not its own, and its run is its own;
- the rows of ``tvt_transports`` go back to the trainer's (slot, stream time) exactly;
- a resumed yoked run is the uninterrupted one;
- bad partners are one line, and leave no run in the lake;
- a sweep starts a yoked task only once its partner's run has finished (and fails it, not
  started, if the partner fails); a study pairs each yoked cell with the next seed's partner.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from golden import _model_digest, _table_digest
from typer.testing import CliRunner

from karmic.cli import app
from karmic.training.config import TrainConfig
from karmic.training.ppo import resumed_trainer, train
from karmic.tvt.transport import Transports
from pipelines.trajectories import transports_by_update

pytest.importorskip("karmic.envs.core", reason="needs the Harvest env (karmic.envs.core)")

STEPS = 2 * 20 * 10  # 10 updates: the partner's seed 5 makes semantic transports by then
KEYS = ["update", "agent", "source_episode", "source_t", "target_episode", "target_t"]


def _cfg(mode: str, seed: int, run_id: str, **kw) -> TrainConfig:
    return TrainConfig.from_dict({
        "mode": mode, "grid_size": 10, "seed": seed, "num_envs": 2, "num_steps": 20, "seq_len": 10, "hidden": 32,
        "latent": 16, "total_steps": STEPS, "checkpoint_every": 1, "threads": 1, "memory_size": 30,
        "precision": "fp32", "env_overrides": {"max_steps": 20}, "run_id": run_id, **kw})


def _transports(lake, run_id: str) -> list[tuple]:
    files = sorted((lake / "tvt_transports" / f"run_id={run_id}").glob("*.parquet"))
    if not files:
        return []
    t = pa.concat_tables([pq.read_table(f) for f in files])
    rows = t.select(KEYS + ["amount", "mode"]).to_pylist()
    return sorted((tuple(r[k] for k in KEYS + ["amount"]), r["mode"]) for r in rows)


def _semantic(rows: list[tuple]) -> list[tuple]:
    return [k for k, m in rows if m == "semantic"]


def _episodes(lake, run_id: str) -> list[dict]:
    """The run's episode rows, less what names the run (run id, condition, write time)."""
    t = pa.concat_tables([pq.read_table(f) for f in sorted((lake / "episodes" / f"run_id={run_id}").glob("*.parquet"))])
    t = t.drop_columns([c for c in ("run_id", "condition", "written_at") if c in t.column_names])
    return t.sort_by([("episode", "ascending"), ("agent", "ascending")]).to_pylist()


def _digest(lake, run_id: str) -> tuple:
    return (_table_digest(lake, "events", run_id, ["episode", "t", "seq"]), _episodes(lake, run_id),
            _model_digest(lake, run_id))


@pytest.fixture(scope="module")
def partner(tmp_path_factory):
    lake = tmp_path_factory.mktemp("yoke")
    train(_cfg("tvt", 5, "partner"), lake)
    rows = _transports(lake, "partner")
    assert len(_semantic(rows)) >= 2, "the partner must make semantic transports for these tests to mean anything"
    return lake, rows


def test_yoked_to_its_own_seed_it_is_its_partner_bit_for_bit(partner):
    lake, want = partner
    train(_cfg("yoked", 5, "same-seed", tvt_yoke_run="partner"), lake)
    got = _transports(lake, "same-seed")
    assert [k for k, m in got if m == "yoked"] == _semantic(want)
    assert [k for k, m in got if m == "learned"] == [k for k, m in want if m == "learned"]
    assert not [m for _, m in got if m == "semantic"]  # it makes none of its own
    assert _digest(lake, "same-seed") == _digest(lake, "partner")


def test_yoked_to_another_seed_it_logs_the_partners_transports_and_lives_its_own_run(partner):
    lake, want = partner
    train(_cfg("yoked", 6, "other-seed", tvt_yoke_run="partner"), lake)
    got = _transports(lake, "other-seed")
    assert [k for k, m in got if m == "yoked"] == _semantic(want)
    assert not [m for _, m in got if m == "semantic"]
    train(_cfg("tvt", 6, "own-tvt"), lake)
    assert _digest(lake, "other-seed")[0] != _digest(lake, "partner")[0]
    # the yoked run is not its own seed's tvt run: what it was handed is not what it would make
    assert _semantic(_transports(lake, "own-tvt")) != _semantic(want)
    meta = json.loads((lake / "runs" / "run_id=other-seed" / "run.json").read_text())
    assert meta["train_config"]["tvt_yoke_run"] == "partner" and meta["condition"] == "yoked"
    # by the lake's own check (queries/_transport_targets.sql), the partner's value lands where its
    # agent hit one who hit it back, every time; handed to this run, it does not
    from karmic.lake import connect

    con = connect(lake, sql="select * from transport_targets")
    share = dict(con.sql("select run_id, avg(on_target::int) from transport_targets where head = -1 "
                         "and run_id in ('partner', 'other-seed') group by run_id").fetchall())
    assert share["partner"] == 1.0 and share["other-seed"] < 1.0, share


def test_a_resumed_yoked_run_is_the_uninterrupted_one(partner, tmp_path):
    lake, _ = partner
    train(_cfg("yoked", 7, "whole", tvt_yoke_run="partner"), lake)
    train(_cfg("yoked", 7, "cut", tvt_yoke_run="partner", total_steps=STEPS // 2), lake)
    resumed_trainer("cut", lake, total_steps=STEPS).run()
    assert _transports(lake, "cut") == _transports(lake, "whole")
    assert _digest(lake, "cut") == _digest(lake, "whole")


def test_transport_rows_go_back_to_their_slots_and_stream_times():
    from pipelines.trajectories import transports_table

    rng = np.random.default_rng(0)
    B, N, L = 3, 4, 20

    class Shard:  # what transports_table reads of a shard
        num_envs, n_agents, run_id, update = B, N, "r", 7

    parts = []
    for s in sorted(rng.choice(B * N, 5, replace=False).tolist()):
        n = int(rng.integers(1, 4))
        src = rng.integers(40, 100, n)
        parts.append((s, Transports(src, src - rng.integers(1, 40, n), rng.normal(size=n), np.full(n, -1, np.int16)),
                      "semantic"))
    back = transports_by_update(transports_table(Shard, parts, L), B, N, L)
    assert list(back) == [7]
    assert [s for s, _ in back[7]] == [s for s, _, _ in parts]
    for (_, tr), (_, want, _) in zip(back[7], parts, strict=True):
        for f in ("source", "target", "amount", "head"):
            np.testing.assert_array_equal(getattr(tr, f), getattr(want, f))


TINY = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10", "--hidden", "32",
        "--set", "max_steps=20", "--threads", "1", "--memory-size", "30", "--total-steps", "80",
        "--precision", "fp32", "--device", "cpu"]


@pytest.mark.parametrize(("extra", "says"), [
    ([], "yoked needs --tvt-yoke-run"),
    (["--tvt-yoke-run", "nope"], "no readable run nope"),
    (["--tvt-yoke-run", "partner", "--num-steps", "10"], "num_steps 20, this run 10"),
    (["--tvt-yoke-run", "partner", "--set", "beam_length=4"], "environment differs"),
    (["--tvt-yoke-run", "partner", "--total-steps", str(2 * STEPS)], "fewer than this run's"),
    (["--tvt-yoke-run", "baseline-run"], "is a baseline run; yoked is yoked to tvt"),
])
def test_a_bad_partner_is_one_line_and_no_run(partner, extra, says):
    lake, _ = partner
    if not (lake / "runs" / "run_id=baseline-run").exists():
        train(_cfg("baseline", 5, "baseline-run", total_steps=80), lake)
    before = sorted(p.name for p in (lake / "runs").iterdir())
    args = ["train", "--mode", "yoked", "--lake", str(lake), *TINY, *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in (lake / "runs").iterdir()) == before
    res = CliRunner().invoke(app, ["train", "--mode", "tvt", "--tvt-yoke-run", "partner", "--lake", str(lake), *TINY])
    assert res.exit_code == 2 and "tvt-yoke-run is for yoked conditions" in res.output


def test_an_unfinished_partner_is_refused(partner):
    lake, _ = partner
    (lake / "runs" / "run_id=half").mkdir(exist_ok=True)
    meta = json.loads((lake / "runs" / "run_id=partner" / "run.json").read_text())
    (lake / "runs" / "run_id=half" / "run.json").write_text(json.dumps({**meta, "run_id": "half", "status": "running"}))
    with pytest.raises(ValueError, match="half has not finished"):
        train(_cfg("yoked", 6, "too-early", tvt_yoke_run="half"), lake)


# --- orchestration --------------------------------------------------------------------------------
def _sweep(lake, fail=None, seeds=(1, 2)):
    from pipelines import sweep as sw

    tasks = sw.plan(["yoked", "tvt"], [10], list(seeds))  # yoked first: it must still wait
    train_cfg = {"total_steps": 80, "num_envs": 2, "num_steps": 20, "seq_len": 10, "hidden": 32, "latent": 16,
                 "memory_size": 30, "precision": "fp32", "env_overrides": {"max_steps": 20}}
    m = sw.new_manifest("yk", tasks, train_cfg, {})
    by = {e["key"]: e for e in m["tasks"]}
    events, partner_done = [], {}

    def on_event(kind, e, res):
        events.append((kind, e["key"]))
        if kind == "start" and e.get("yoke"):  # the partner's run, as the lake has it when this one starts
            partner_done[e["key"]] = sw.run_status(str(lake), by[e["yoke"]]["run_id"])

    out = sw.run_sweep(m, str(lake), sw.make_backend("local", workers=2), retries=0, fail=fail, on_event=on_event)
    return out, events, partner_done


def test_a_sweep_starts_a_yoked_task_after_its_partner_of_the_next_seed(tmp_path):
    out, events, partner_done = _sweep(tmp_path)
    by = {e["key"]: e for e in out["tasks"]}
    assert out["status"] == "completed", out
    assert by["yoked-g10-s1"]["yoke"] == "tvt-g10-s2" and by["yoked-g10-s2"]["yoke"] == "tvt-g10-s1"
    # the partners were planned after the yoked tasks and started first; each yoked task started
    # only once its partner's run was complete in the lake (the driver may hear of it later)
    assert events[:2] == [("start", "tvt-g10-s1"), ("start", "tvt-g10-s2")]
    assert partner_done == {"yoked-g10-s1": "completed", "yoked-g10-s2": "completed"}
    for key, partner in (("yoked-g10-s1", "tvt-g10-s2"), ("yoked-g10-s2", "tvt-g10-s1")):
        meta = json.loads((tmp_path / "runs" / f"run_id={by[key]['run_id']}" / "run.json").read_text())
        assert meta["train_config"]["tvt_yoke_run"] == by[partner]["run_id"]


def test_a_sweep_fails_a_yoked_task_whose_partner_failed_without_starting_it(tmp_path):
    out, events, _ = _sweep(tmp_path, fail={"tvt-g10-s2": 1})
    by = {e["key"]: e for e in out["tasks"]}
    assert by["tvt-g10-s2"]["status"] == "failed" and by["yoked-g10-s1"]["status"] == "failed"
    assert "its partner tvt-g10-s2 failed" in by["yoked-g10-s1"]["error"]
    assert ("start", "yoked-g10-s1") not in events
    assert by["yoked-g10-s2"]["status"] == "completed" and out["status"] == "failed"


def test_a_sweep_or_study_without_the_partner_or_a_second_seed_says_so(tmp_path):
    from pipelines import sweep as sw

    with pytest.raises(ValueError, match="yoked is yoked to tvt: add tvt"):
        sw.new_manifest("x", sw.plan(["yoked"], [10], [1, 2]), {}, {})
    with pytest.raises(ValueError, match="needs two seeds or more"):
        sw.new_manifest("x", sw.plan(["yoked", "tvt"], [10], [1]), {}, {})
    res = CliRunner().invoke(app, ["sweep", "--modes", "yoked", "--seeds", "1,2", "--lake", str(tmp_path)])
    assert res.exit_code == 2 and "add tvt" in res.output and "Traceback" not in res.output


def _study(conditions: str, seeds: str) -> str:
    """test_study's study file, with these conditions and seeds."""
    from test_study import HEAD

    out = HEAD.replace('conditions = ["baseline", "tvt", "random"]', f"conditions = {conditions}")
    out = out.replace("seeds = [1, 2, 3]", f"seeds = {seeds}")
    assert conditions in out and seeds in out, "test_study.HEAD changed"
    return out


def test_a_study_pairs_each_yoked_cell_with_the_next_seeds_partner(tmp_path):
    from pipelines.study import StudyError, manifest_for, parse_study

    p = tmp_path / "yk.toml"
    p.write_text(_study(conditions='["tvt", "yoked"]', seeds="[3, 1, 2]"))
    tasks = {e["key"]: e for e in manifest_for(parse_study(p))["tasks"]}
    yoked = {k: e["yoke"] for k, e in tasks.items() if "yoke" in e}
    assert {k.split("-")[-1]: v.split("-")[-1] for k, v in yoked.items()} == {"s3": "s1", "s1": "s2", "s2": "s3"}
    assert all(v in tasks for v in yoked.values())
    for conds, seeds, says in (('["yoked"]', "[1, 2]", "add tvt"), ('["tvt", "yoked"]', "[1]", "two seeds")):
        p.write_text(_study(conditions=conds, seeds=seeds))
        with pytest.raises(StudyError, match=says):
            parse_study(p)


def test_carrying_a_study_runs_again_the_partners_its_unfinished_yoked_cells_need(tmp_path):
    """A results folder holds no transports: a partner carried from one could not be replayed,
    so it is not carried while a yoked cell still needs it (the cells nobody needs are)."""
    from pipelines.study import Carry, manifest_for, mark_carried, parse_study

    p = tmp_path / "yk.toml"
    p.write_text(_study(conditions='["tvt", "yoked"]', seeds="[1, 2, 3]"))
    m = manifest_for(parse_study(p))
    done = ["x-tvt-g10-s1", "x-tvt-g10-s2", "x-tvt-g10-s3", "x-yoked-g10-s3"]  # yoked s3 replayed tvt s1
    carry = Carry(tmp_path, runs={k: {"run_id": f"yk-{k}"} for k in done})
    marked = {e["key"] for e in mark_carried(m, carry, str(tmp_path / "empty-lake"))}
    # yoked s1 and s2 still run: they need tvt s2 and s3 in this lake; tvt s1 and yoked s3 are carried
    assert marked == {"x-tvt-g10-s1", "x-yoked-g10-s3"}
    by = {e["key"]: e for e in m["tasks"]}
    assert by["x-tvt-g10-s2"]["status"] == by["x-tvt-g10-s3"]["status"] == "pending"


def test_study_status_says_a_yoked_cell_waits_for_its_partner(tmp_path):
    from pipelines.study import manifest_for, parse_study
    from pipelines.study_status import study_status
    from pipelines.sweep import write_manifest

    p = tmp_path / "yk.toml"
    p.write_text(_study(conditions='["tvt", "yoked"]', seeds="[1, 2]"))
    st, lake = parse_study(p), tmp_path / "lake"
    m = manifest_for(st)
    write_manifest(str(lake), m)
    state = lambda: {(r[1], r[3]): r[4] for r in study_status(st, str(lake))[1]}  # noqa: E731
    assert state() == {("tvt", 1): "missing", ("tvt", 2): "missing", ("yoked", 1): "waiting", ("yoked", 2): "waiting"}
    rid = next(e["run_id"] for e in m["tasks"] if e["key"] == "x-tvt-g10-s2")
    (lake / "runs" / f"run_id={rid}").mkdir(parents=True)
    (lake / "runs" / f"run_id={rid}" / "run.json").write_text(json.dumps({"run_id": rid, "status": "completed"}))
    assert state()[("yoked", 1)] == "missing" and state()[("yoked", 2)] == "waiting"
