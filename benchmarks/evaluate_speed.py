"""Evaluation speed, old against new, in one process (a loaded machine makes lone times meaningless).

Plays one evaluation scenario (by default cross-play on the 30x30 grid: the kept final policy of
``mechanism-budget`` seed 101 as the focal agent among seed 102's) with two implementations of
``pipelines.evaluate.run_scenario``, alternating them round by round:

- ``old``: the module as it is at ``--ref`` (default ``main``), read with ``git show`` into a
  temporary module, with its ``karmic/agents/policy.py`` of the same ref (so its policy loading is
  the old one too); episodes one at a time, every policy acting on all agents, torch's default
  threads (``--old-threads 1``: one, to tell the thread waits from the rest). It plays
  ``--old-episodes`` episodes a round (default 1: it takes about as long per episode whatever
  their number);
- ``new``: this checkout's, playing ``--episodes`` (default 10, a mechanism study evaluation) as
  one batch.

Each run is a whole ``run_scenario`` call (policy loading and lake writing included) into a
scratch lake. Per round: episodes per second of wall time and of process CPU time for each;
printed: the medians over rounds and the median of the per-round ratios new / old.

    python benchmarks/evaluate_speed.py --rounds 3
    python benchmarks/evaluate_speed.py --scenario solo --rounds 3 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: this checkout's packages
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipelines import evaluate as new  # noqa: E402

POLICY = "results/mechanism-budget/policies/mechanism-budget-default-baseline-g30-s{}/final.pt"


def load_old(ref: str, tmp: Path):
    """``pipelines/evaluate.py`` at ``ref`` as a module, loading policies with that ref's
    ``karmic/agents/policy.py``."""

    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout

    (tmp / "_old_policy.py").write_text(show("karmic/agents/policy.py"))
    src = show("pipelines/evaluate.py").replace("from karmic.agents.policy import load_policy",
                                                "from _old_policy import load_policy")
    (tmp / "_old_evaluate.py").write_text(src)
    sys.path.insert(0, str(tmp))
    spec = importlib.util.spec_from_file_location("_old_evaluate", tmp / "_old_evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_old_evaluate"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def play(mod, lake: Path, sources: list[str], scenario: str, episodes: int, seed: int) -> tuple[float, float]:
    srcs = [mod.resolve_source(str(ROOT / s) if (ROOT / s).exists() else s) for s in sources]
    for i, s in enumerate(srcs):  # two seeds of one condition: distinct labels
        if s.kind == "trained":
            s.label = f"{s.label}-{i}"
    config = mod.env_config_for(srcs)
    sc = mod.Scenario(scenario, srcs[0], srcs[1] if len(srcs) > 1 else None, 1)
    w, c = time.perf_counter(), time.process_time()
    mod.run_scenario(str(lake), sc, config, episodes, seed)
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="cross-play", choices=new.SCENARIOS)
    ap.add_argument("--focal", default=POLICY.format(101))
    ap.add_argument("--background", default=POLICY.format(102))
    ap.add_argument("--episodes", type=int, default=10, help="episodes of a new run (one batch)")
    ap.add_argument("--old-episodes", type=int, default=1, help="episodes of an old run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ref", default="main", help="the git ref of the old code")
    ap.add_argument("--old-threads", type=int, default=0,
                    help="torch threads for the old code (default 0: torch's default, as the old code ran)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sources = [args.focal] + ([args.background] if args.scenario == "cross-play" else [])
    tmp = Path(tempfile.mkdtemp(prefix="evaluate_speed-"))
    old = load_old(args.ref, tmp)
    threads = torch.get_num_threads()
    rows = []
    for r in range(args.rounds):
        order = [("old", old, args.old_episodes), ("new", new, args.episodes)]
        if r % 2:
            order.reverse()
        got = {}
        for name, mod, n in order:
            if name == "old" and args.old_threads:
                torch.set_num_threads(args.old_threads)
            wall, cpu = play(mod, tmp / f"lake-{name}-{r}", sources, args.scenario, n, seed=r)
            torch.set_num_threads(threads)
            got[name] = {"episodes": n, "wall_s": wall, "cpu_s": cpu, "eps_per_s": n / wall, "eps_per_cpu_s": n / cpu}
            print(f"round {r} {name}: {n} episodes in {wall:.1f} s wall, {cpu:.1f} s CPU "
                  f"({n / wall:.3f} episodes/s, {n / cpu:.3f} per CPU-s)", flush=True)
        rows.append(got)

    def med(name: str, key: str) -> float:
        return statistics.median(x[name][key] for x in rows)

    def ratio(key: str) -> float:
        return statistics.median(x["new"][key] / x["old"][key] for x in rows)

    out = {"scenario": args.scenario, "rounds": args.rounds, "ref": args.ref, "torch_threads": threads,
           "old_threads": args.old_threads or threads,
           "old_eps_per_s": med("old", "eps_per_s"), "new_eps_per_s": med("new", "eps_per_s"),
           "old_eps_per_cpu_s": med("old", "eps_per_cpu_s"), "new_eps_per_cpu_s": med("new", "eps_per_cpu_s"),
           "ratio_wall": ratio("eps_per_s"), "ratio_cpu": ratio("eps_per_cpu_s")}
    print(f"{args.scenario}: old {out['old_eps_per_s']:.4f} episodes/s ({out['old_eps_per_cpu_s']:.4f} per CPU-s), "
          f"new {out['new_eps_per_s']:.3f} ({out['new_eps_per_cpu_s']:.3f} per CPU-s): "
          f"median ratio {out['ratio_wall']:.1f}x wall, {out['ratio_cpu']:.1f}x CPU")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
