"""``baseline``'s exact speed-ups, before/after in one script, in alternating processes: the
allocator's thresholds (``karmic.training.device.tune_allocator``) on (after) and off (before);
``--change spin``: instead, OpenMP's spin count (``GOMP_SPINCOUNT=--after-spin``, default 1,000,
against libgomp's default), measured and not taken (docs/tvt-speed.md).

Both settings are process-wide (glibc's malloc; libgomp reads its spin count when torch loads it),
so each side runs in its own fresh process (``KARMIC_MALLOC_TUNING=0`` for the code of before),
the two sides alternated ``--pairs`` times so both meet the same drift of a shared machine's load. A process trains ``baseline`` (hidden
256, 16 envs, the default config), warms up one update, then times ``--updates`` updates: wall
and its own CPU seconds per update, page faults and system time. Prints each process's line,
then per grid the median over the pairs of before / after (s per update; > 1: faster now) by
wall and by CPU time, and each side's env-steps/s (the median process). ``--part learn``: the
learner alone (``Trainer.learn`` on one shard, ``--updates`` times; medians), no env-steps/s.

    python benchmarks/baseline_exact.py [--grids 10,30] [--pairs 4] [--updates 8] \\
        [--precision bf16] [--threads 2] [--change alloc|spin] [--after-spin N] [--part update|learn] [--json]

``--child`` (internal): one process's measurement, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def child(args) -> dict:
    import resource
    import tempfile
    import time

    import numpy as np
    import torch

    from karmic.training.device import tune_allocator
    from karmic.training.ppo import TrainConfig, Trainer
    from pipelines.trajectories import read_shard, write_shard

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as lake:
        cfg = TrainConfig(mode="baseline", grid_size=args.grid, seed=0, num_envs=args.num_envs,
                          total_steps=10**9, checkpoint_every=10**6, threads=args.threads,
                          precision=args.precision)
        marks: list[tuple[float, float, int]] = []
        tr = Trainer(cfg, lake, on_update=lambda i: marks.append(
            (time.perf_counter(), time.process_time(), i["global_step"])))
        out = {"grid_size": args.grid, "part": args.part, "tuned": tune_allocator(),
               "omp_spin": os.environ.get("GOMP_SPINCOUNT"), "precision": cfg.precision,
               "threads": args.threads, "num_envs": args.num_envs}
        if args.part == "learn":  # the learner alone, on one shard, ``--updates`` times
            tr.run(stop_after=1, at_boundary=False)
            tr.rollout()
            shard = read_shard(write_shard(tr.lake, tr.make_shard()))
            rew = np.asarray(shard.reward, np.float32)
            tr.learn(shard, rew)
            wall, cpu = [], []
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(args.updates):
                w, c = time.perf_counter(), time.process_time()
                tr.learn(shard, rew)
                wall.append(time.perf_counter() - w)
                cpu.append(time.process_time() - c)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            return {**out, "updates": args.updates, "s_per_update": round(float(np.median(wall)), 4),
                    "cpu_s_per_update": round(float(np.median(cpu)), 4), "env_steps_per_s": None,
                    "minor_faults": r1.ru_minflt - r0.ru_minflt, "sys_s": round(r1.ru_stime - r0.ru_stime, 3)}
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        tr.run(stop_after=1 + args.updates, at_boundary=False)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        (w0, c0, s0), (w1, c1, s1) = marks[0], marks[-1]
        n = len(marks) - 1
        return {**out, "updates": n,
                "s_per_update": round((w1 - w0) / n, 4), "cpu_s_per_update": round((c1 - c0) / n, 4),
                "env_steps_per_s": round((s1 - s0) / (w1 - w0), 1),
                # over the whole process (warm-up included): what the thresholds take away
                "minor_faults": r1.ru_minflt - r0.ru_minflt,
                "sys_s": round(r1.ru_stime - r0.ru_stime, 3)}


def run_child(args, grid: int, tuned: bool) -> dict:
    on = args.change.split(",") if tuned else []
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env["KARMIC_MALLOC_TUNING"] = "1" if "alloc" in on else "0"
    if "spin" in on:
        env["GOMP_SPINCOUNT"] = str(args.after_spin)
    cmd = [sys.executable, __file__, "--child", "--grid", str(grid), "--updates", str(args.updates), "--part", args.part,
           "--precision", args.precision, "--threads", str(args.threads), "--num-envs", str(args.num_envs)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="10,30")
    ap.add_argument("--grid", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--updates", type=int, default=8)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--after-spin", type=int, default=1000, help="the after side's GOMP_SPINCOUNT (--change spin)")
    ap.add_argument("--change", default="alloc", help="what the after side turns on: alloc, spin or both")
    ap.add_argument("--part", default="update", choices=("update", "learn"),
                    help="update: whole updates of a run; learn: the learner alone on one shard (medians)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    say = sys.stderr if args.json else sys.stdout
    records, summary = [], []
    for g in [int(x) for x in args.grids.split(",")]:
        pairs = []
        for p in range(args.pairs):
            # alternate which side goes first: neither always meets the other's leftovers
            sides = (False, True) if p % 2 == 0 else (True, False)
            got = {}
            for tuned in sides:
                r = run_child(args, g, tuned)
                r["pair"] = p
                records.append(r)
                got[tuned] = r
                print(f"grid {g:>2} pair {p} {'after ' if tuned else 'before'} {r['env_steps_per_s'] or 0:>7.0f} env-steps/s "
                      f"{r['s_per_update']:.3f} s/update (CPU {r['cpu_s_per_update']:.3f})  "
                      f"faults {r['minor_faults']:>7}  sys {r['sys_s']:.2f} s", file=say, flush=True)
            pairs.append(got)
        s = {"grid_size": g, "pairs": args.pairs,
             "x_wall_median": round(statistics.median(
                 [q[False]["s_per_update"] / q[True]["s_per_update"] for q in pairs]), 3),
             "x_cpu_median": round(statistics.median(
                 [q[False]["cpu_s_per_update"] / q[True]["cpu_s_per_update"] for q in pairs]), 3),
             "before_env_steps_per_s": statistics.median(q[False]["env_steps_per_s"] or 0 for q in pairs),
             "after_env_steps_per_s": statistics.median(q[True]["env_steps_per_s"] or 0 for q in pairs)}
        summary.append(s)
        print(f"grid {g:>2}: after / before x{s['x_wall_median']:.3f} wall, x{s['x_cpu_median']:.3f} CPU "
              f"(median of {args.pairs} pairs); env-steps/s before {s['before_env_steps_per_s']:.0f}, "
              f"after {s['after_env_steps_per_s']:.0f}", file=say, flush=True)
    if args.json:
        print(json.dumps({"records": records, "summary": summary}))


if __name__ == "__main__":
    main()
