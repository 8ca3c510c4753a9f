"""Known-answer tests for the welfare and mechanism queries (welfare.sql, agent_episodes.sql,
rigged_pairs.sql): a hand-made matchmaker run whose Gini, sustainability, peace, encounters,
rigged spawns and retaliation were computed by hand (docs/metrics-welfare.md)."""

from __future__ import annotations

import pytest
from test_metrics import apple, connect, ep_rows, run_query, write_run


def hit(episode, t, attacker, victim, seq=None, ctx=False):
    return {"episode": episode, "t": t, "global_step": episode * 10 + t, "event_type": "ZAP_HIT",
            "agent": f"agent_{attacker}", "target": f"agent_{victim}", "apple_context": ctx}


def rigged(episode, a, b):
    return [{"episode": episode, "t": 0, "global_step": episode * 10, "event_type": "SPAWN",
             "agent": f"agent_{x}", "target": f"agent_{y}", "spawn_cause": "rigged"} for x, y in ((a, b), (b, a))]


def spawn(episode, a):
    return {"episode": episode, "t": 0, "global_step": episode * 10, "event_type": "SPAWN",
            "agent": f"agent_{a}", "spawn_cause": "reset"}


@pytest.fixture
def lake(tmp_path):
    """Three agents, T = 10, three episodes:
    0: agent_0 hits agent_1 (predation: agent_0 now owes agent_1 1.0); no rigged spawn;
    1: the matchmaker spawns (0, 1) side by side; agent_1 hits agent_0 at t = 3 (retribution: it
       was owed), agent_2 hits agent_0 at t = 5 (predation); apples at t 2 (a0), 4, 6, 8 (a1), 5, 7
       (a2); returns 0.5 / 3 / 2 (agent_0 lost 0.5 once); agent_0 off the board 6 steps;
       encounters 4 / 5 / 3;
    2: (0, 1) rigged again; agent_0 hits agent_1 (predation: the debt was paid): not hit back;
       encounters not recorded (null), as in a run from before they were counted."""
    events = [spawn(0, 0), spawn(0, 1), spawn(0, 2), hit(0, 1, 0, 1)]
    events += rigged(1, 0, 1) + [spawn(1, 2), hit(1, 3, 1, 0), hit(1, 5, 2, 0)]
    events += [apple(1, 2, 0, 10), apple(1, 4, 1, 10), apple(1, 6, 1, 10), apple(1, 8, 1, 10),
               apple(1, 5, 2, 10), apple(1, 7, 2, 10)]
    events += rigged(2, 0, 1) + [spawn(2, 2), hit(2, 4, 0, 1)]
    episodes = ep_rows(0, 0, 10, [{"zaps_hit": 1, "encounters": 2}, {"times_hit": 1, "encounters": 2},
                                  {"encounters": 0}])
    episodes += ep_rows(1, 10, 10, [
        {"apples": 1, "return": 0.5, "times_hit": 2, "frozen_steps": 6, "encounters": 4},
        {"apples": 3, "return": 3.0, "zaps_hit": 1, "encounters": 5},
        {"apples": 2, "return": 2.0, "zaps_hit": 1, "encounters": 3},
    ])
    episodes += ep_rows(2, 20, 10, [{"zaps_hit": 1}, {"times_hit": 1}, {}])
    write_run(tmp_path, "w1", condition="matchmaker", grid_size=10, seed=0, episodes=episodes,
              events=events, config={"ledger_decay": 0.95})
    return tmp_path


def test_welfare_per_episode_known_answers(lake):
    rows = {r["episode"]: r for r in run_query(connect(lake), "welfare")}
    e1 = rows[1]
    assert e1["efficiency"] == pytest.approx(5.5 / 10)
    assert e1["efficiency_per_agent_step"] == pytest.approx(5.5 / 30)
    # returns sorted 0.5, 2, 3: Gini = (-2 * 0.5 + 0 * 2 + 2 * 3) / (3 * 5.5) = 5 / 16.5
    assert e1["equality"] == pytest.approx(1 - 5 / 16.5)
    # apples sorted 1, 2, 3: Gini = 4 / 18
    assert e1["equality_apples"] == pytest.approx(1 - 4 / 18)
    assert e1["sustainability"] == pytest.approx((2 + 4 + 6 + 8 + 5 + 7) / 6)
    assert e1["peace"] == pytest.approx((30 - 6) / 10)
    assert e1["peace_share"] == pytest.approx(0.8)
    assert (e1["predation"], e1["retribution"], e1["encounters"]) == (1, 1, 12)
    assert e1["predation_per_encounter"] == pytest.approx(1 / 12)
    assert (e1["rigged_spawns"], e1["rigged_pairs"], e1["rigged_pairs_hit_back"], e1["rigged_hits_back"]) == (2, 1, 1, 1)
    assert e1["retaliation_rate"] == 1.0
    e0, e2 = rows[0], rows[2]
    assert (e0["rigged_pairs"], e0["retaliation_rate"]) == (0, None)  # no rigged spawn: undefined
    assert e0["equality"] is None and e0["sustainability"] is None  # nothing earned, nothing eaten
    assert e0["predation_per_encounter"] == pytest.approx(1 / 4)
    assert (e2["rigged_pairs"], e2["rigged_pairs_hit_back"], e2["retaliation_rate"]) == (1, 0, 0.0)
    assert e2["encounters"] is None and e2["predation_per_encounter"] is None  # not recorded


