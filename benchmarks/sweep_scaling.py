"""Sweep scaling on this machine: the same small sweep with 1 and 2 workers (issue 8).

    python benchmarks/sweep_scaling.py [--backend local|ray] [--workers 1,2] [--modes baseline,matchmaker]
        [--seeds 1,2] [--grid-size 10] [--total-steps 16000] [--repeats 1] [--no-profile] [--json]

For each worker count, a fresh temporary lake and the same sweep (``pipelines.sweep.run_sweep``,
the engine of ``karmic sweep``; default 2 conditions x 2 seeds at 10x10, default training config,
one torch thread per task). Wall time counts everything a user waits for: starting the worker
processes (local) or tasks (Ray), imports, training, the lake writes, the manifest. Reported:
tasks/minute, env-steps/s summed over the sweep, speedup over 1 worker and parallel efficiency
(speedup / workers). With ``--backend ray`` a local Ray cluster (``num_cpus`` = the largest
worker count) is started once, its start-up time is reported apart, and ``--workers`` bounds the
tasks in flight.

The lake-traffic profile (on by default) trains one task in this process with the file calls
counted: atomic writes (``os.replace``, one PUT each on object storage) and their bytes, deletes,
directory listings (``Path.glob`` / ``iterdir``, one LIST each) and Parquet reads (one GET each),
per PPO update; plus events written per env step. ``docs/scaling.md`` projects a 100-node
cluster from these figures.

``--json`` prints, as its last line, ``{"backend", "cores", "sweep", "runs": [{"workers", "wall_s",
"tasks_per_min", "env_steps_per_s", "speedup", "efficiency", "task_s"}], "profile": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines import sweep as sw  # noqa: E402


def _train(args) -> dict:
    return {"total_steps": args.total_steps, "num_envs": args.num_envs, "checkpoint_every": 10,
            "env_overrides": {}}


def run_once(args, workers: int, backend_name: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="karmic-sweep-bench-", dir=args.tmp) as tmp:
        lake = str(Path(tmp) / "lake")
        tasks = sw.plan(args.modes, [args.grid_size], args.seeds)
        manifest = sw.new_manifest(f"bench-w{workers}", tasks, _train(args), {})
        backend = sw.make_backend(backend_name, workers=workers)
        t0 = time.perf_counter()
        manifest = sw.run_sweep(manifest, lake, backend, retries=0)
        wall = time.perf_counter() - t0
        failed = [t["key"] for t in manifest["tasks"] if t["status"] != "completed"]
        if failed:
            raise SystemExit(f"error: tasks failed: {failed}: {[t.get('error') for t in manifest['tasks']]}")
        steps = sum(int(t["global_step"]) for t in manifest["tasks"])
        return {
            "workers": workers,
            "wall_s": round(wall, 2),
            "tasks": len(tasks),
            "tasks_per_min": round(len(tasks) / wall * 60, 2),
            "env_steps": steps,
            "env_steps_per_s": round(steps / wall, 1),
            "task_s": [round(float(t["seconds"]), 2) for t in manifest["tasks"]],
        }


class _Counter:
    """Counts the lake's file operations in this process (monkeypatched, restored on exit)."""

    def __init__(self) -> None:
        self.c = {"put": 0, "put_bytes": 0, "delete": 0, "list": 0, "get": 0}

    def __enter__(self):
        import pyarrow.parquet as pq

        self.saved = (os.replace, pathlib.Path.unlink, pathlib.Path.glob, pathlib.Path.iterdir, pq.read_table)
        replace, unlink, glob, iterdir, read_table = self.saved
        c = self.c

        def _replace(src, dst, *a, **k):
            c["put"] += 1
            c["put_bytes"] += os.path.getsize(src)
            return replace(src, dst, *a, **k)

        def _unlink(self_, *a, **k):
            c["delete"] += 1
            return unlink(self_, *a, **k)

        def _glob(self_, *a, **k):
            c["list"] += 1
            return glob(self_, *a, **k)

        def _iterdir(self_, *a, **k):
            c["list"] += 1
            return iterdir(self_, *a, **k)

        def _read_table(*a, **k):
            c["get"] += 1
            return read_table(*a, **k)

        os.replace, pathlib.Path.unlink, pathlib.Path.glob, pathlib.Path.iterdir = _replace, _unlink, _glob, _iterdir
        pq.read_table = _read_table
        return self

    def __exit__(self, *exc):
        import pyarrow.parquet as pq

        os.replace, pathlib.Path.unlink, pathlib.Path.glob, pathlib.Path.iterdir, pq.read_table = self.saved


