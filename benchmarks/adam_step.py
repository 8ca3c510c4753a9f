"""One Adam step over a KarmicAgent's parameters: per-tensor loop vs ``foreach`` vs ``fused``.

The learner takes 16 optimizer steps per update (more with TVT's replay passes); the agent has
0.36-0.39 M parameters in 14-26 tensors, so the per-tensor loop's overhead, not the
arithmetic, decides the step's cost. Prints the median of ``--steps`` timed steps after a
warm-up, for ``baseline``'s network and ``tvt``'s (which adds the memory's heads).

    python benchmarks/adam_step.py [--threads 1,2] [--steps 50]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from karmic.agents.network import KarmicAgent

KINDS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_ms(use_tvt: bool, kind: str, steps: int) -> tuple[float, int, int]:
    """Median ms of one ``optimizer.step()``; the parameter and tensor counts."""
    torch.manual_seed(0)
    agent = KarmicAgent((11, 11, 3), use_tvt=use_tvt, n_agents=5)
    params = list(agent.parameters())
    opt = torch.optim.Adam(params, lr=2.5e-4, eps=1e-5, **KINDS[kind])
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    for _ in range(5):
        opt.step()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2] * 1e3, sum(p.numel() for p in params), len(params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    args = ap.parse_args()
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        sys.exit(f"--threads takes integers like 1,2, got {args.threads!r}")
    if any(t < 1 for t in threads) or args.steps < 1:
        sys.exit("--threads and --steps must be >= 1")
    for t in threads:
        torch.set_num_threads(t)
        for use_tvt in (False, True):
            res = {k: step_ms(use_tvt, k, args.steps) for k in KINDS}
            _, n, nt = res["fused"]
            figs = "  ".join(f"{k} {v[0]:.2f} ms" for k, v in res.items())
            print(f"threads {t}  {'tvt     ' if use_tvt else 'baseline'}  {n:,} params in {nt} tensors  {figs}"
                  f"  (loop / fused {res['loop'][0] / res['fused'][0]:.1f}x)")


if __name__ == "__main__":
    main()