def test_agent_episodes_and_rigged_pairs_known_answers(lake):
    con = connect(lake)
    rows = {(r["episode"], r["agent"]): r for r in run_query(con, "agent_episodes")}
    a0, a1, a2 = (rows[(1, f"agent_{i}")] for i in range(3))
    assert (a0["apples"], a0["hits_taken"], a0["hits_given"], a0["predation"]) == (1, 2, 0, 0)
    assert (a1["hits_given"], a1["predation"], a1["retribution"]) == (1, 0, 1)
    assert (a2["predation"], a2["encounters"]) == (1, 3)
    assert a2["predation_per_encounter"] == pytest.approx(1 / 3)
    assert a1["apples_per_step"] == pytest.approx(0.3)
    assert a0["role"] is None  # not an eval run
    pairs = run_query(con, "rigged_pairs")
    assert [(p["episode"], p["agent_a"], p["agent_b"], p["hits_back"], p["predation_between"], p["hit_back"])
            for p in pairs] == [(1, "agent_0", "agent_1", 1, 0, True), (2, "agent_0", "agent_1", 0, 1, False)]
    assert pairs[0]["first_hit_back_step"] == 13


def test_welfare_queries_are_listed():
    from karmic.lake import list_queries

    names = dict(list_queries())
    for q in ("welfare", "agent_episodes", "rigged_pairs"):
        assert names.get(q), q


def test_a_studys_metrics_carry_the_welfare_columns(lake):
    """queries/study/metrics.sql (what results/<study>/metrics.parquet holds) has them per episode."""
    import pyarrow as pa

    from karmic.lake import queries_dir, query_sql

    con = connect(lake)
    con.register("study_cells", pa.Table.from_pylist([{"run_id": "w1", "condition": "matchmaker", "grid_size": 10,
                                                        "level": "default", "seed": 0, "scripted": False}]))
    con.execute(f"create temp view ledger_debt as {query_sql('ledger_debt').strip().rstrip(';')}")
    rel = con.sql((queries_dir() / "study" / "metrics.sql").read_text())
    rows = {r["episode"]: r for r in (dict(zip(rel.columns, t, strict=True)) for t in rel.fetchall())}
    e1 = rows[1]
    assert e1["equality"] == pytest.approx(1 - 5 / 16.5) and e1["equality_apples"] == pytest.approx(1 - 4 / 18)
    assert e1["sustainability"] == pytest.approx(32 / 6)
    assert (e1["encounters"], e1["rigged_pairs"], e1["rigged_pairs_hit_back"]) == (12, 1, 1)
    assert (rows[2]["rigged_pairs"], rows[2]["rigged_pairs_hit_back"], rows[2]["encounters"]) == (1, 0, None)


def test_metrics_written_before_the_welfare_columns_are_carried_with_nulls():
    import pyarrow as pa

    from pipelines.study_report import _widen

    new = pa.schema([("run_id", pa.string()), ("hits", pa.int64()), ("encounters", pa.int64())])
    old = pa.table({"run_id": ["a", "b"], "hits": pa.array([1, 2], pa.int64())})
    wide = _widen(old, new)
    assert wide.schema.equals(new) and wide.column("encounters").null_count == 2
    assert wide.column("hits").to_pylist() == [1, 2]
    assert _widen(pa.table({"run_id": ["a"], "gone": [1]}), new) is None  # a column metrics.sql dropped
    assert _widen(pa.table({"run_id": ["a"], "hits": pa.array([1.5])}), new) is None  # another type