def profile(args) -> dict:
    """One task in this process, one torch thread, with its lake traffic counted."""
    import duckdb
    import pyarrow.parquet as pq

    from karmic.training.ppo import TrainConfig, Trainer

    sw._limit_threads()
    with tempfile.TemporaryDirectory(prefix="karmic-sweep-profile-", dir=args.tmp) as tmp:
        cfg = TrainConfig.from_dict({**_train(args), "mode": args.modes[0], "grid_size": args.grid_size,
                                     "seed": args.seeds[0], "threads": 1, "run_id": "profile"})
        trainer = Trainer(cfg, tmp)
        with _Counter() as counter:
            t0 = time.perf_counter()
            info = trainer.run()
            wall = time.perf_counter() - t0
        c = counter.c
        n = trainer.n_updates
        events, hits = duckdb.sql(
            f"select count(*), count(*) filter (where event_type = 'ZAP_HIT') "
            f"from read_parquet('{tmp}/events/*/*.parquet')").fetchall()[0]
        files = {d.name: sum(1 for _ in (Path(tmp) / d.name).rglob("*") if _.is_file())
                 for d in Path(tmp).iterdir() if d.is_dir()}
        ev_files = list(Path(tmp).glob("events/*/*.parquet"))
        ev_bytes = sum(f.stat().st_size for f in ev_files)
        args._events = pq.read_table(ev_files[0]) if ev_files else None
        return {
            "mode": cfg.mode, "grid_size": cfg.grid_size, "num_envs": cfg.num_envs, "updates": n,
            "env_steps": int(info["global_step"]), "wall_s": round(wall, 2),
            "env_steps_per_s": round(info["global_step"] / wall, 1),
            "updates_per_s": round(n / wall, 3),
            "puts_per_update": round(c["put"] / n, 2),
            "put_mb_per_update": round(c["put_bytes"] / n / 1e6, 3),
            "deletes_per_update": round(c["delete"] / n, 2),
            "lists_per_update": round(c["list"] / n, 2),
            "gets_per_update": round(c["get"] / n, 2),
            "events": int(events),
            "events_per_env_step": round(events / info["global_step"], 4),
            "hits_per_env_step": round(hits / info["global_step"], 4),
            "event_bytes": round(ev_bytes / max(events, 1), 2),
            "events_per_part": round(events / max(len(ev_files), 1)),
            "files_left": files,
        }


