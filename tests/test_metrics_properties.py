"""Property tests: the metric SQL against direct Python definitions on random inputs.

The tables are created in an in-memory DuckDB (same names and columns as the lake's views), so
each example costs milliseconds and no files.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

QUERIES = Path(__file__).resolve().parents[1] / "queries"


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        "create table episodes (run_id varchar, episode bigint, global_step bigint, agent varchar, "
        'steps int, "return" double, apples int, zaps_fired int, zaps_hit int, times_hit int, '
        "frozen_steps int, encounters int, condition varchar, grid_size int, seed bigint)"
    )
    con.execute(
        "create table events (run_id varchar, episode bigint, t int, global_step bigint, seq int, "
        "event_type varchar, agent varchar, target varchar, x smallint, y smallint, "
        "target_x smallint, target_y smallint, direction tinyint, apple_context boolean, "
        "spawn_cause varchar)"
    )
    con.execute(
        "create table runs as select 'r' as run_id, 'baseline' as condition, 10 as grid_size, "
        "0 as seed, 'finished' as status, 1 as num_envs, 'ppo' as algo, 1000 as memory_size, '{\"ledger_decay\": 0.95}'::json as config"
    )
    from karmic.lake import _empty_select, create_shared_views
    from pipelines.schema import TVT_TRANSPORTS_SCHEMA

    con.execute(f"create view tvt_transports as {_empty_select(TVT_TRANSPORTS_SCHEMA)}")

    create_shared_views(con)  # as karmic.lake.connect does
    return con


def _rows(con, name: str) -> list[dict]:
    rel = con.sql((QUERIES / f"{name}.sql").read_text())
    return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=8))
def test_equality_is_one_minus_pairwise_gini(apples: list[int]) -> None:
    con = _con()
    for i, a in enumerate(apples):
        con.execute(
            "insert into episodes values ('r', 0, 0, ?, 10, ?, ?, 0, 0, 0, 0, null, 'baseline', 10, 0)",
            [f"agent_{i}", float(a), a],
        )
    (row,) = _rows(con, "equality")
    n, total = len(apples), sum(apples)
    gini = 0.0 if total == 0 else sum(abs(a - b) for a in apples for b in apples) / (2 * n * total)
    assert row["gini"] == pytest.approx(gini, abs=1e-12)
    assert 0.0 <= row["gini"] <= 1 - 1 / n + 1e-12
    assert row["equality"] == pytest.approx(1 - gini, abs=1e-12)


def reference_predation(
    hits: list[tuple[int, int, int, bool]], n_ep: int, decay: float
) -> list[int]:
    """docs/DESIGN.md's ledger rule, written out directly: predatory hits per episode."""
    debt: dict[tuple[int, int], float] = {}
    out = [0] * n_ep
    for e in range(n_ep):
        for ep, a, b, ctx in hits:
            if ep != e:
                continue
            if debt.get((b, a), 0.0) > 0:
                debt[(b, a)] = max(0.0, debt[(b, a)] - 1)
            else:
                debt[(a, b)] = debt.get((a, b), 0.0) + (1.5 if ctx else 1.0)
                out[e] += 1
        debt = {k: v * decay for k, v in debt.items()}
    return out


hit_strategy = st.tuples(
    st.integers(0, 5), st.integers(0, 3), st.integers(0, 3), st.booleans()
).filter(lambda h: h[1] != h[2])


@settings(max_examples=40, deadline=None)
@given(st.lists(hit_strategy, max_size=30))
def test_aggression_curve_agrees_with_the_ledger_rule(hits: list) -> None:
    n_ep = 6
    hits = sorted(hits, key=lambda h: h[0])  # seq order within an episode = list order
    con = _con()
    for e in range(n_ep):
        for i in range(4):
            con.execute(
                "insert into episodes values ('r', ?, ?, ?, 10, 0, 0, 0, 0, 0, 0, null, 'baseline', 10, 0)",
                [e, e, f"agent_{i}"],
            )
    for seq, (e, a, b, ctx) in enumerate(hits):
        con.execute(
            "insert into events values ('r', ?, 0, ?, ?, 'ZAP_HIT', ?, ?, 0, 0, 0, 0, 0, ?, null)",
            [e, e, seq, f"agent_{a}", f"agent_{b}", ctx],
        )
    con.execute(f"set variable n_bins = {n_ep}")  # global_step = episode: one episode per bin
    got = {r["bin"]: r["predatory_zaps"] for r in _rows(con, "aggression_curve") if r["seed"] == 0}
    assert [got[e] for e in range(n_ep)] == reference_predation(hits, n_ep, 0.95)
    try:  # the project's Python fold, when it exists, must agree as well
        from karmic.ledger import Ledger
    except ImportError:
        return
    ledger, per_ep = Ledger(4, decay=0.95), [0] * n_ep
    for e in range(n_ep):
        for _, a, b, ctx in (h for h in hits if h[0] == e):
            per_ep[e] += ledger.apply_hit(a, b, ctx) == "predation"
        ledger.end_episode()
    assert per_ep == [got[e] for e in range(n_ep)]
