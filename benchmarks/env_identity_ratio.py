"""Env speed with identity in the observations, as ratios (a loaded machine makes times meaningless).

Three variants of the batched env (random actions, observations included) step in one process,
in short alternating chunks (``--chunk`` seconds, ``--rounds`` times, the order reversed every
other round), so load drifts hit them alike:

- ``plain``: the preset as it is (identity "none"; the encounter count of this code included);
- ``id``: the preset with identity "onehot" (3 + N observation channels);
- ``before`` (with ``--baseline-root``): the same preset stepped by the step and observe kernels
  of another checkout (e.g. the code before identity and encounters existed), loaded from its
  ``karmic/envs/kernels.py`` and swapped in for ``HarvestVecEnv.step``'s kernel calls. A
  checkout of this very code as the baseline is the control: its ratios should be 1.

For each preset: the total steps/s of each variant, and the median of the per-round ratios to
``before`` (or to ``plain`` without a baseline). ``--json``: the last line is the result as JSON.

    python benchmarks/env_identity_ratio.py --baseline-root /work/main --rounds 30
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

from karmic.envs import core
from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv


def load_kernels(root: Path):
    """The other checkout's kernels module, under its own name (its numba cache is its own file)."""
    path = root / "karmic" / "envs" / "kernels.py"
    spec = importlib.util.spec_from_file_location("_kernels_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # numba's on-disk cache finds the module again by this name
    spec.loader.exec_module(mod)
    return mod


class Before:
    """This env stepped by HarvestVecEnv.step itself, with the old kernels swapped in for the call
    (``karmic.envs.core.K``), so both variants pay the same Python around the kernels. The old
    kernels write the first 7 stats columns; an old observe kernel takes no identity argument."""

    def __init__(self, env: HarvestVecEnv, K0) -> None:
        self.env = env
        takes_identity = len(inspect.signature(K0.observe_kernel.py_func).parameters) == 7
        self.shim = types.SimpleNamespace(
            step_kernel=K0.step_kernel, reset_kernel=K0.reset_kernel,
            observe_kernel=K0.observe_kernel if takes_identity else (lambda *args: K0.observe_kernel(*args[:6])))

    def step(self, a) -> None:
        new = core.K
        core.K = self.shim
        try:
            self.env.step(a)
        finally:
            core.K = new


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="karmic-small,karmic-big")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--chunk", type=float, default=0.25, help="seconds per variant per round")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--baseline-root", default=None, help="a checkout whose kernels are 'before'")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.rounds < 1 or a.chunk <= 0 or a.num_envs < 1:
        print("error: --rounds and --num-envs must be >= 1 and --chunk > 0", file=sys.stderr)
        sys.exit(2)
    K0 = None
    if a.baseline_root:
        root = Path(a.baseline_root).resolve()
        if not (root / "karmic" / "envs" / "kernels.py").is_file():
            print(f"error: --baseline-root {root} has no karmic/envs/kernels.py", file=sys.stderr)
            sys.exit(2)
        K0 = load_kernels(root)
    records = []
    for preset in a.presets.split(","):
        big = 10**9
        runners = {}
        if K0 is not None:
            e0 = HarvestVecEnv(make_config(preset, max_steps=big), a.num_envs)
            e0.reset(seed=0)
            runners["before"] = Before(e0, K0).step
        for name, identity in (("plain", "none"), ("id", "onehot")):
            env = HarvestVecEnv(make_config(preset, max_steps=big, identity=identity), a.num_envs)
            env.reset(seed=0)
            runners[name] = env.step
        acts = np.random.default_rng(0).integers(0, 8, (64, a.num_envs, 5))
        for step in runners.values():  # compile and warm up
            for k in range(64):
                step(acts[k])
        names = list(runners)
        rates: dict[str, list[float]] = {n: [] for n in names}
        for r in range(a.rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                step, steps, t0 = runners[n], 0, time.perf_counter()
                while time.perf_counter() - t0 < a.chunk:
                    for k in range(64):
                        step(acts[k])
                    steps += 64
                rates[n].append(steps * a.num_envs / (time.perf_counter() - t0))
        ref = names[0]
        for n in names:
            ratios = [x / y for x, y in zip(rates[n], rates[ref], strict=True)]
            records.append({"preset": preset, "variant": n, "num_envs": a.num_envs, "ref": ref,
                            "env_steps_per_s": round(statistics.mean(rates[n]), 1),
                            "median_ratio": round(statistics.median(ratios), 3),
                            "mean_ratio": round(sum(rates[n]) / sum(rates[ref]), 3)})
    print(f"{'preset':14} {'variant':8} {'env-steps/s':>12} {'median ratio':>13} {'total ratio':>12}  to")
    for rec in records:
        print(f"{rec['preset']:14} {rec['variant']:8} {rec['env_steps_per_s']:>12,.0f} {rec['median_ratio']:>13.3f} "
              f"{rec['mean_ratio']:>12.3f}  {rec['ref']}")
    if a.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
