"""Ledger speed: rebuild from 1M ZAP_HIT events, `karmic query retribution_ratio` over a 10M-event
lake end to end, and what the live ledger + rigging add to a simulate run.

The lakes are synthetic (random hits among 5 agents over many episodes, plus the SPAWN events
that start every episode), written to a temp dir that is deleted afterwards. With --json the last
line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from karmic.events import CAUSE_RESET, SPAWN, ZAP_FIRED, ZAP_HIT, EventBatch
from pipelines.ledger_rebuild import rebuild
from pipelines.simulate import simulate
from pipelines.writer import LakeWriter, events_table, write_table

N = 5


def synthetic(n_events: int, hit_share: float, episode_len: int, seed: int) -> EventBatch:
    rng = np.random.default_rng(seed)
    n_hits = int(n_events * hit_share)
    n_eps = max(1, n_hits // 50)
    ep_h = np.sort(rng.integers(0, n_eps, n_hits))
    et = np.full(n_events, ZAP_FIRED, np.int8)
    ep = np.sort(rng.integers(0, n_eps, n_events)).astype(np.int64)
    hit_idx = rng.choice(n_events, n_hits, replace=False)
    et[hit_idx] = ZAP_HIT
    ep[hit_idx] = ep_h  # keep hits spread over episodes
    order = np.argsort(ep, kind="stable")
    et, ep = et[order], ep[order]
    spawn_first = np.r_[True, ep[1:] != ep[:-1]]
    et[spawn_first] = SPAWN  # every episode starts with a SPAWN at t = 0
    seq = np.arange(n_events) - np.maximum.accumulate(np.where(spawn_first, np.arange(n_events), 0))
    agent = rng.integers(0, N, n_events).astype(np.int16)
    target = np.where(et == ZAP_HIT, (agent + rng.integers(1, N, n_events)) % N, -1).astype(np.int16)
    t = np.where(spawn_first, 0, np.minimum(seq, episode_len - 1)).astype(np.int32)
    z = np.zeros(n_events, np.int16)
    return EventBatch(
        env=np.zeros(n_events, np.int32), episode=ep, t=t, seq=seq.astype(np.int32), event_type=et,
        agent=agent, target=target, x=z, y=z, target_x=np.where(target >= 0, 0, -1).astype(np.int16),
        target_y=np.where(target >= 0, 0, -1).astype(np.int16), direction=z.astype(np.int8),
        apple_context=np.where(et == ZAP_HIT, rng.integers(0, 2, n_events), -1).astype(np.int8),
        spawn_cause=np.where(et == SPAWN, CAUSE_RESET, -1).astype(np.int8),
    )


def write_run(lake: Path, run_id: str, ev: EventBatch, parts: int = 4) -> None:
    LakeWriter(lake, run_id, meta={"kind": "bench", "n_agents": N, "num_envs": 1,
                                   "config": {"ledger_decay": 0.95}}).close()
    for idx in np.array_split(np.arange(len(ev)), parts):
        b = ev.take(idx)
        write_table(lake, "events", run_id, events_table(run_id, b, b.episode * 1000 + b.t))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hits", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    out: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="karmic-ledger-bench-"))
    try:
        lake = tmp / "hits"
        write_run(lake, "h", synthetic(a.hits, 1.0, 1000, 0))
        t0 = time.perf_counter()
        led = rebuild(lake, "h")
        out["rebuild_1m_hits_s"] = time.perf_counter() - t0
        out["rebuild_hits"] = a.hits
        out["rebuild_total_debt"] = led.total_debt
        big = tmp / "big"
        for r in range(10):  # 10 runs x events/10, 10% hits
            write_run(big, f"r{r}", synthetic(a.events // 10, 0.1, 1000, r + 1))
        karmic = str(Path(sys.executable).with_name("karmic"))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = subprocess.run([karmic, "query", "retribution_ratio", "--lake", str(big), "--format", "csv"],
                                 capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if res.returncode:
                raise SystemExit(res.stderr)
        out["retribution_ratio_10m_s"] = min(times)
        out["query_events"] = a.events
        # live ledger + rigging: simulate with and without --matchmaker, interleaved, median ratio
        kw = {"grid_size": 20, "episodes": 10, "policy": "mixed", "seed": 1, "max_steps": 1000, "write": False}
        simulate(tmp / "w", **{**kw, "episodes": 1})
        ratios = []
        for _ in range(5):
            t0 = time.perf_counter()
            simulate(tmp / "x", matchmaker=False, **kw)
            off = time.perf_counter() - t0
            t0 = time.perf_counter()
            simulate(tmp / "y", matchmaker=True, **kw)
            ratios.append((time.perf_counter() - t0) / off - 1)
        out["matchmaker_overhead"] = float(np.median(ratios))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"rebuild:  {out['rebuild_hits']:,} ZAP_HIT events in {out['rebuild_1m_hits_s']:.2f} s (target 3)")
    print(f"query:    retribution_ratio over {out['query_events']:,} events: {out['retribution_ratio_10m_s']:.2f} s end to end (target 3)")
    print(f"simulate: live ledger + rigging add {out['matchmaker_overhead']:+.1%} (target <= 5%)")
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
