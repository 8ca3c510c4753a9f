"""Known-answer tests for aggression_curve, ablation and scale_comparison on hand-written lakes."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from test_metrics import apple, connect, ep_rows, run_query, write_run


def hit(episode: int, seq: int, attacker: int, victim: int, ctx: bool = False) -> dict:
    return {
        "episode": episode,
        "t": seq,
        "global_step": episode * 10 + seq,
        "seq": seq,
        "event_type": "ZAP_HIT",
        "agent": f"agent_{attacker}",
        "target": f"agent_{victim}",
        "apple_context": ctx,
    }


# Ledger walk (decay 0.95), pair (0, 1) unless said:
# ep0: 0->1 predation (0 owes 1: 1.0); 1->0 retribution (0); 1->0 ctx predation (1 owes 0: 1.5)
# ep1: 0->1 retribution (1.5 * 0.95 > 0 -> 0.425); ep3: 0->1 retribution (0.425 * 0.95^2 > 0 -> 0);
# ep3: 2->0 predation (new pair).  Predation per episode: 2, 0, 0, 2 - 1 = 1.
LEDGER_HITS = [
    hit(0, 0, 0, 1),
    hit(0, 1, 1, 0),
    hit(0, 2, 1, 0, ctx=True),
    hit(1, 0, 0, 1),
    hit(3, 0, 0, 1),
    hit(3, 1, 2, 0),
]
PREDATION = {0: 2, 1: 0, 2: 0, 3: 1}


def ledger_run(lake: Path, run_id: str, condition: str, seed: int, grid: int = 10) -> None:
    episodes = []
    for e in range(4):
        episodes += ep_rows(e, e * 10, 10, [{"apples": 1}, {"apples": 1}, {"apples": 0}])
    write_run(
        lake,
        run_id,
        condition=condition,
        grid_size=grid,
        seed=seed,
        episodes=episodes,
        events=list(LEDGER_HITS),
    )


def test_aggression_curve_classifies_hits_by_the_ledger(tmp_path: Path) -> None:
    ledger_run(tmp_path, "a", "baseline", 1)
    con = connect(tmp_path)
    con.execute("set variable n_bins = 4")  # global_step 0..30 -> width 8, one episode per bin
    rows = run_query(con, "aggression_curve")
    seed_rows = {r["bin"]: r for r in rows if r["seed"] is not None}
    assert {b: r["predatory_zaps"] for b, r in seed_rows.items()} == {0: 2, 1: 0, 2: 0, 3: 1}
    assert [r["step"] for r in seed_rows.values()] == [4, 12, 20, 28]
    mean_rows = [r for r in rows if r["seed"] is None]
    assert len(mean_rows) == 4 and all(r["n"] == 1 and r["ci_low"] is None for r in mean_rows)


def test_aggression_curve_mean_and_ci_over_seeds(tmp_path: Path) -> None:
    # seed 1: the ledger run (predation 2,0,0,1); seed 2: no hits at all (0,0,0,0).
    ledger_run(tmp_path, "a", "full", 1)
    write_run(
        tmp_path,
        "b",
        condition="full",
        grid_size=10,
        seed=2,
        episodes=[r for e in range(4) for r in ep_rows(e, e * 10, 10, [{"apples": 1}] * 3)],
        events=[apple(0, 1, 0)],
    )
    con = connect(tmp_path)
    con.execute("set variable n_bins = 4")
    rows = [r for r in run_query(con, "aggression_curve") if r["seed"] is None]
    first = rows[0]
    assert first["n"] == 2 and first["predatory_zaps"] == pytest.approx(1.0)
    sd = statistics.stdev([2, 0])
    assert first["sd"] == pytest.approx(sd)
    assert first["ci_high"] == pytest.approx(1.0 + 12.7062 * sd / math.sqrt(2))


def test_ablation_late_window_and_welch_difference(tmp_path: Path) -> None:
    # baseline seeds 1, 2 and tvt seeds 1, 2, 3: efficiency of the last episode set by hand.
    eff = {("baseline", 1): 0.2, ("baseline", 2): 0.4, ("tvt", 1): 0.5, ("tvt", 2): 0.7}
    eff[("tvt", 3)] = 0.9
    for (cond, seed), u in eff.items():
        # early episode with a wildly different value, which the late window must ignore
        episodes = ep_rows(0, 0, 10, [{"return": 100.0}]) + ep_rows(
            1, 100, 10, [{"return": u * 10}]
        )
        write_run(
            tmp_path,
            f"{cond}-{seed}",
            condition=cond,
            grid_size=10,
            seed=seed,
            episodes=episodes,
            events=[],
        )
    rows = run_query(connect(tmp_path), "ablation")
    effs = {r["condition"]: r for r in rows if r["metric"] == "efficiency"}
    b, t = effs["baseline"], effs["tvt"]
    assert b["n_seeds"] == 2 and b["mean"] == pytest.approx(0.3)
    assert b["sd"] == pytest.approx(statistics.stdev([0.2, 0.4]))
    assert b["ci_low"] == pytest.approx(0.3 - 12.7062 * b["sd"] / math.sqrt(2))
    assert t["n_seeds"] == 3 and t["mean"] == pytest.approx(0.7)
    assert t["ci_high"] == pytest.approx(0.7 + 4.3027 * t["sd"] / math.sqrt(3))
    assert t["diff"] == pytest.approx(0.4) and b["diff"] is None
    vb, vt = b["sd"] ** 2 / 2, t["sd"] ** 2 / 3
    se = math.sqrt(vb + vt)
    df = (vb + vt) ** 2 / (vb**2 / 1 + vt**2 / 2)  # 2.77 -> table df 2 -> t = 4.3027
    assert 2 <= df < 3
    assert t["diff_ci_low"] == pytest.approx(0.4 - 4.3027 * se)
    assert t["diff_ci_high"] == pytest.approx(0.4 + 4.3027 * se)
    # the whole run instead of the late window: the early episode now counts
    con = connect(tmp_path)
    con.execute("set variable late_fraction = 1.0")
    rows = run_query(con, "ablation")
    b = next(r for r in rows if r["metric"] == "efficiency" and r["condition"] == "baseline")
    assert b["mean"] == pytest.approx((10 + 0.2 + 10 + 0.4) / 4)


def test_ablation_counts_seeds_not_reruns(tmp_path: Path) -> None:
    for run_id, u in (("x1", 0.2), ("x2", 0.4)):  # the same seed twice
        write_run(
            tmp_path,
            run_id,
            condition="baseline",
            grid_size=10,
            seed=7,
            episodes=ep_rows(0, 0, 10, [{"return": u * 10}]),
            events=[],
        )
    (row,) = [r for r in run_query(connect(tmp_path), "ablation") if r["metric"] == "efficiency"]
    assert row["n_seeds"] == 1 and row["mean"] == pytest.approx(0.3)
    assert row["sd"] is None and row["ci_low"] is None  # n = 1: no CI, not an error


def test_ablation_ledger_metrics(tmp_path: Path) -> None:
    ledger_run(tmp_path, "a", "baseline", 1)
    con = connect(tmp_path)
    con.execute("set variable late_fraction = 1.0")  # all four episodes
    rows = {r["metric"]: r for r in run_query(con, "ablation")}
    assert rows["predatory_zaps"]["mean"] == pytest.approx(3 / 4)
    assert rows["retribution_ratio"]["mean"] == pytest.approx(3 / 6)


def test_ablation_rejects_bad_late_fraction(tmp_path: Path) -> None:
    ledger_run(tmp_path, "a", "baseline", 1)
    con = connect(tmp_path)
    con.execute("set variable late_fraction = 1.5")
    with pytest.raises(Exception, match="late_fraction"):
        run_query(con, "ablation")


def test_scale_comparison_pairs_grid_sizes(tmp_path: Path) -> None:
    vals = {(10, 1): 0.2, (10, 2): 0.4, (30, 1): 0.6, (30, 2): 1.0}
    for (grid, seed), u in vals.items():
        write_run(
            tmp_path,
            f"g{grid}-{seed}",
            condition="full",
            grid_size=grid,
            seed=seed,
            episodes=ep_rows(0, 0, 10, [{"return": u * 10}]),
            events=[],
        )
    write_run(  # a 20x20 run is ignored; a baseline only at 10x10 keeps its row with big side null
        tmp_path,
        "mid",
        condition="full",
        grid_size=20,
        seed=1,
        episodes=ep_rows(0, 0, 10, [{"return": 50.0}]),
        events=[],
    )
    write_run(
        tmp_path,
        "b",
        condition="baseline",
        grid_size=10,
        seed=1,
        episodes=ep_rows(0, 0, 10, [{"return": 1.0}]),
        events=[],
    )
    rows = [
        r for r in run_query(connect(tmp_path), "scale_comparison") if r["metric"] == "efficiency"
    ]
    base, full = rows
    assert base["condition"] == "baseline" and base["big_mean"] is None and base["diff"] is None
    assert full["small_mean"] == pytest.approx(0.3) and full["big_mean"] == pytest.approx(0.8)
    assert full["small_grid"] == 10 and full["big_grid"] == 30
    assert full["diff"] == pytest.approx(0.5)
    vs, vb = statistics.variance([0.2, 0.4]) / 2, statistics.variance([0.6, 1.0]) / 2
    df = (vs + vb) ** 2 / (vs**2 + vb**2)  # 1.47 -> table df 1
    assert 1 <= df < 2
    assert full["diff_ci_low"] == pytest.approx(0.5 - 12.7062 * math.sqrt(vs + vb))


def test_large_debts_do_not_overflow(tmp_path: Path) -> None:
    # 12 predatory hits with apple context: debt 18 (> any small decimal), then 3 retributions
    hits = [hit(0, s, 0, 1, ctx=True) for s in range(12)] + [hit(0, 12 + s, 1, 0) for s in range(3)]
    write_run(
        tmp_path,
        "big",
        condition="baseline",
        grid_size=10,
        seed=1,
        episodes=ep_rows(0, 0, 10, [{"apples": 1}] * 2),
        events=hits,
    )
    rows = {r["metric"]: r for r in run_query(connect(tmp_path), "ablation")}
    assert rows["predatory_zaps"]["mean"] == 12
    assert rows["retribution_ratio"]["mean"] == pytest.approx(3 / 15)


@pytest.mark.parametrize("decay, predation", [(0.95, 1), (0.5, 2)])
def test_ledger_decay_comes_from_the_run_config(
    tmp_path: Path, decay: float, predation: int
) -> None:
    # ep0: 0->1 with apple context (0 owes 1.5); ep1: 1->0 retribution (1.5 d - 1 left);
    # ep2: 1->0 is retribution only if 1.5 d - 1 > 0, i.e. d = 0.95 yes, d = 0.5 no
    write_run(
        tmp_path,
        "d",
        condition="baseline",
        grid_size=10,
        seed=1,
        episodes=[r for e in range(3) for r in ep_rows(e, e * 10, 10, [{"apples": 1}] * 2)],
        events=[hit(0, 0, 0, 1, ctx=True), hit(1, 0, 1, 0), hit(2, 0, 1, 0)],
        config={"ledger_decay": decay},
    )
    con = connect(tmp_path)
    con.execute("set variable late_fraction = 1.0")
    rows = {r["metric"]: r for r in run_query(con, "ablation")}
    assert rows["predatory_zaps"]["mean"] == pytest.approx(predation / 3)


def test_harvest_curve_bins_each_run_by_its_own_training_fraction(tmp_path: Path) -> None:
    # run a: 4 episodes of 10 steps x 2 agents at global steps 0, 10, 20, 30 (last 30: width 31 / 2),
    # apples 1, 3, 5, 7 (the second agent eats none); run b: 2 episodes at 0 and 100, apples 2 and 4
    for run_id, seed, starts, apples in (("a", 1, [0, 10, 20, 30], [1, 3, 5, 7]), ("b", 2, [0, 100], [2, 4])):
        episodes = [r for e, (g, n) in enumerate(zip(starts, apples, strict=True))
                    for r in ep_rows(e, g, 10, [{"apples": n}, {"apples": 0}])]
        write_run(tmp_path, run_id, condition="tvt", grid_size=30, seed=seed, episodes=episodes, events=[])
    con = connect(tmp_path)
    con.execute("set variable n_bins = 2")
    rows = {(r["run_id"], r["bin"]): r for r in run_query(con, "harvest_curve")}
    # a: bin = floor(2 * g / 31): 0, 10 -> bin 0; 20, 30 -> bin 1; b: floor(2 * g / 101): 0 -> 0, 100 -> 1
    assert rows[("a", 0)]["apples_per_agent_step"] == pytest.approx((1 + 3) / 40)
    assert rows[("a", 1)]["apples_per_agent_step"] == pytest.approx((5 + 7) / 40)
    assert (rows[("a", 0)]["episodes"], rows[("b", 0)]["episodes"]) == (2, 1)
    assert rows[("b", 1)]["apples_per_agent_step"] == pytest.approx(4 / 20)
    assert set(rows) == {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
    con.execute("set variable n_bins = 0")
    with pytest.raises(Exception, match="n_bins must be a positive integer"):
        run_query(con, "harvest_curve")
