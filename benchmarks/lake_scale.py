"""The lake at scale: the count from the shell, binding and ``retribution_ratio`` at 10M, 100M and
1B events, reading the committed files from the log vs listing (globbing) every part.

One real simulated run (about ``--events-per-run`` events; events, episodes, actions: one part
each) is hard-linked under every run id (a fresh copy of the part every 50,000 links: ext4 allows
65,000 links per file) with its ``run.json`` and its log markers, so the lake grows by run
partitions exactly as a study's does, at no disk cost for the parts. The lake is built once and
extended in place: ``--runs 2000 20000 200000`` measures at 2,000 runs, adds 18,000, measures, and
so on. At each size, in one process, the two layouts are measured in turn (``listing``: the same
lake with ``_log`` renamed away, so readers glob every part as before the log), ``--repeat``
times, and the median is reported:

- ``cli count``: ``python -m karmic.cli sql "select count(*) from events"`` (one process per try,
  start-up included): from the log, the bare count is the log's (karmic.commands._fast);
- ``bind``: in-process, ``karmic.lake.connect(lake, sql=Q)`` plus DuckDB binding ``Q`` (no
  execution), for the count and for ``retribution_ratio`` (which also reads every run.json, for
  the ``runs`` view);
- ``duckdb count``: in-process, executing the count in DuckDB (every part's footer is opened);
- ``retribution_ratio``: ``python -m karmic.cli query retribution_ratio --format csv`` (only
  up to ``--query-max-runs``; the listing layout only up to ``--listing-max-runs``).

``compacted`` is the same lake after ``karmic lake compact`` (pipelines.compact; its time is
reported); the compaction is undone before the lake grows to the next size, so ``log`` is
always measured on the uncompacted lake. ``--layouts`` picks which are measured;
``--pause-cmd`` / ``--resume-cmd`` run around each layout's tries (pausing other work on a shared
machine; the resume runs even if a try fails).

Usage (what docs/lake.md reports)::

    python benchmarks/lake_scale.py --runs 2000 20000 200000 --repeat 3 \\
        --query-max-runs 20000 --listing-max-runs 2000 --keep /tmp/scale

``--keep DIR`` builds into DIR and leaves it there (the table is printed before the lake is
deleted either way: removing 200,000 run folders took longer than building them on the development
machine). Needs about 25 KB of disk and 8 inodes per run (directories, run.json, markers):
200,000 runs (1B events) took about 5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.lake_log import TABLES, base_run  # noqa: E402
from pipelines import commits  # noqa: E402

LINKS_PER_COPY = 50_000
COUNT_SQL = "select count(*) from events"


def extend(lake: Path, start: int, stop: int, parts: dict[str, Path], meta: dict) -> None:
    """Add runs ``start .. stop - 1`` to ``lake``: hard-linked parts, run.json, log markers."""
    recs = {t: commits.record_from_file("x", p) for t, p in parts.items()}
    copies: dict[tuple[str, int], Path] = {}
    for t in parts:
        commits.log_dir(lake, t).mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        rid = f"r{i:07d}"
        for t, p in parts.items():
            src = copies.get((t, i // LINKS_PER_COPY))
            if src is None:
                src = lake / ".base" / t / f"{i // LINKS_PER_COPY}-{p.name}"
                src.parent.mkdir(parents=True, exist_ok=True)
                if not src.exists():
                    shutil.copyfile(p, src)
                copies[(t, i // LINKS_PER_COPY)] = src
            d = lake / t / f"run_id={rid}"
            d.mkdir(parents=True, exist_ok=True)
            if not (d / p.name).exists():
                os.link(src, d / p.name)
            c = recs[t]
            (commits.log_dir(lake, t) / commits.Commit(rid, c.part, c.rows, c.lo, c.hi, c.schema).name).touch()
        d = lake / "runs" / f"run_id={rid}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "run.json").write_text(json.dumps({**meta, "run_id": rid}))
    for t in parts:
        commits._touch(commits.log_dir(lake, t) / commits.READY)


def _cli(*args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "karmic.cli", *args], check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def _bind(lake: Path, sql: str) -> float:
    from karmic.lake import connect

    t = time.perf_counter()
    con = connect(lake, sql=sql)
    _ = con.sql(sql).columns  # DuckDB binds the statement; nothing is executed
    return time.perf_counter() - t


def _duckdb_count(lake: Path) -> tuple[float, int]:
    from karmic.lake import connect

    con = connect(lake, sql=COUNT_SQL)
    t = time.perf_counter()
    n = con.sql(COUNT_SQL).fetchall()[0][0]
    return time.perf_counter() - t, n


def compact_lake(lake: Path) -> float:
    """``karmic lake compact`` on the benchmark lake (in-process); its wall time."""
    from pipelines.compact import compact

    t = time.perf_counter()
    compact(lake)
    return time.perf_counter() - t


def uncompact(lake: Path) -> None:
    """Back to the lake before its compaction (benchmark lakes only): covered markers back into
    the listing, the compactions' records, markers and files removed."""
    for t in (*TABLES, "runs"):
        log = commits.log_dir(lake, t)
        cov = log / commits.COVERED
        if cov.is_dir():
            for d in cov.iterdir():
                for m in d.iterdir():
                    os.rename(m, log / m.name)
            shutil.rmtree(cov)
        shutil.rmtree(log / commits.COMPACTED, ignore_errors=True)
        shutil.rmtree(lake / t / commits.COMPACTED, ignore_errors=True)


