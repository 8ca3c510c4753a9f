"""Known answers of the transport mechanism checks (queries/_transport_targets.sql and the three
queries over it) on a hand-made lake: which step each transport landed on (predatory hit,
retribution hit, no hit), whether it landed where the agent hit the one who later hit it, and
the base rate of such steps in the memory window.

The lake (one run, one env, one 100-step episode, agents 0-2; ledger rule of docs/DESIGN.md):
  t=10 agent_0 hits agent_1 (predatory)      t=20 agent_1 hits agent_0 (retribution)
  t=30 agent_0 hits agent_2 (predatory)      t=40 agent_0 hits agent_1 (predatory again)
  t=50 agent_2 hits agent_0 (retribution)
Transports (memory_size 30):
  semantic agent_0 20 -> 10, -0.6: predatory hit, on target; window [0, 20): 1 such step of 20
  sham     agent_0 50 -> 30, -0.4: predatory hit, on target; window [20, 50): step 30 only (1/30)
  sham     agent_0 50 -> 35, -0.2: no hit, off target; same window (1/30)
  learned  agent_1 45 -> 20, +0.5: retribution hit, on target (agent_0 hit it back at 40);
           window [15, 45): 1/30
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_metrics import connect, ep_rows, run_query, write_run

from pipelines.schema import TVT_TRANSPORTS_SCHEMA


def _hit(t: int, a: int, x: int) -> dict:
    return {"episode": 0, "t": t, "global_step": t, "event_type": "ZAP_HIT", "agent": f"agent_{a}",
            "target": f"agent_{x}", "apple_context": False}


@pytest.fixture
def lake(tmp_path):
    events = [_hit(10, 0, 1), _hit(20, 1, 0), _hit(30, 0, 2), _hit(40, 0, 1), _hit(50, 2, 0)]
    write_run(tmp_path, "r", condition="sham", grid_size=10, seed=1,
              episodes=ep_rows(0, 0, 100, [{}, {}, {}]), events=events)
    rows = [("agent_0", 20, 10, -0.6, "semantic"), ("agent_0", 50, 30, -0.4, "sham"),
            ("agent_0", 50, 35, -0.2, "sham"), ("agent_1", 45, 20, 0.5, "learned")]
    t = pa.table({
        "run_id": ["r"] * 4, "update": pa.array([0] * 4, pa.int32()), "agent": [r[0] for r in rows],
        "source_episode": pa.array([0] * 4, pa.int64()), "source_t": pa.array([r[1] for r in rows], pa.int32()),
        "target_episode": pa.array([0] * 4, pa.int64()), "target_t": pa.array([r[2] for r in rows], pa.int32()),
        "amount": [r[3] for r in rows], "mode": [r[4] for r in rows],
        "head": pa.array([-1, -1, -1, 0], pa.int16()),
    }, schema=TVT_TRANSPORTS_SCHEMA)
    d = tmp_path / "tvt_transports" / "run_id=r"
    d.mkdir(parents=True)
    pq.write_table(t, d / "part-0.parquet")
    return tmp_path


def test_transport_targets_known_answer(lake):
    con = connect(lake)
    con.execute("set variable memory_size = '30'")
    got = {(r[0], r[1]): r[2:] for r in con.sql(
        "select mode, target_t, step_type, on_target, lag, window_steps, eligible_steps from transport_targets").fetchall()}
    assert got == {
        ("semantic", 10): ("predatory_hit", True, 10, 20, 1),
        ("sham", 30): ("predatory_hit", True, 20, 30, 1),
        ("sham", 35): ("no_hit", False, 15, 30, 1),
        ("learned", 20): ("retribution_hit", True, 25, 30, 1),
    }


def test_transport_hit_types_known_answer(lake):
    rows = {r["mode"]: r for r in run_query(connect(lake), "transport_hit_types", memory_size="30")}
    assert rows["sham"]["transports"] == 2
    assert rows["sham"]["predatory_share"] == pytest.approx(2 / 3)
    assert rows["sham"]["no_hit_share"] == pytest.approx(1 / 3)
    assert rows["sham"]["retribution_share"] == 0.0
    assert rows["sham"]["predatory_amount"] == pytest.approx(-0.4)
    assert rows["semantic"]["predatory_share"] == pytest.approx(1.0)
    assert rows["learned"]["retribution_share"] == pytest.approx(1.0)
    assert rows["learned"]["retribution_amount"] == pytest.approx(0.5)


def test_transport_on_target_known_answer(lake):
    rows = {r["mode"]: r for r in run_query(connect(lake), "transport_on_target", memory_size="30")}
    assert rows["sham"]["on_target_share"] == pytest.approx(0.4 / 0.6)
    assert rows["sham"]["base_rate"] == pytest.approx(1 / 30)
    assert rows["sham"]["lift"] == pytest.approx((0.4 / 0.6) * 30)
    assert rows["semantic"]["on_target_share"] == pytest.approx(1.0)
    assert rows["semantic"]["base_rate"] == pytest.approx(1 / 20)
    assert rows["learned"]["on_target_share"] == pytest.approx(1.0)
    # a run that records no memory_size: 1000 steps, capped by the steps the stream has had
    rows = {r["mode"]: r for r in run_query(connect(lake), "transport_on_target")}
    assert rows["sham"]["base_rate"] == pytest.approx(2 / 50)  # steps 10 and 30 of [0, 50)
    # the run's own memory_size (run.json's train_config) is the window
    p = lake / "runs" / "run_id=r" / "run.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "train_config": {"memory_size": 30}}))
    rows = {r["mode"]: r for r in run_query(connect(lake), "transport_on_target")}
    assert rows["sham"]["base_rate"] == pytest.approx(1 / 30)


def test_transport_step_types_known_answer(lake):
    rows = {(r["mode"], r["step_type"]): r for r in run_query(connect(lake), "transport_step_types", memory_size="30")}
    assert set(rows) == {("semantic", "predatory_hit"), ("sham", "predatory_hit"), ("sham", "no_hit"),
                         ("learned", "retribution_hit")}
    assert rows[("sham", "no_hit")]["total_amount"] == pytest.approx(-0.2)
    assert rows[("sham", "no_hit")]["negative_share"] == pytest.approx(1.0)
    assert rows[("learned", "retribution_hit")]["negative_share"] == pytest.approx(0.0)
    assert rows[("sham", "predatory_hit")]["mean_lag"] == pytest.approx(20)
