"""Lake throughput: writing events, querying a 10M-event lake from the shell, simulate overhead.

1. events/s from the environment's columnar batches (EventBatch -> Arrow -> zstd Parquet, atomic);
2. end-to-end wall time of `karmic sql "select count(*) from events"` and `karmic query
   zap_counts` over a synthetic lake of --events events (default 10M; built from real env
   batches, written to a temp dir that is deleted afterwards);
3. `simulate` with event writing against the same run without writing (ratio).
With --json the last line is a JSON object of the figures.
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

from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv
from karmic.events import EventBatch
from pipelines.simulate import simulate
from pipelines.writer import LakeWriter, events_table, write_table


def env_events(n_target: int) -> EventBatch:
    """Real events from the batched env (random actions) until n_target rows."""
    env = HarvestVecEnv(make_config(grid_size=20, max_steps=10**9), num_envs=256)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    parts, n = [], 0
    while n < n_target:
        ev = env.step(rng.integers(0, 8, (256, 5)))[3]
        parts.append(ev)
        n += len(ev)
    return EventBatch.concat(parts).take(np.arange(n_target))


def timed_cli(*args: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([str(Path(sys.executable).with_name("karmic")), *args], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"karmic {' '.join(args)} failed: {r.stderr.strip()}")
    return dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=1_000_000, help="events per written part")
    p.add_argument("--sim-episodes", type=int, default=20)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    out: dict[str, float] = {}
    batch = env_events(a.batch)
    gs = np.arange(len(batch), dtype=np.int64)
    tmp = Path(tempfile.mkdtemp(prefix="karmic-bench-"))
    try:
        lake = tmp / "lake"
        # 1. write throughput (best of 3)
        best = 0.0
        for i in range(3):
            t0 = time.perf_counter()
            write_table(lake, "events", f"w{i}", events_table(f"w{i}", batch, gs))
            best = max(best, len(batch) / (time.perf_counter() - t0))
        out["write_events_per_s"] = best
        shutil.rmtree(lake)
        # 2. a lake of --events events, in parts of --batch, over 10 runs
        n_parts = max(1, a.events // a.batch)
        for i in range(n_parts):
            rid = f"r{i % 10}"
            if not (lake / "runs" / f"run_id={rid}").exists():
                LakeWriter(lake, rid, meta={"kind": "bench", "config": {}}).close()
            write_table(lake, "events", rid, events_table(rid, batch, gs + i * a.batch))
        out["lake_events"] = n_parts * a.batch
        timed_cli("sql", "select 1", "--lake", str(lake))  # warm the OS file cache
        out["sql_count_s"] = min(timed_cli("sql", "select count(*) from events", "--lake", str(lake)) for _ in range(3))
        out["query_zap_counts_s"] = min(timed_cli("query", "zap_counts", "--lake", str(lake)) for _ in range(3))
        # 3. simulate with and without writing (same seed, same work), best of 3 each
        kw = dict(grid_size=20, episodes=a.sim_episodes, policy="random", seed=1, max_steps=1000)  # noqa: C408
        simulate(tmp / "warm", **{**kw, "episodes": 1})
        # interleaved pairs, median ratio: the machine is shared, so drift hits both arms alike
        for policy in ("random", "mixed"):
            kw["policy"] = policy
            ratios = []
            for i in range(5):
                off = _t(lambda: simulate(tmp / "x", write=False, **kw))
                on = _t(lambda d=tmp / f"s{policy}{i}": simulate(d, write=True, **kw))
                ratios.append(off / on)
            out[f"simulate_ratio_{policy}"] = float(np.median(ratios))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"write:    {out['write_events_per_s']:,.0f} events/s (target 1,000,000)")
    print(f"sql:      select count(*) over {out['lake_events']:,} events: {out['sql_count_s']:.2f} s (target 1.5)")
    print(f"query:    zap_counts over {out['lake_events']:,} events: {out['query_zap_counts_s']:.2f} s (target 3)")
    for policy in ("random", "mixed"):
        print(f"simulate: --policy {policy} with writing runs at {out[f'simulate_ratio_{policy}']:.0%} "
              "of the speed without (target 80%)")
    if a.json:
        print(json.dumps(out))


def _t(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
