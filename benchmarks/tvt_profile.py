"""Where an update's CPU time goes, TVT against baseline, in one process each (cProfile, CPU clock).

    python benchmarks/tvt_profile.py [--modes baseline,tvt,full] [--method new-r8] [--grid 10]
        [--updates 5] [--precision bf16] [--json]

Each mode trains a fresh run (16 envs, 1 torch thread) past TVT's warm-up (the memory's span of
earlier shards, 11 updates), then profiles ``--updates`` updates with the process's CPU clock, so
load from other processes moves the figures less than wall time would. It prints the CPU seconds
an update and, for the parts below, their cumulative CPU seconds an update (a part's time includes
the parts it calls: ``backward`` is inside ``learner``, the ``read`` inside both the rollout and
the learner). ``--method`` is a TVT method of ``studies/tvt-speed.toml`` (old, new) or new-r8 (new with
the acting read refreshed every 8 steps).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM = 11  # 1 + memory_size / num_steps: TVT's memory spans earlier shards from here on
# TVT's methods: the levels of the equivalence study (docs/tvt-speed.md), name -> TrainConfig fields,
# and new-r8 (the new one with tvt_read_refresh = 8, an option the study does not test)
METHODS = {lv["name"]: lv["train"] for lv in tomllib.loads((ROOT / "studies" / "tvt-speed.toml").read_text())["levels"]}
METHODS["new-r8"] = {**METHODS["new"], "tvt_read_refresh": 8}
# part -> (file suffix, function name), matched against cProfile's keys
PARTS = {
    "rollout": ("training/ppo.py", "_rollout"),
    "learner": ("training/ppo.py", "learn"),
    "backward": ("~", "<method 'run_backward' of 'torch._C._EngineBase' objects>"),
    "network forward": ("agents/network.py", "forward"),
    "memory read (acting and learner)": ("tvt/memory.py", "read"),
    "memory write": ("tvt/memory.py", "write"),
    "reconstruction losses": ("training/tvt_run.py", "add_losses"),
    "transports": ("tvt/harvest.py", "transport_rewards"),
    "proximal pass (lagged)": ("training/ppo.py", "_evaluate"),
    "rollout's TVT record": ("training/tvt_run.py", "record_step"),
    "lake write": ("pipelines/trajectories.py", "write_shard"),
    "lake read": ("pipelines/trajectories.py", "read_shard"),
}


def profile(mode: str, method: str, grid: int, updates: int, precision: str) -> dict:
    import torch

    from karmic.training.ppo import TrainConfig, Trainer

    torch.set_num_threads(1)
    marks: list[float] = []
    pr = cProfile.Profile(time.process_time)

    def on_update(_info: dict) -> None:
        marks.append(time.process_time())
        if len(marks) == WARM:
            pr.enable()
        elif len(marks) == WARM + updates:
            pr.disable()

    extra = METHODS[method] if mode != "baseline" else {}
    with tempfile.TemporaryDirectory() as lake:
        cfg = TrainConfig(mode=mode, grid_size=grid, seed=0, num_envs=16, total_steps=10**9,
                          checkpoint_every=10**6, threads=1, precision=precision, **extra)
        Trainer(cfg, lake, on_update=on_update).run(stop_after=WARM + updates, at_boundary=False)
    stats = pstats.Stats(pr).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    parts = {}
    for part, (suffix, name) in PARTS.items():
        ct = sum(v[3] for (f, _, n), v in stats.items() if n == name and f.endswith(suffix))
        parts[part] = round(ct / updates, 3)
    return {"mode": mode, "method": method if mode != "baseline" else None, "grid_size": grid,
            "precision": precision, "updates": updates,
            "cpu_s_per_update": round((marks[WARM + updates - 1] - marks[WARM - 1]) / updates, 3), "parts": parts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="baseline,tvt,full")
    ap.add_argument("--method", default="new-r8")
    ap.add_argument("--grid", type=int, default=10)
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from karmic.training.config import MODES, PRECISIONS

    modes = args.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown --modes {', '.join(bad)}; choose from {', '.join(MODES)}")
    if args.method not in METHODS:
        ap.error(f"unknown --method {args.method!r}; choose from {', '.join(METHODS)}")
    if args.precision not in PRECISIONS or args.updates < 1 or args.grid < 5:
        ap.error(f"--precision is one of {', '.join(PRECISIONS)}; --updates >= 1; --grid >= 5")
    rows = [profile(m, args.method, args.grid, args.updates, args.precision) for m in modes]
    base = next((r["cpu_s_per_update"] for r in rows if r["mode"] == "baseline"), None)
    for r in rows:
        ratio = f" ({base / r['cpu_s_per_update']:.2f}x baseline by CPU time)" if base else ""
        print(f"{r['mode']:>9} {r['method'] or '':>6}: {r['cpu_s_per_update']:.3f} CPU s an update{ratio}")
        for part, s in r["parts"].items():
            print(f"    {part:<34} {s:7.3f}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
