"""The lake on object storage vs a local directory, same data, same script.

Starts moto's S3 server on loopback (the dev extra), then for a lake of --events events (real env
batches, parts of --batch events over 10 runs) written both to a temp dir and to s3://bench/lake:
1. write throughput (events/s, EventBatch -> zstd Parquet -> rename or one PUT), best of 3;
2. end-to-end `karmic sql "select count(*) from events"` and `karmic query zap_counts`, best of 3;
3. `simulate` writing to s3 vs not writing (ratio, as benchmarks/lake_throughput.py does locally).
Loopback has no network latency: these figures are the cost of the Python filesystem path (s3fs,
DuckDB's fsspec reads), a lower bound for a real object store. With --json the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from lake_throughput import env_events

from pipelines.simulate import simulate
from pipelines.writer import LakeWriter, events_table, write_table


def start_server() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    return server, f"http://127.0.0.1:{port}"


def timed_cli(*args: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([str(Path(sys.executable).with_name("karmic")), *args], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"karmic {' '.join(args)} failed: {r.stderr.strip()}")
    return dt


def _t(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--batch", type=int, default=200_000, help="events per written part")
    p.add_argument("--sim-episodes", type=int, default=10)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    server, endpoint = start_server()
    from pipelines import storage

    storage.filesystem().mkdir("bench")
    batch = env_events(a.batch)
    gs = np.arange(len(batch), dtype=np.int64)
    tmp = Path(tempfile.mkdtemp(prefix="karmic-bench-s3-"))
    lakes = {"local": str(tmp / "lake"), "s3": "s3://bench/lake"}
    out: dict[str, float] = {"events": 0}
    try:
        for kind, lake in lakes.items():  # 1. write throughput
            best = 0.0
            for i in range(3):
                t0 = time.perf_counter()
                write_table(f"{lake}-w", "events", f"w{i}", events_table(f"w{i}", batch, gs))
                best = max(best, len(batch) / (time.perf_counter() - t0))
            out[f"write_events_per_s_{kind}"] = best
        n_parts = max(1, a.events // a.batch)
        for kind, lake in lakes.items():  # 2. the same lake in both places
            for i in range(n_parts):
                rid = f"r{i % 10}"
                if i < 10:
                    LakeWriter(lake, rid, meta={"kind": "bench", "config": {}}).close()
                write_table(lake, "events", rid, events_table(rid, batch, gs + i * a.batch))
            timed_cli("sql", "select 1", "--lake", lake)
            out[f"sql_count_s_{kind}"] = min(
                timed_cli("sql", "select count(*) from events", "--lake", lake) for _ in range(3))
            out[f"query_zap_counts_s_{kind}"] = min(
                timed_cli("query", "zap_counts", "--lake", lake) for _ in range(3))
        out["events"] = n_parts * a.batch
        # 3. simulate writing to s3 vs not writing, interleaved pairs, median ratio
        kw = dict(grid_size=20, episodes=a.sim_episodes, policy="mixed", seed=1, max_steps=1000)  # noqa: C408
        simulate(tmp / "warm", **{**kw, "episodes": 1})
        ratios = []
        for i in range(3):
            off = _t(lambda: simulate(tmp / "x", write=False, **kw))
            on = _t(lambda i=i: simulate(f"s3://bench/sim{i}", write=True, **kw))
            ratios.append(off / on)
        out["simulate_ratio_s3"] = float(np.median(ratios))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        server.stop()
    print(f"write events/s:     local {out['write_events_per_s_local']:,.0f}, s3 {out['write_events_per_s_s3']:,.0f}")
    print(f"sql count over {out['events']:,} events: local {out['sql_count_s_local']:.2f} s, s3 {out['sql_count_s_s3']:.2f} s")
    print(f"query zap_counts:   local {out['query_zap_counts_s_local']:.2f} s, s3 {out['query_zap_counts_s_s3']:.2f} s")
    print(f"simulate --policy mixed writing to s3 runs at {out['simulate_ratio_s3']:.0%} of the speed without writing")
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
