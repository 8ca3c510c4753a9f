"""Known answers for the report's rates per agent-step and its hit-gated retribution ratio."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_metrics import apple, connect, ep_rows, run_query, write_run
from test_metrics_ablation import LEDGER_HITS

# LEDGER_HITS per episode: hits 3, 1, 0, 2; retribution 1, 1, 0, 1; predation 2, 0, 0, 1


def ledger_run(lake: Path, run_id: str, grid: int, steps: int, seed: int = 1) -> None:
    episodes, events = [], [dict(h) for h in LEDGER_HITS]
    for e in range(4):
        episodes += ep_rows(e, e * 10, steps, [{"apples": 1}, {"apples": 1}, {"apples": 0}])
        events.append(apple(e, 5, 0, e * 10) | {"seq": 10})
    write_run(lake, run_id, condition="full", grid_size=grid, seed=seed, episodes=episodes,
              events=events)


def test_aggression_curve_rate_per_agent_step(tmp_path: Path) -> None:
    ledger_run(tmp_path, "small", 10, steps=10)  # 3 agents x 10 steps = 30 agent-steps
    ledger_run(tmp_path, "big", 30, steps=20)  # the same hits over 60 agent-steps
    rows = run_query(connect(tmp_path), "aggression_curve", n_bins=4)
    for grid, agent_steps in ((10, 30), (30, 60)):
        seed_rows = {r["bin"]: r for r in rows if r["grid_size"] == grid and r["seed"] is not None}
        assert {b: r["predatory_zaps"] for b, r in seed_rows.items()} == {0: 2, 1: 0, 2: 0, 3: 1}
        want = {0: 2000 / agent_steps, 1: 0.0, 2: 0.0, 3: 1000 / agent_steps}
        assert {b: r["predatory_rate"] for b, r in seed_rows.items()} == pytest.approx(want)
        mean = [r for r in rows if r["grid_size"] == grid and r["seed"] is None]
        assert mean[0]["predatory_rate"] == pytest.approx(want[0]) and mean[0]["rate_ci_low"] is None


def test_retribution_curve_shows_a_ratio_only_from_enough_hits(tmp_path: Path) -> None:
    ledger_run(tmp_path, "a", 10, steps=10)
    con = connect(tmp_path)
    rows = run_query(con, "retribution_curve", n_bins=4, min_hits=1)
    seed_rows = {r["bin"]: r for r in rows if r["seed"] is not None}
    assert {b: r["hits"] for b, r in seed_rows.items()} == {0: 3, 1: 1, 2: 0, 3: 2}
    assert {b: r["retribution_hits"] for b, r in seed_rows.items()} == {0: 1, 1: 1, 2: 0, 3: 1}
    ratios = {b: r["retribution_ratio"] for b, r in seed_rows.items()}
    assert ratios == {0: pytest.approx(1 / 3), 1: 1.0, 2: None, 3: 0.5}
    # the default threshold (20 hits) hides every ratio here but keeps the hit counts
    rows = run_query(con, "retribution_curve", n_bins=4, min_hits=20)
    assert all(r["retribution_ratio"] is None and r["min_hits"] == 20 for r in rows)
    assert sum(r["hits"] for r in rows if r["seed"] is None) == 6
    assert all(r["n"] == 0 for r in rows if r["seed"] is None)  # no seed shown
    # one bin pools the episodes: 3 of 6 hits are retribution; shown from 6 hits, not from 7
    mean_row, seed_row = run_query(con, "retribution_curve", n_bins=1, min_hits=6)  # nulls first
    assert mean_row["seed"] is None and seed_row["n"] == 4  # episodes
    assert seed_row["retribution_ratio"] == 0.5 and mean_row["retribution_ratio"] == 0.5
    assert mean_row["n"] == 1 and mean_row["hits"] == 6
    rows = run_query(con, "retribution_curve", n_bins=1, min_hits=7)
    assert [r["retribution_ratio"] for r in rows] == [None, None]


def test_scale_comparison_rates_and_late_hits(tmp_path: Path) -> None:
    ledger_run(tmp_path, "small", 10, steps=10)
    ledger_run(tmp_path, "big", 30, steps=20)
    rows = run_query(connect(tmp_path), "scale_comparison", late_fraction=1.0)
    by = {r["metric"]: r for r in rows}
    assert by["predatory_zaps"]["small_mean"] == by["predatory_zaps"]["big_mean"] == 0.75
    assert by["predatory_rate"]["small_mean"] == pytest.approx(750 / 30)
    assert by["predatory_rate"]["big_mean"] == pytest.approx(750 / 60)
    assert by["late_hits"]["small_mean"] == by["late_hits"]["big_mean"] == 6
    assert by["retribution_ratio"]["small_mean"] == pytest.approx(0.5)
    assert by["sustainability"]["small_mean"] == by["sustainability"]["big_mean"] == 5
    assert by["sustainability_share"]["small_mean"] == pytest.approx(0.5)
    assert by["sustainability_share"]["big_mean"] == pytest.approx(0.25)


def test_cli_rejects_a_bad_min_hits(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from karmic.cli import app

    ledger_run(tmp_path / "lake", "a", 10, steps=10)
    res = CliRunner().invoke(
        app, ["report", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "o"),
              "--min-hits", "0"],
    )
    assert res.exit_code == 2 and "--min-hits" in res.stderr
