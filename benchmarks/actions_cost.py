"""What the action log costs: `simulate` and training with the `actions` table against without.

Both arms run in this one process, interleaved (without, with, without, with ...), and the figure
is the median of the per-pair speed ratios (with / without), so drift on a shared machine hits both
arms alike; each ratio is given by CPU time of this process (robust to other processes on a busy
machine) and by wall time (which also counts the extra part file's fsync). Also reports the table's size per agent-step and how fast `karmic replay --check`
re-simulates (env-steps/s).

    python benchmarks/actions_cost.py [--pairs 5] [--sim-episodes 10] [--train-updates 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _t(fn) -> np.ndarray:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return np.array([time.perf_counter() - w, time.process_time() - c])


def _ratio(out: dict, key: str, ratios: list[np.ndarray]) -> None:
    r = np.array(ratios)
    out[key] = float(np.median(r[:, 1]))  # CPU time
    out[key + "_wall"] = float(np.median(r[:, 0]))
    out[key + "_range"] = [float(r[:, 1].min()), float(r[:, 1].max())]


def _dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*.parquet")) if d.is_dir() else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5, help="interleaved without/with pairs per figure")
    p.add_argument("--sim-episodes", type=int, default=10)
    p.add_argument("--train-updates", type=int, default=10, help="updates per training arm (2 rounds at 10x10)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import torch

    from karmic.training.ppo import TrainConfig, Trainer
    from pipelines.replay import check_run
    from pipelines.simulate import simulate

    torch.set_num_threads(1)
    out: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="karmic-actions-"))
    try:
        # simulate: 20x20, 1000-step episodes, both policies (random is the cheapest per step, so
        # the log's share is largest there)
        kw = dict(grid_size=20, episodes=a.sim_episodes, seed=1, max_steps=1000)  # noqa: C408
        simulate(tmp / "warm", **{**kw, "episodes": 1}, policy="random")
        for policy in ("random", "mixed"):
            ratios = []
            for i in range(a.pairs):
                off = _t(lambda d=tmp / f"off-{policy}{i}", p=policy: simulate(d, policy=p, log_actions=False, **kw))
                on = _t(lambda d=tmp / f"on-{policy}{i}", p=policy: simulate(d, policy=p, **kw))
                ratios.append(off / on)
            _ratio(out, f"simulate_ratio_{policy}", ratios)
        lake = tmp / "on-mixed0"
        ev_bytes, act_bytes = _dir_bytes(lake / "events"), _dir_bytes(lake / "actions")
        out["actions_bytes_per_agent_step"] = act_bytes / (a.sim_episodes * 1000 * 5)
        out["actions_vs_events_bytes"] = act_bytes / max(ev_bytes, 1)
        run_id = next((lake / "actions").iterdir()).name.split("=", 1)[1]
        dt = _t(lambda: check_run(lake, run_id))[0]
        out["replay_check_env_steps_per_s"] = a.sim_episodes * 1000 / dt

        # training: baseline, 10x10, 16 envs, hidden 256 (the README's throughput setting)
        def train(log: bool, i: int) -> np.ndarray:
            cfg = TrainConfig(mode="baseline", grid_size=10, seed=1, num_envs=16, num_steps=100,
                              checkpoint_every=10**6, threads=1, total_steps=10**7,
                              run_id=f"t{int(log)}-{i}")
            tr = Trainer(cfg, tmp / f"train{int(log)}{i}")
            tr.io.log_actions = log
            return _t(lambda: tr.run(stop_after=a.train_updates))

        train(True, -1)  # warm-up (kernel and torch caches)
        ratios = []
        for i in range(a.pairs):
            off = train(False, i)
            on = train(True, i)
            ratios.append(off / on)
        _ratio(out, "train_ratio_baseline", ratios)
        tl = tmp / "train10"
        n_rounds = a.train_updates * 100 // 500
        dt = _t(lambda: check_run(tl, "t1-0"))[0]
        out["replay_check_train_env_steps_per_s"] = n_rounds * 500 * 16 / dt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for policy in ("random", "mixed"):
        lo, hi = out[f"simulate_ratio_{policy}_range"]
        print(f"simulate --policy {policy}: with actions at {out[f'simulate_ratio_{policy}']:.1%} of the "
              f"speed without by CPU time (pairs {lo:.1%}..{hi:.1%}), "
              f"{out[f'simulate_ratio_{policy}_wall']:.1%} by wall time; target >= 95%")
    lo, hi = out["train_ratio_baseline_range"]
    print(f"train baseline 10x10 16 envs: with actions at {out['train_ratio_baseline']:.1%} by CPU "
          f"time (pairs {lo:.1%}..{hi:.1%}), {out['train_ratio_baseline_wall']:.1%} by wall time; "
          "target >= 95%")
    print(f"actions table: {out['actions_bytes_per_agent_step']:.3f} bytes per agent-step, "
          f"{out['actions_vs_events_bytes']:.2f}x the events table's bytes (mixed policy)")
    print(f"replay --check: {out['replay_check_env_steps_per_s']:,.0f} env-steps/s (simulate run), "
          f"{out['replay_check_train_env_steps_per_s']:,.0f} (training run, 16 envs)")
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
