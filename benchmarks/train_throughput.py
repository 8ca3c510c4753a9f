"""End-to-end training throughput: rollout, lake write, replay, PPO update (issue 5).

For each grid size and condition, trains a fresh run (hidden 256, 5 agents, default config)
for a few updates on a temporary lake and reports env-steps/s (B envs x steps per wall second,
everything included, first update excluded as warm-up), the share of time spent on the lake
round trip (shard write + read back + retention), and the model FLOP/s reached against a large
matmul on the same machine.

    python benchmarks/train_throughput.py [--grids 10,30] [--conditions baseline] [--updates 10] [--json]
    python benchmarks/train_throughput.py --algos ppo,drqn [--repeats 2]   # learners side by side

``--json`` prints, as its last line, a JSON list of records
``{"grid_size", "condition", "env_steps_per_s", "lake_share", "model_gflops", "matmul_gflops"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch


def matmul_gflops(n: int = 2048, reps: int = 3, trials: int = 7) -> float:
    """Best of several trials (the machine is shared: the best is the closest to the peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


class StubEnv:
    """Random 11x11x3 observations, no dynamics: isolates the learner and lake cost (--stub-env)."""

    def __init__(self, num_envs: int, max_steps: int = 500, n_agents: int = 5) -> None:
        import numpy as np

        from karmic.events import EventBatch

        class _Cfg:
            def to_dict(self) -> dict:
                return {"stub": True, "max_steps": max_steps}

        self.config = _Cfg()
        self.config.max_steps, self.config.n_agents = max_steps, n_agents
        self.obs = np.random.default_rng(0).integers(0, 2, (num_envs, n_agents, 11, 11, 3)).astype(np.uint8)
        self.rew = np.zeros((num_envs, n_agents), np.float32)
        self.reset_events = EventBatch.empty()
        self._empty = EventBatch.empty()
        self.B, self.t = num_envs, 0

    def reset(self, seed=None, pairs=None):
        self.t = 0
        return self.obs

    def step(self, actions):
        import numpy as np

        self.t += 1
        return self.obs, self.rew, np.full(self.B, self.t >= self.config.max_steps), self._empty

    def episode_stats(self):
        import numpy as np

        z = np.zeros_like(self.rew, dtype=np.int64)
        return {k: z for k in ("return", "apples", "zaps_fired", "zaps_hit", "times_hit",
                               "frozen_steps", "steps")}


def bench(grid: int, condition: str, updates: int, num_envs: int, threads: int,
          stub: bool = False) -> dict:
    from karmic.training.ppo import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as lake:
        cfg = TrainConfig(mode=condition, grid_size=grid, seed=0, num_envs=num_envs,
                          total_steps=10**9, checkpoint_every=10**6, threads=threads)
        marks: list[tuple[float, int, dict]] = []
        tr = Trainer(cfg, lake, env=StubEnv(num_envs) if stub else None,
                     on_update=lambda i: marks.append(
                         (time.perf_counter(), i["global_step"], dict(i["timing"]))))
        tr.run(stop_after=updates + 1, at_boundary=False)
        (t0, s0, tm0), (t1, s1, tm1) = marks[0], marks[-1]
        dt = t1 - t0
        steps = s1 - s0
        timing = {k: tm1[k] - tm0[k] for k in tm1}
        total = sum(timing.values())
        agent_steps = steps * tr.N
        f = tr.agent.flops_per_step()
        # rollout: one forward per agent-step; learning: epochs x (forward + backward ~ 3 forwards)
        flops = agent_steps * f * (1 + 3 * cfg.update_epochs)
        return {
            "grid_size": grid,
            "condition": condition + ("-stub-env" if stub else ""),
            "env_steps_per_s": round(steps / dt, 1),
            "lake_share": round(timing["lake"] / total, 4),
            "rollout_share": round(timing["rollout"] / total, 4),
            "learn_share": round(timing["learn"] / total, 4),
            "model_gflops": round(flops / dt / 1e9, 2),
            "params": sum(p.numel() for p in tr.agent.parameters()),
            "num_envs": num_envs,
            "updates": updates,
        }


def bench_learner(grid: int, algo: str, updates: int, num_envs: int, threads: int) -> dict:
    """One fresh baseline run of ``algo`` (ppo | drqn, each at its own defaults): env-steps/s over
    ``updates`` updates after a warm-up one, and the rollout / lake / learn shares."""
    from karmic.training.learners import make_config, make_trainer

    with tempfile.TemporaryDirectory() as lake:
        cfg = make_config(algo, grid_size=grid, seed=0, num_envs=num_envs, total_steps=10**9,
                          checkpoint_every=10**6, threads=threads)
        marks: list[tuple[float, int, dict]] = []
        tr = make_trainer(cfg, lake, on_update=lambda i: marks.append(
            (time.perf_counter(), i["global_step"], dict(i["timing"]))))
        tr.run(stop_after=updates + 1, at_boundary=False)
        (t0, s0, tm0), (t1, s1, tm1) = marks[0], marks[-1]
        timing = {k: tm1[k] - tm0[k] for k in tm1}
        total = sum(timing.values())
        return {"grid_size": grid, "algo": algo, "condition": "baseline",
                "env_steps_per_s": round((s1 - s0) / (t1 - t0), 1),
                "lake_share": round(timing["lake"] / total, 4),
                "rollout_share": round(timing["rollout"] / total, 4),
                "learn_share": round(timing["learn"] / total, 4),
                "num_envs": num_envs, "updates": updates}


def compare_learners(args) -> list[dict]:
    """``--algos ppo,drqn``: the learners alternately, ``--repeats`` times per grid (the machine's
    load drifts; alternating puts both under the same drift); one record per run."""
    records = []
    for g in [int(x) for x in args.grids.split(",")]:
        for rep in range(args.repeats):
            for algo in args.algos.split(","):
                r = bench_learner(g, algo, args.updates, args.num_envs, args.threads)
                r["repeat"] = rep
                records.append(r)
                print(f"grid {g:>2} {algo:<5} #{rep} {r['env_steps_per_s']:>8.0f} env-steps/s  "
                      f"lake {100 * r['lake_share']:4.1f}%  rollout {100 * r['rollout_share']:4.1f}%  "
                      f"learn {100 * r['learn_share']:4.1f}%",
                      file=sys.stderr if args.json else sys.stdout, flush=True)
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="10,30")
    ap.add_argument("--conditions", default="baseline")
    ap.add_argument("--updates", type=int, default=10,
                    help="measured updates (10 x 100 steps covers an episode end at 30x30)")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stub-env", action="store_true",
                    help="random observations instead of Harvest: learner + lake cost only")
    ap.add_argument("--algos", default=None,
                    help="compare learners instead, e.g. ppo,drqn (baseline condition, records carry algo)")
    ap.add_argument("--repeats", type=int, default=2, help="with --algos: alternations per grid")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.algos:
        records = compare_learners(args)
        if args.json:
            print(json.dumps(records))
        return
    records = []
    for g in [int(x) for x in args.grids.split(",")]:
        for c in args.conditions.split(","):
            peak = matmul_gflops()  # next to each run: the load on the machine drifts
            r = bench(g, c, args.updates, args.num_envs, args.threads, args.stub_env)
            r["matmul_gflops"] = round(peak, 1)
            records.append(r)
            print(
                f"grid {g:>2} {c:<10} {r['env_steps_per_s']:>8.0f} env-steps/s  "
                f"lake {100 * r['lake_share']:4.1f}%  rollout {100 * r['rollout_share']:4.1f}%  "
                f"learn {100 * r['learn_share']:4.1f}%  model {r['model_gflops']:.1f} GFLOP/s "
                f"of {peak:.0f} (matmul)",
                file=sys.stderr if args.json else sys.stdout,
            )
    if args.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