def _hook(cmd: str | None) -> None:
    if cmd:
        subprocess.run(cmd, shell=True, check=False, capture_output=True)


def measure(lake: Path, layout: str, with_query: bool) -> dict:
    from karmic.lake import query_sql

    hidden = lake / "_log.hidden"
    if layout == "listing":
        (lake / "_log").rename(hidden)
    try:
        dc, n = _duckdb_count(lake)
        return {
            "cli_count_s": _cli("sql", COUNT_SQL, "--lake", str(lake), "--format", "csv"),
            "bind_count_s": _bind(lake, COUNT_SQL),
            "bind_retribution_s": _bind(lake, query_sql("retribution_ratio")),
            "duckdb_count_s": dc,
            "count": n,
            "cli_retribution_ratio_s": _cli("query", "retribution_ratio", "--lake", str(lake), "--format", "csv")
            if with_query else None,
        }
    finally:
        if layout == "listing":
            hidden.rename(lake / "_log")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--events-per-run", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--query-max-runs", type=int, default=20000)
    ap.add_argument("--listing-max-runs", type=int, default=20000)
    ap.add_argument("--tmp", default=None, help="where to build (default: the system's temporary folder)")
    ap.add_argument("--keep", default=None, help="build into this folder and keep it")
    ap.add_argument("--layouts", nargs="+", default=["listing", "log", "compacted"],
                    choices=["listing", "log", "compacted"])
    ap.add_argument("--pause-cmd", default=None, help="shell command run before each layout's tries "
                    "(e.g. pausing other work on a shared machine)")
    ap.add_argument("--resume-cmd", default=None, help="shell command run after them, even on failure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.layouts = [lay for lay in ("listing", "log", "compacted") if lay in args.layouts]
    if sorted(args.runs) != args.runs or min(args.runs) < 1 or args.repeat < 1:
        print("error: --runs must be increasing and >= 1, --repeat >= 1", file=sys.stderr)
        sys.exit(2)
    out: dict = {"rows": [], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "loadavg_start": os.getloadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="karmic-scale-", dir=args.tmp))
    try:
        parts, meta, n = base_run(tmp, args.events_per_run)
        out["events_per_run"] = n
        out["python_startup_s"] = statistics.median(
            _time_cmd([sys.executable, "-c", "pass"]) for _ in range(args.repeat))
        lake = Path(args.keep) if args.keep else tmp / "lake"
        built = 0
        for runs in args.runs:
            t = time.perf_counter()
            extend(lake, built, runs, parts, meta)
            build_s = time.perf_counter() - t
            built = runs
            layouts = [lay for lay in args.layouts if lay != "listing" or runs <= args.listing_max_runs]
            samples: dict[str, list[dict]] = {lay: [] for lay in layouts}
            compact_s = None
            for lay in layouts:
                if lay == "compacted":
                    compact_s = compact_lake(lake)
                _hook(args.pause_cmd)  # one layout's tries with the machine's other work paused
                try:
                    for _ in range(args.repeat):
                        samples[lay].append(measure(lake, lay, runs <= args.query_max_runs))
                finally:
                    _hook(args.resume_cmd)
            if compact_s is not None:
                uncompact(lake)  # the next size is built and measured from the uncompacted lake
            for lay in layouts:
                keys = samples[lay][0].keys()
                med = {k: (None if samples[lay][0][k] is None else statistics.median(s[k] for s in samples[lay]))
                       for k in keys}
                row = {"runs": runs, "events": runs * n, "files": runs * len(TABLES), "layout": lay,
                       "build_s": build_s, "loadavg": os.getloadavg()[0], **med,
                       "compact_s": compact_s if lay == "compacted" else None}
                assert med["count"] == runs * n, (med["count"], runs * n)
                out["rows"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        report(out, args)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def report(out: dict, args: argparse.Namespace) -> None:
    print(f"{out['date']}; events per run: {out['events_per_run']}; `python -c pass`: "
          f"{out['python_startup_s']:.3f} s; load average at start: {out['loadavg_start'][0]:.1f}; "
          f"medians of {args.repeat}")
    print("| events | runs | parts | layout | `karmic sql` count (shell) | bind: count | bind: retribution_ratio "
          "| DuckDB count (in-process) | `karmic query retribution_ratio` (shell) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        rr = f"{r['cli_retribution_ratio_s']:.2f} s" if r["cli_retribution_ratio_s"] is not None else "not run"
        print(f"| {r['events'] / 1e6:,.0f}M | {r['runs']:,} | {r['files']:,} | {r['layout']} | {r['cli_count_s']:.2f} s | "
              f"{r['bind_count_s']:.2f} s | {r['bind_retribution_s']:.2f} s | {r['duckdb_count_s']:.2f} s | {rr} |")
    for r in out["rows"]:
        if r.get("compact_s") is not None:
            print(f"`karmic lake compact` at {r['runs']:,} runs: {r['compact_s']:.1f} s (load average "
                  f"{r['loadavg']:.1f} after the tries)")
    if args.json:
        print(json.dumps(out))


def _time_cmd(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