def files_probe(args, total: int = 1_000_000, splits=(10, 100, 1000, 5000)) -> dict:
    """The same ``total`` events (copies of the profiled run's) in k part files of one run:
    ``karmic.lake.connect`` + a group-by over ``events``, best of 3 per k. Measures what a
    query pays per file on this machine's disk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from karmic.lake import connect, fetch

    src = args._events
    reps = -(-total // src.num_rows)
    big = pa.concat_tables([src] * reps).slice(0, total)
    out = {}
    for k in splits:
        with tempfile.TemporaryDirectory(prefix="karmic-files-probe-", dir=args.tmp) as tmp:
            d = Path(tmp) / "events" / "run_id=probe"
            d.mkdir(parents=True)
            step = -(-total // k)
            for i in range(k):
                pq.write_table(big.slice(i * step, step), d / f"part-{i:06d}.parquet", compression="zstd")
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                fetch(connect(tmp), "select event_type, count(*) from events group by 1")
                best = min(best, time.perf_counter() - t0)
            out[k] = round(best, 3)
            print(f"files probe: {total} events in {k} files: {best:.3f} s", file=sys.stderr)
    ks = sorted(out)
    per_file_ms = (out[ks[-1]] - out[ks[0]]) / (ks[-1] - ks[0]) * 1000
    return {"events": total, "seconds_by_files": out, "per_file_ms": round(per_file_ms, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="local", choices=["local", "ray"])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--modes", default="baseline,matchmaker")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--grid-size", type=int, default=10)
    ap.add_argument("--total-steps", type=int, default=16_000, help="env steps per task")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="alternate the worker counts this many times")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-only", action="store_true", help="only the one-task profile and the files probe")
    ap.add_argument("--tmp", default=None, help="parent directory of the temporary lakes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.modes = args.modes.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    counts = [int(w) for w in args.workers.split(",")]

    out: dict = {"backend": args.backend, "cores": sw.available_cores(),
                 "sweep": {"modes": args.modes, "grid_size": args.grid_size, "seeds": args.seeds,
                           "total_steps": args.total_steps, "num_envs": args.num_envs}}
    if args.backend == "ray":
        import logging

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        out["ray_init_s"] = round(time.perf_counter() - t0, 2)
        print(f"ray.init (local cluster, {max(counts)} CPUs): {out['ray_init_s']} s", file=sys.stderr)
    runs = []
    try:
        for rep in range(0 if args.profile_only else args.repeats):
            for w in counts:
                r = run_once(args, w, args.backend)
                r["repeat"] = rep
                runs.append(r)
                print(f"{args.backend} workers={w}: {r['wall_s']} s, {r['tasks_per_min']} tasks/min, "
                      f"{r['env_steps_per_s']} env-steps/s (tasks {r['task_s']} s)", file=sys.stderr)
    finally:
        if args.backend == "ray":
            import ray

            ray.shutdown()
    # speedup against the best 1-worker time (the machine is shared: best = least disturbed)
    if runs:
        best = {w: min(r["wall_s"] for r in runs if r["workers"] == w) for w in counts}
        base = best[min(counts)] * min(counts)
        for r in runs:
            r["speedup"] = round(base / r["wall_s"], 3)
            r["efficiency"] = round(r["speedup"] / r["workers"], 3)
    out["runs"] = runs
    print(f"\nsweep {len(args.modes)} modes x 1 grid ({args.grid_size}) x {len(args.seeds)} seeds, "
          f"{args.total_steps} env steps per task, backend {args.backend}, {out['cores']} cores")
    print(f"{'workers':>7} {'wall s':>8} {'tasks/min':>10} {'env-steps/s':>12} {'speedup':>8} {'efficiency':>10}")
    for r in runs:
        print(f"{r['workers']:>7} {r['wall_s']:>8} {r['tasks_per_min']:>10} {r['env_steps_per_s']:>12} "
              f"{r['speedup']:>8} {r['efficiency']:>10}")
    if not args.no_profile:
        p = profile(args)
        out["profile"] = p
        print(f"\none task in-process ({p['mode']}, {p['grid_size']}x{p['grid_size']}, {p['num_envs']} envs, 1 thread): "
              f"{p['env_steps_per_s']} env-steps/s, {p['updates_per_s']} updates/s")
        print(f"lake traffic per update: {p['puts_per_update']} atomic writes (PUTs), {p['put_mb_per_update']} MB, "
              f"{p['deletes_per_update']} deletes, {p['lists_per_update']} listings, {p['gets_per_update']} Parquet reads")
        print(f"events per env step: {p['events_per_env_step']} ({p['hits_per_env_step']} ZAP_HIT), {p['event_bytes']} bytes per event in Parquet, "
              f"{p['events_per_part']} events per part file; files left per run: {p['files_left']}")
        out["files_probe"] = fp = files_probe(args)
        print(f"query over {fp['events']} events by number of files: {fp['seconds_by_files']} s "
              f"(+{fp['per_file_ms']} ms per file)")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
