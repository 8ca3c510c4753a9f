"""Random-policy Harvest figures from SSD's own code and from the ``ssd`` preset, side by side.

    python benchmarks/ssd_fidelity.py --ssd-src PATH [--episodes 100] [--json]
    python benchmarks/ssd_fidelity.py --ours-only [--episodes 100]

PATH is a checkout of github.com/eugenevinitsky/sequential_social_dilemma_games (its
``social_dilemmas/`` package and ``utility_funcs.py``). SSD's environment code imports ray, gym and
cv2 only for RLlib's base class, its space types and video helpers; none of them takes part in a
step, so this script puts empty stand-ins for those modules in ``sys.modules`` and then runs SSD's
``HarvestEnv`` unmodified: 5 agents, 1000 steps, every agent drawing each action uniformly from
SSD's 8 (numpy's global RNG, seeded per episode). Counted per episode: apples eaten (calls of
``HarvestAgent.consume`` on an apple), beam hits (calls of ``HarvestAgent.hit``), shots fired, and
the apples on the board after the last step. The same counts for our preset come from the
environment's event stream. The figures pinned in tests/test_env_ssd.py come from this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

N_AGENTS = 5
STEPS = 1000


def _stub_modules() -> None:
    class _Anything:
        def __init__(self, *a, **k):
            pass

    def mod(name: str, **attrs) -> None:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules.setdefault(name, m)

    mod("ray")
    mod("ray.rllib")
    mod("ray.rllib.agents")
    mod("ray.rllib.agents.callbacks", DefaultCallbacks=_Anything)
    mod("ray.rllib.env", MultiAgentEnv=object)
    mod("gym")
    mod("gym.spaces", Box=_Anything, Dict=_Anything, Discrete=_Anything)
    mod("cv2")


def ssd_figures(src: Path, episodes: int, seed0: int = 0) -> dict[str, list[int]]:
    src = Path(src).resolve()
    if not (src / "social_dilemmas" / "envs" / "harvest.py").is_file():
        raise SystemExit(f"error: no social_dilemmas/envs/harvest.py under {src}")
    _stub_modules()
    sys.path.insert(0, str(src))
    from social_dilemmas.envs import agent as ssd_agent
    from social_dilemmas.envs.harvest import HarvestEnv

    counts = {"eaten": 0, "hits": 0, "fired": 0}
    consume, hit, fire = (ssd_agent.HarvestAgent.consume, ssd_agent.HarvestAgent.hit,
                          ssd_agent.HarvestAgent.fire_beam)

    def counting_consume(self, char):
        counts["eaten"] += char == b"A"
        return consume(self, char)

    def counting_hit(self, char):
        counts["hits"] += char == b"F"
        return hit(self, char)

    def counting_fire(self, char):
        counts["fired"] += char == b"F"
        return fire(self, char)

    ssd_agent.HarvestAgent.consume = counting_consume
    ssd_agent.HarvestAgent.hit = counting_hit
    ssd_agent.HarvestAgent.fire_beam = counting_fire
    out: dict[str, list[int]] = {"eaten": [], "hits": [], "fired": [], "left": []}
    env = HarvestEnv(num_agents=N_AGENTS)
    for ep in range(episodes):
        np.random.seed(seed0 + ep)
        env.reset()
        for k in counts:
            counts[k] = 0
        ids = list(env.agents)
        for _ in range(STEPS):
            env.step({a: int(np.random.randint(8)) for a in ids})
        for k in counts:
            out[k].append(counts[k])
        out["left"].append(int((env.world_map == b"A").sum()))
    return out


def ours_figures(episodes: int, seed0: int = 0, preset: str = "ssd") -> dict[str, list[int]]:
    from karmic.envs.config import make_config
    from karmic.envs.core import HarvestVecEnv
    from karmic.events import APPLE_EATEN, ZAP_FIRED, ZAP_HIT

    cfg = make_config(preset, n_agents=N_AGENTS, max_steps=STEPS)
    env = HarvestVecEnv(cfg, num_envs=episodes)
    env.record_events = True
    rng = np.random.default_rng(seed0)
    env.reset(seed=[seed0 + e for e in range(episodes)])
    for _ in range(STEPS):
        env.step(rng.integers(0, 8, (episodes, N_AGENTS)))
    ev = env.take_recorded()

    def per_env(code) -> list[int]:
        return np.bincount(ev.env[ev.event_type == code], minlength=episodes).tolist()

    return {"eaten": per_env(APPLE_EATEN), "hits": per_env(ZAP_HIT), "fired": per_env(ZAP_FIRED),
            "left": env.state.apples.reshape(episodes, -1).sum(1).astype(int).tolist()}


def summary(fig: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    return {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)), "n": len(v)}
            for k, v in fig.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssd-src", type=Path)
    ap.add_argument("--ours-only", action="store_true")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res: dict[str, dict] = {}
    t = time.perf_counter()
    res["ours"] = summary(ours_figures(args.episodes, args.seed))
    res["ours"]["seconds"] = time.perf_counter() - t
    if not args.ours_only:
        if args.ssd_src is None:
            raise SystemExit("error: --ssd-src PATH (or --ours-only)")
        t = time.perf_counter()
        res["ssd"] = summary(ssd_figures(args.ssd_src, args.episodes, args.seed))
        res["ssd"]["seconds"] = time.perf_counter() - t
    if args.json:
        print(json.dumps(res, indent=1))
        return
    for who, r in res.items():
        line = ", ".join(
            f"{k} {v['mean']:.1f} (sd {v['sd']:.1f})" for k, v in r.items() if k != "seconds"
        )
        print(f"{who:5s} n={args.episodes}: {line}  [{r['seconds']:.0f} s]")


if __name__ == "__main__":
    main()
