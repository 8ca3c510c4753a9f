"""How long `karmic report` takes on a big lake (issue 7 target: 100 runs, 50M events in <= 30 s).

Generates a synthetic lake with pyarrow in a temporary directory (no simulation: random but
well-formed events and episodes in the docs/DESIGN.md layout, the four conditions x two grid sizes x
seeds), runs the `karmic report` command on it in a subprocess (wall time, imports included), and
deletes the lake. Prints one JSON line.

    python benchmarks/report_speed.py                       # 100 runs, 50M events
    python benchmarks/report_speed.py --runs 8 --events 2000000   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CONDITIONS = ("baseline", "tvt", "matchmaker", "full")
EVENT_TYPES = np.array(["SPAWN", "ZAP_FIRED", "ZAP_HIT", "APPLE_EATEN"])
MIX = np.array([0.05, 0.25, 0.10, 0.60])  # share of each event type


def _strings(codes: np.ndarray, names: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names)).cast(
        pa.string()
    )


def write_run(
    lake: Path, i: int, n_events: int, per_episode: int, agents: int, rng: np.random.Generator
) -> int:
    run_id = f"bench-{i:04d}"
    condition = CONDITIONS[i % 4]
    grid = (10, 30)[(i // 4) % 2]
    seed = i // 8
    steps = 500 if grid == 10 else 1000
    n_ep = max(1, n_events // per_episode)
    n = n_ep * per_episode
    episode = np.repeat(np.arange(n_ep, dtype=np.int64), per_episode)
    t = np.sort(rng.integers(0, steps, size=(n_ep, per_episode), dtype=np.int32), axis=1).ravel()
    seq = np.tile(np.arange(per_episode, dtype=np.int32), n_ep)
    etype = rng.choice(4, size=n, p=MIX).astype(np.int32)
    agent = rng.integers(0, agents, size=n, dtype=np.int32)
    is_hit = etype == 2
    target = np.where(
        is_hit, (agent + rng.integers(1, agents, size=n, dtype=np.int32)) % agents, -1
    ).astype(np.int32)
    names = [f"agent_{k}" for k in range(agents)]
    tgt = pa.DictionaryArray.from_arrays(
        pa.array(target, pa.int32(), mask=target < 0), pa.array(names)
    ).cast(pa.string())
    xy = rng.integers(1, grid - 1, size=(4, n), dtype=np.int16)
    events = pa.table(
        {
            "run_id": _strings(np.zeros(n, np.int32), [run_id]),
            "episode": episode,
            "t": t,
            "global_step": episode * steps + t,
            "seq": seq,
            "event_type": _strings(etype, list(EVENT_TYPES)),
            "agent": _strings(agent, names),
            "target": tgt,
            "x": xy[0],
            "y": xy[1],
            "target_x": pa.array(xy[2], mask=~is_hit),
            "target_y": pa.array(xy[3], mask=~is_hit),
            "direction": rng.integers(0, 4, size=n, dtype=np.int8),
            "apple_context": pa.array(rng.random(n) < 0.5, mask=~is_hit),
            "spawn_cause": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, np.int32), mask=etype != 0), pa.array(["reset"])
            ).cast(pa.string()),
        }
    )
    d = lake / "events" / f"run_id={run_id}"
    d.mkdir(parents=True)
    pq.write_table(events, d / "part-0.parquet", row_group_size=1 << 20)

    # episodes: per-agent counts consistent with the events
    k = n_ep * agents
    ep_idx = np.repeat(np.arange(n_ep, dtype=np.int64), agents)
    ag_idx = np.tile(np.arange(agents), n_ep)
    flat = episode * agents + agent

    def count(mask: np.ndarray, by: np.ndarray = flat) -> np.ndarray:
        return np.bincount(by[mask], minlength=k).astype(np.int32)

    apples = count(etype == 3)
    fired = count(etype == 1)
    hits = count(is_hit)
    times_hit = count(is_hit, episode * agents + np.maximum(target, 0))
    episodes = pa.table(
        {
            "run_id": _strings(np.zeros(k, np.int32), [run_id]),
            "episode": ep_idx,
            "global_step": ep_idx * steps,
            "agent": _strings(ag_idx.astype(np.int32), names),
            "steps": np.full(k, steps, np.int32),
            "return": apples - 0.5 * times_hit.astype(np.float64),
            "apples": apples,
            "zaps_fired": fired,
            "zaps_hit": hits,
            "times_hit": times_hit,
            "frozen_steps": np.minimum(times_hit * 25, steps).astype(np.int32),
            "condition": _strings(np.zeros(k, np.int32), [condition]),
            "grid_size": np.full(k, grid, np.int32),
            "seed": np.full(k, seed, np.int64),
        }
    )
    d = lake / "episodes" / f"run_id={run_id}"
    d.mkdir(parents=True)
    pq.write_table(episodes, d / "part-0.parquet")
    d = lake / "runs" / f"run_id={run_id}"
    d.mkdir(parents=True)
    meta = {"run_id": run_id, "condition": condition, "grid_size": grid, "seed": seed}
    (d / "run.json").write_text(
        json.dumps(meta | {"status": "finished", "config": {"grid_size": grid, "decay": 0.95}})
    )
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--events", type=int, default=50_000_000, help="total events in the lake")
    ap.add_argument("--events-per-episode", type=int, default=500)
    ap.add_argument("--agents", type=int, default=5)
    ap.add_argument("--tmp", default=None, help="parent directory for the temporary lake")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="karmic-report-bench-", dir=args.tmp))
    try:
        lake = root / "lake"
        t0 = time.perf_counter()
        total = sum(
            write_run(lake, i, args.events // args.runs, args.events_per_episode, args.agents, rng)
            for i in range(args.runs)
        )
        gen_s = time.perf_counter() - t0
        karmic = Path(sys.executable).with_name("karmic")
        cmd = [str(karmic), "report", "--lake", str(lake), "--out", str(root / "report")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        report_s = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(proc.returncode)
        print(
            json.dumps(
                {
                    "benchmark": "report_speed",
                    "runs": args.runs,
                    "events": total,
                    "generate_s": round(gen_s, 2),
                    "report_s": round(report_s, 2),
                    "target_s": 30,
                    "ok": report_s <= 30,
                }
            )
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
