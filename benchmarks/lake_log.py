"""Binding the lake from its commit log vs from every Parquet footer, at 10M / 100M events.

Builds a lake of ``--runs`` runs by hard-linking the parts of one real simulated run (events,
episodes, actions: one part each, about ``--events-per-run`` events) under every run id, twice:
``glob`` (no commit log: the reader globs every part and reads every footer to bind, the lake
before issue 34) and ``log`` (the same parts with their ``_log`` markers, pipelines.commits).
For each it times, from the shell (start-up included, best of ``--repeat``):

- ``karmic sql "select count(*) from events"`` and ``karmic query retribution_ratio``;
- in-process: ``karmic.lake.connect`` (binding the views) and the count alone;
- ``karmic --help`` (the CLI's start-up alone, the floor of every command).

``--delta`` also measures Delta Lake through the ``deltalake`` package (if importable): the
latency of one append commit of a run's events into a shared table as the log grows, and how
long reading the committed file list takes, next to the marker log's. Hard links cost no disk,
so 100M events (20,000 runs) fit a small machine; the directories and markers do cost inodes.
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

from pipelines import commits

TABLES = ("events", "episodes", "actions")


def base_run(tmp: Path, events_per_run: int) -> tuple[dict[str, Path], dict, int]:
    """One simulated run with at least ``events_per_run`` events, one part per table."""
    from pipelines.simulate import simulate

    lake = tmp / "base"
    episodes = 1
    while True:
        shutil.rmtree(lake, ignore_errors=True)
        simulate(lake, episodes=episodes, grid_size=10, max_steps=1000, seed=1, run_id="base",
                 flush_episodes=10**6)
        import pyarrow.parquet as pq

        part = next((lake / "events" / "run_id=base").glob("*.parquet"))
        n = pq.read_metadata(part).num_rows
        if n >= events_per_run:
            break
        episodes = max(episodes + 1, int(episodes * events_per_run / max(n, 1)) + 1)
    parts = {t: next((lake / t / "run_id=base").glob("*.parquet")) for t in TABLES}
    meta = json.loads((lake / "runs" / "run_id=base" / "run.json").read_text())
    return parts, meta, n


def build(lake: Path, runs: int, parts: dict[str, Path], meta: dict, layout: str) -> None:
    recs = {t: commits.record_from_file("x", p) for t, p in parts.items()}
    for i in range(runs):
        rid = f"r{i:06d}"
        for t, p in parts.items():
            d = lake / t / f"run_id={rid}"
            d.mkdir(parents=True)
            os.link(p, d / p.name)
        d = lake / "runs" / f"run_id={rid}"
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({**meta, "run_id": rid}))
        if layout == "log":
            for t in parts:
                c = recs[t]
                commits._touch(commits.log_dir(lake, t) / commits.Commit(rid, c.part, c.rows, c.lo, c.hi, c.schema).name)
    if layout == "log":
        for t in parts:
            commits._touch(commits.log_dir(lake, t) / commits.READY)


def cli(*args: str, repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "karmic.cli", *args], check=True, capture_output=True, env=env)
        best = min(best, time.perf_counter() - t)
    return best


def in_process(lake: Path, repeat: int) -> tuple[float, float]:
    from karmic.lake import connect

    bind = count = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        con = connect(lake)
        t1 = time.perf_counter()
        con.sql("select count(*) from events").fetchall()
        t2 = time.perf_counter()
        bind, count = min(bind, t1 - t), min(count, t2 - t1)
    return bind, count


def delta(tmp: Path, parts: dict[str, Path], appends: int) -> dict:
    """Delta Lake: per-append commit latency into one shared table, and the file list's read."""
    import deltalake
    import pyarrow as pa
    import pyarrow.parquet as pq

    ev = pq.read_table(parts["events"])
    path = tmp / "delta_events"
    lat = []
    for i in range(appends):
        t = ev.set_column(0, "run_id", pa.array([f"r{i}"] * ev.num_rows, pa.string()))
        t0 = time.perf_counter()
        deltalake.write_deltalake(str(path), t, mode="append", partition_by=["run_id"])
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    files = deltalake.DeltaTable(str(path)).file_uris()
    read_log = time.perf_counter() - t0
    dt = deltalake.DeltaTable(str(path))
    dt.create_checkpoint()
    t0 = time.perf_counter()
    files = deltalake.DeltaTable(str(path)).file_uris()
    read_ckpt = time.perf_counter() - t0
    # the same appends as parts + markers
    lake = tmp / "marker_events"
    from pipelines.writer import write_table_once

    mlat = []
    for i in range(appends):
        t0 = time.perf_counter()
        write_table_once(lake, "events", f"r{i}", ev, "round", 0)
        mlat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    n = len(commits.committed(lake, "events"))
    read_markers = time.perf_counter() - t0
    k = max(1, appends // 10)
    return {"appends": appends, "delta_commit_first_s": sum(lat[:k]) / k, "delta_commit_last_s": sum(lat[-k:]) / k,
            "delta_files": len(files), "delta_read_log_s": read_log, "delta_read_after_checkpoint_s": read_ckpt,
            "marker_commit_first_s": sum(mlat[:k]) / k, "marker_commit_last_s": sum(mlat[-k:]) / k,
            "marker_files": n, "marker_read_s": read_markers, "deltalake": deltalake.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--events-per-run", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--delta", type=int, default=0, help="appends for the Delta Lake comparison (0: skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if min(args.runs) < 1 or args.repeat < 1 or args.events_per_run < 1:
        print("error: --runs, --repeat and --events-per-run must be >= 1", file=sys.stderr)
        sys.exit(2)
    out: dict = {"rows": []}
    with tempfile.TemporaryDirectory(prefix="karmic-lakelog-") as d:
        tmp = Path(d)
        parts, meta, n = base_run(tmp, args.events_per_run)
        out["events_per_run"] = n
        out["cli_startup_s"] = cli("--help", repeat=args.repeat)
        for runs in args.runs:
            for layout in ("glob", "log"):
                lake = tmp / f"{layout}-{runs}"
                t = time.perf_counter()
                build(lake, runs, parts, meta, layout)
                built = time.perf_counter() - t
                bind, count = in_process(lake, args.repeat)
                row = {"runs": runs, "events": runs * n, "files": runs * len(TABLES), "layout": layout,
                       "build_s": built, "bind_s": bind, "count_s": count,
                       "cli_count_s": cli("sql", "select count(*) from events", "--lake", str(lake), repeat=args.repeat),
                       "cli_retribution_ratio_s": cli("query", "retribution_ratio", "--lake", str(lake),
                                                      repeat=args.repeat)}
                out["rows"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                shutil.rmtree(lake)
        if args.delta:
            try:
                out["delta"] = delta(tmp, parts, args.delta)
            except ImportError:
                out["delta"] = "deltalake not installed: skipped"
    print(f"events per run: {out['events_per_run']}; `karmic --help` (start-up alone): {out['cli_startup_s']:.2f} s")
    print("| events | runs | files | layout | bind (in-process) | count (in-process) | `karmic sql` count | `karmic query retribution_ratio` |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        print(f"| {r['events'] / 1e6:.0f}M | {r['runs']:,} | {r['files']:,} | {r['layout']} | {r['bind_s']:.2f} s | "
              f"{r['count_s']:.2f} s | {r['cli_count_s']:.2f} s | {r['cli_retribution_ratio_s']:.2f} s |")
    if "delta" in out:
        print(f"delta: {out['delta']}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
