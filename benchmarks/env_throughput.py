"""Harvest environment throughput: the batched core and the PettingZoo single env.

5 agents, uniformly random actions, observations included. Prints a table; with --json the last
line is a JSON list of {"mode", "grid_size", "n_agents", "num_envs", "env_steps_per_s",
"agent_steps_per_s"}. Numba compile time is excluded (a warm-up step runs first).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from karmic.envs import harvest_v0
from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv


def bench_batched(grid: int, num_envs: int, n_agents: int, seconds: float) -> float:
    env = HarvestVecEnv(make_config(grid_size=grid, n_agents=n_agents, max_steps=10**9), num_envs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 8, (64, num_envs, n_agents))
    env.step(acts[0])
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for k in range(64):
            env.step(acts[k])
        steps += 64
    return steps * num_envs / (time.perf_counter() - t0)


def bench_single(grid: int, n_agents: int, seconds: float) -> float:
    env = harvest_v0.parallel_env(grid_size=grid, n_agents=n_agents, max_steps=10**9)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    agents = env.possible_agents
    acts = [dict(zip(agents, rng.integers(0, 8, n_agents).tolist(), strict=True)) for _ in range(64)]
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for k in range(64):
            env.step(acts[k])
        steps += 64
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", default="10,20,30")
    p.add_argument("--num-envs", default="1,16,64,256")
    p.add_argument("--agents", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    records = []
    for g in [int(x) for x in a.grids.split(",")]:
        for b in [int(x) for x in a.num_envs.split(",")]:
            records.append({"mode": "batched", "grid_size": g, "n_agents": a.agents, "num_envs": b,
                            "env_steps_per_s": bench_batched(g, b, a.agents, a.seconds)})
        records.append({"mode": "single", "grid_size": g, "n_agents": a.agents, "num_envs": 1,
                        "env_steps_per_s": bench_single(g, a.agents, a.seconds)})
    print(f"{'mode':8} {'grid':>4} {'envs':>5} {'env-steps/s':>12} {'agent-steps/s':>14}")
    for r in records:
        r["env_steps_per_s"] = round(r["env_steps_per_s"], 1)
        r["agent_steps_per_s"] = round(r["env_steps_per_s"] * r["n_agents"], 1)
        print(f"{r['mode']:8} {r['grid_size']:>4} {r['num_envs']:>5} {r['env_steps_per_s']:>12,.0f} "
              f"{r['agent_steps_per_s']:>14,.0f}")
    if a.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
