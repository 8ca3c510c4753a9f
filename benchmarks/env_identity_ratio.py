"""Env speed with identity in the observations, as ratios (a loaded machine makes times meaningless).

For each preset, steps/s of the batched env (random actions, observations included) under:
``plain`` (the preset), ``id`` (the preset with identity "onehot") and, with ``--baseline-root``,
``before`` (the preset run by the code of another checkout, e.g. the main branch before identity
and encounters existed). The variants alternate ``--rounds`` times in fresh subprocesses, so load
drifts hit them alike; the table gives the median of the per-round ratios to ``before`` (or to
``plain`` without a baseline). ``--json``: the last line is the result as JSON.

    python benchmarks/env_identity_ratio.py --baseline-root /work/main --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time, numpy as np
from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv
preset, identity, num_envs, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
kw = {} if identity == "-" else {"identity": identity}
env = HarvestVecEnv(make_config(preset, max_steps=10**9, **kw), num_envs)
env.reset(seed=0)
acts = np.random.default_rng(0).integers(0, 8, (64, num_envs, env.n_agents))
for k in range(64):
    env.step(acts[k])  # compile and warm up
steps, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    for k in range(64):
        env.step(acts[k])
    steps += 64
print(steps * num_envs / (time.perf_counter() - t0))
"""


def measure(root: Path, preset: str, identity: str, num_envs: int, seconds: float) -> float:
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, preset, identity, str(num_envs), str(seconds)],
                         env=env, cwd=root, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="karmic-small,karmic-big")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--baseline-root", default=None, help="a checkout whose env is 'before'")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.rounds < 1 or a.seconds <= 0 or a.num_envs < 1:
        print("error: --rounds and --num-envs must be >= 1 and --seconds > 0", file=sys.stderr)
        sys.exit(2)
    variants = [("plain", HERE, "-"), ("id", HERE, "onehot")]
    if a.baseline_root:
        root = Path(a.baseline_root).resolve()
        if not (root / "karmic" / "envs" / "core.py").is_file():
            print(f"error: --baseline-root {root} has no karmic/envs/core.py", file=sys.stderr)
            sys.exit(2)
        variants.insert(0, ("before", root, "-"))
    ref = variants[0][0]
    records = []
    for preset in a.presets.split(","):
        rates: dict[str, list[float]] = {v[0]: [] for v in variants}
        for r in range(a.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for name, root, identity in order:
                rates[name].append(measure(root, preset, identity, a.num_envs, a.seconds))
        for name in rates:
            ratios = [x / y for x, y in zip(rates[name], rates[ref], strict=True)]
            records.append({"preset": preset, "variant": name, "num_envs": a.num_envs,
                            "median_env_steps_per_s": round(statistics.median(rates[name]), 1),
                            f"ratio_to_{ref}": round(statistics.median(ratios), 3),
                            "ratios": [round(x, 3) for x in ratios]})
    print(f"{'preset':14} {'variant':8} {'env-steps/s':>12} {'ratio to ' + ref:>16}  per round")
    for rec in records:
        print(f"{rec['preset']:14} {rec['variant']:8} {rec['median_env_steps_per_s']:>12,.0f} "
              f"{rec[f'ratio_to_{ref}']:>16.3f}  {rec['ratios']}")
    if a.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
