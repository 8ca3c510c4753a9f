"""The ledger rule: Python fold == SQL on random logs, known answers, rebuild == live, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from karmic.events import CAUSE_RESET, SPAWN, ZAP_HIT, EventBatch
from karmic.lake import connect, fetch, query_sql, run_query
from karmic.ledger import PREDATION, RETRIBUTION, Ledger, VecLedger
from pipelines.ledger_rebuild import check, rebuild
from pipelines.simulate import simulate
from pipelines.writer import LakeWriter

N = 4


def make_log(episodes: list[list[tuple[int, int, int, bool]]]) -> EventBatch:
    """episodes: per episode a list of hits (t, attacker, victim, apple_context); every episode
    starts with N SPAWN events at t = 0, as the environment writes them."""
    rows = []
    for e, hits in enumerate(episodes):
        seq = 0
        for n in range(N):
            rows.append((e, 0, seq, SPAWN, n, -1, -1, CAUSE_RESET))
            seq += 1
        for t, a, v, c in sorted(hits, key=lambda h: h[0]):
            rows.append((e, t, seq, ZAP_HIT, a, v, int(c), -1))
            seq += 1
    arr = np.array(rows, dtype=np.int64).reshape(-1, 8)
    n = len(arr)
    return EventBatch(
        env=np.zeros(n, np.int32), episode=arr[:, 0], t=arr[:, 1].astype(np.int32),
        seq=arr[:, 2].astype(np.int32), event_type=arr[:, 3].astype(np.int8),
        agent=arr[:, 4].astype(np.int16), target=arr[:, 5].astype(np.int16),
        x=np.zeros(n, np.int16), y=np.zeros(n, np.int16),
        target_x=np.where(arr[:, 5] >= 0, 1, -1).astype(np.int16),
        target_y=np.where(arr[:, 5] >= 0, 1, -1).astype(np.int16),
        direction=np.zeros(n, np.int8), apple_context=arr[:, 6].astype(np.int8),
        spawn_cause=arr[:, 7].astype(np.int8),
    )


def write_log(lake: Path, ev: EventBatch, decay: float, run_id: str = "r") -> None:
    w = LakeWriter(lake, run_id, meta={"kind": "test", "n_agents": N, "num_envs": 1,
                                       "config": {"ledger_decay": decay, "n_agents": N}})
    w.write_events(ev, ev.episode * 1000 + ev.t)
    w.close()


def sql_classes(lake: Path) -> list[int]:
    prefix = query_sql("predatory_zaps").split(",\n\nepisode_list as")[0]
    rows = fetch(connect(lake), prefix + "\nselect retribution from classified order by episode, seq")[1]
    return [RETRIBUTION if r[0] else PREDATION for r in rows]


def sql_debts_by_episode(lake: Path) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for ep, debtor, creditor, debt in fetch(
        connect(lake), f"select episode, debtor, creditor, debt from ({query_sql('ledger_debt')})"
    )[1]:
        m = out.setdefault(ep, np.zeros((N, N)))
        m[int(debtor[6:]), int(creditor[6:])] = debt
    return out


def python_debts_by_episode(ev: EventBatch, decay: float, n_episodes: int):
    led = Ledger(N, decay)
    classes, debts = [], {}
    for e in range(n_episodes):
        m = ev.episode == e
        classes += list(led.observe(ev.take(np.flatnonzero(m))))
        led.end_episode()
        debts[e] = led.debts.copy()
    return classes, debts, led


# --- Python fold == SQL -----------------------------------------------------------------------
hit = st.tuples(st.integers(1, 5), st.integers(0, N - 1), st.integers(1, N - 1), st.booleans()).map(
    lambda h: (h[0], h[1], (h[1] + h[2]) % N, h[3])  # victim != attacker; small t: several hits per step
)


@settings(max_examples=30, deadline=None)  # each example writes a lake and runs 5 queries
@given(episodes=st.lists(st.lists(hit, max_size=12), min_size=1, max_size=8),
       decay=st.sampled_from([0.95, 0.5, 1.0, 0.0, 0.8]))
def test_python_fold_and_sql_agree(tmp_path_factory, episodes, decay):
    lake = tmp_path_factory.mktemp("lake")
    ev = make_log(episodes)
    write_log(lake, ev, decay)
    classes, debts, live = python_debts_by_episode(ev, decay, len(episodes))
    assert sql_classes(lake) == [int(c) for c in classes]
    sql = sql_debts_by_episode(lake)
    for e in range(len(episodes)):
        np.testing.assert_allclose(sql.get(e, np.zeros((N, N))), debts[e], atol=1e-9, rtol=0)
    # the rebuild (whole-log fold) equals the live, event-by-event fold
    np.testing.assert_allclose(rebuild(lake, "r").ledgers[0].debts, live.debts, atol=1e-12, rtol=0)
    assert check(lake, "r") == []
    # predatory_zaps per episode and retribution_ratio agree with the classification
    pz = {r[1]: r[3] for r in run_query("predatory_zaps", lake)[1]}
    per_ep = [sum(1 for c, e in zip(classes, ev.episode[ev.event_type == ZAP_HIT], strict=True)
                  if e == k and c == PREDATION) for k in range(len(episodes))]
    assert [pz[k] for k in range(len(episodes))] == per_ep
    if classes:
        rr = run_query("retribution_ratio", lake)[1][0]
        assert rr[3] == len(classes) and rr[4] == sum(1 for c in classes if c == RETRIBUTION)


# --- known answers ----------------------------------------------------------------------------
def test_aggressor_and_retaliator():
    led = Ledger(N, decay=0.95)
    assert led.apply_hit(0, 1, False) == "predation" and led.debts[0, 1] == 1.0
    assert led.apply_hit(1, 0, False) == "retribution" and led.debts[0, 1] == 0.0
    assert led.apply_hit(1, 0, False) == "predation" and led.debts[1, 0] == 1.0


def test_apple_context_weighs_one_and_a_half():
    led = Ledger(N)
    led.apply_hit(2, 3, True)
    assert led.debts[2, 3] == 1.5
    assert led.apply_hit(3, 2, False) == "retribution" and led.debts[2, 3] == 0.5
    assert led.apply_hit(3, 2, False) == "retribution" and led.debts[2, 3] == 0.0


def test_known_answers_in_sql(tmp_path):
    # episode 0: mutual hits in the same step (seq decides), then an apple-context hit;
    # episode 1: nothing (it still decays); episode 2: retribution then predation
    log = [[(3, 0, 1, False), (3, 1, 0, False), (4, 2, 3, True)], [], [(2, 3, 2, False), (3, 3, 2, False)]]
    write_log(tmp_path, make_log(log), decay=0.5)
    # 0->1 predation (d01 = 1); 1->0 retribution (d01 = 0); 2->3 predation ctx (d23 = 1.5)
    # end ep0: d23 = 0.75; end ep1: 0.375; ep2: 3->2 retribution (d23 = 0); 3->2 predation (d32 = 1)
    assert sql_classes(tmp_path) == [PREDATION, RETRIBUTION, PREDATION, RETRIBUTION, PREDATION]
    d = sql_debts_by_episode(tmp_path)
    assert d[0][2, 3] == 0.75 and d[0].sum() == 0.75
    assert d[1][2, 3] == 0.375 and d[1].sum() == 0.375
    assert d[2][3, 2] == 0.5 and d[2].sum() == 0.5
    assert rebuild(tmp_path, "r").ledgers[0].entries() == [{"debtor": "agent_3", "creditor": "agent_2", "debt": 0.5}]
    pz = [r[3] for r in run_query("predatory_zaps", tmp_path)[1]]
    assert pz == [2, 0, 1]


def test_pairs_are_greedy_by_largest_debt():
    led = Ledger(5)
    led.debts[0, 1] = 3.0
    led.debts[2, 1] = 5.0
    led.debts[3, 4] = 1.0
    led.debts[0, 3] = 2.0
    assert led.pairs() == [(2, 1), (0, 3)]  # 2->1 first; 0->1 blocked by 1; 0->3 next; 3 taken
    assert Ledger(3).pairs() == []


def test_vec_ledger_keeps_envs_apart():
    v = VecLedger(2, N, decay=1.0)
    ev = make_log([[(1, 0, 1, False)]])
    ev.env[:] = 1
    v.observe(ev)
    assert v.ledgers[0].total_debt == 0 and v.ledgers[1].debts[0, 1] == 1.0
    assert v.pairs() == [[], [(0, 1)]]


# --- rebuild from a simulated run == the live ledger ------------------------------------------
def test_rebuild_after_simulate_matchmaker_equals_live(tmp_path):
    res = simulate(tmp_path, grid_size=10, episodes=6, policy="mixed", matchmaker=True, seed=2,
                   max_steps=200, run_id="mm")
    rebuilt = rebuild(tmp_path, "mm")
    assert res.ledger.total_debt > 0
    np.testing.assert_allclose(rebuilt.ledgers[0].debts, res.ledger.debts, atol=1e-12, rtol=0)
    assert check(tmp_path, "mm") == []
    rr = run_query("retribution_ratio", tmp_path, run="mm")[1][0]
    assert rr[4] == res.ledger.n_retribution and rr[5] == res.ledger.n_predation


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "karmic.cli", *args], capture_output=True, text=True, timeout=120)


def test_ledger_cli(tmp_path):
    simulate(tmp_path, grid_size=10, episodes=3, policy="mixed", matchmaker=True, seed=4,
             max_steps=200, run_id="c1")
    r = _cli("ledger", "--run", "c1", "--format", "json", "--lake", str(tmp_path))
    assert r.returncode == 0
    rows = json.loads(r.stdout)
    assert all(set(x) == {"debtor", "creditor", "debt"} and x["debt"] > 0 for x in rows)
    assert _cli("ledger", "--check", "--lake", str(tmp_path)).returncode == 0
    for bad in (["--run", "nope"], ["--format", "xml"]):
        r = _cli("ledger", *bad, "--lake", str(tmp_path))
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    r = _cli("ledger", "--lake", str(tmp_path / "missing"))
    assert r.returncode == 2 and "lake not found" in r.stderr
