"""Rebuilding the matchmaker's ledger from the lake, and checking it against the SQL.

``rebuild(lake, run_id)`` reads the run's ZAP_HIT events (only the needed columns, through
DuckDB), splits them into the run's env streams (a batched run numbers episodes
``round * num_envs + env`` and keeps one ledger per env; ``num_envs`` comes from run.json,
default 1) and folds each stream with :meth:`karmic.ledger.Ledger.fold_arrays`, decaying after
every episode including the last. ``check(lake, run_id)`` compares that with
``queries/ledger_debt.sql`` at each stream's last episode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from karmic.lake import LakeError, connect, fetch, query_sql
from karmic.ledger import DEFAULT_DECAY, Ledger
from pipelines import storage
from pipelines.storage import LakePath


@dataclass
class RebuiltLedger:
    run_id: str
    num_envs: int
    n_episodes: int
    ledgers: list[Ledger]  # one per env stream

    def entries(self) -> list[dict]:
        rows = []
        for env, led in enumerate(self.ledgers):
            for r in led.entries():
                rows.append({**r, "env": env} if self.num_envs > 1 else r)
        return sorted(rows, key=lambda r: (-r["debt"], r.get("env", 0), r["debtor"], r["creditor"]))

    @property
    def total_debt(self) -> float:
        return float(sum(led.total_debt for led in self.ledgers))


def latest_run(lake: Path | str) -> str:
    rows = fetch(connect(lake), "select run_id from runs order by started_at desc nulls last, run_id desc limit 1")[1]
    if not rows:
        raise LakeError(f"no runs in the lake {lake}")
    return rows[0][0]


def _run_meta(lake: LakePath, run_id: str) -> dict:
    p = lake / "runs" / f"run_id={run_id}" / "run.json"
    text = storage.read_text(p)
    try:
        return json.loads(text) if text is not None else {}
    except ValueError:
        raise LakeError(f"unreadable run.json: {p}") from None


def rebuild(lake: Path | str, run_id: str) -> RebuiltLedger:
    lake = storage.resolve(lake)
    meta = _run_meta(lake, run_id)
    decay = float((meta.get("config") or {}).get("ledger_decay", DEFAULT_DECAY))
    num_envs = max(int(meta.get("num_envs") or 1), 1)
    n_agents = int(meta.get("n_agents") or (meta.get("config") or {}).get("n_agents") or 0)
    con = connect(lake, run=run_id)
    rel = con.sql(
        "select episode, cast(substr(agent, 7) as integer) as a, cast(substr(target, 7) as integer) as v, "
        "coalesce(apple_context, false) as c from events where event_type = 'ZAP_HIT' order by episode, seq"
    )
    hits = rel.fetchnumpy()
    n_eps = fetch(con, "select count(distinct episode), max(episode) from events where event_type = 'SPAWN' and t = 0")[1][0]
    n_episodes = int(n_eps[0] or 0)
    last_episode = -1 if n_eps[1] is None else int(n_eps[1])
    if len(hits["a"]):
        n_agents = max(n_agents, int(hits["a"].max()) + 1, int(hits["v"].max()) + 1)
    ledgers = [Ledger(max(n_agents, 1), decay) for _ in range(num_envs)]
    ep = np.asarray(hits["episode"], np.int64)
    for b, led in enumerate(ledgers):
        m = ep % num_envs == b
        # episodes of this stream: b, b + B, b + 2B ... up to the run's last episode
        stream_eps = (last_episode - b) // num_envs + 1 if last_episode >= b else 0
        led.fold_arrays(ep[m] // num_envs, hits["a"][m], hits["v"][m], hits["c"][m], n_episodes=stream_eps)
    return RebuiltLedger(run_id, num_envs, n_episodes, ledgers)


def sql_debts(lake: Path | str, run_id: str) -> dict[tuple[int, str, str], float]:
    """The debts of ledger_debt.sql at each env stream's last episode: {(env, debtor, creditor): debt}."""
    con = connect(lake, run=run_id)
    num_envs = max(int(fetch(con, "select coalesce(max(num_envs), 1) from runs")[1][0][0] or 1), 1)
    cols, rows = fetch(con, query_sql("ledger_debt"))
    last = {}
    for ep in fetch(con, "select distinct episode from events where event_type = 'SPAWN' and t = 0")[1]:
        b = ep[0] % num_envs
        last[b] = max(last.get(b, -1), ep[0])
    i_ep, i_d, i_c, i_x = (cols.index(c) for c in ("episode", "debtor", "creditor", "debt"))
    return {
        (r[i_ep] % num_envs, r[i_d], r[i_c]): float(r[i_x])
        for r in rows if last.get(r[i_ep] % num_envs) == r[i_ep]
    }


def check(lake: Path | str, run_id: str, tol: float = 1e-9) -> list[str]:
    """Differences between the Python rebuild and the SQL (empty when they agree)."""
    rebuilt = rebuild(lake, run_id)
    py = {}
    for b, led in enumerate(rebuilt.ledgers):
        for r in led.entries():
            py[(b, r["debtor"], r["creditor"])] = r["debt"]
    sq = sql_debts(lake, run_id)
    diffs = []
    for k in sorted(set(py) | set(sq)):
        a, s = py.get(k, 0.0), sq.get(k, 0.0)
        if abs(a - s) > tol:
            diffs.append(f"env {k[0]} {k[1]} owes {k[2]}: python {a!r} vs sql {s!r}")
    return diffs
