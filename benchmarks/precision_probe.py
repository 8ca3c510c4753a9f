"""Which precision is faster on this CPU: what ``--precision auto`` measures, and what it stands for.

Prints, at 1 and 2 torch threads, the time of one learner minibatch of the default network
(80 sequences x 25 steps, forward + backward + Adam) and of its forward alone, in fp32 and in
bf16 autocast (each the mean of 10 reps, 3 rounds alternated), then the probe ``auto`` uses
(``bf16_matmul_speedup``: a matmul of the LSTM's shape) and what ``auto`` picks.

    python benchmarks/precision_probe.py
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from karmic.agents.network import KarmicAgent
from karmic.training.ppo import (
    BF16_MIN_SPEEDUP,
    bf16_matmul_speedup,
    cpu_bf16_flags,
    resolve_precision,
)


def minibatch_ms(threads: int, rounds: int = 3, reps: int = 10) -> dict[str, list[float]]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    agent = KarmicAgent((11, 11, 3), hidden=256)
    opt = torch.optim.Adam(agent.parameters(), lr=1e-4)
    T, B = 25, 80
    obs = torch.randint(0, 2, (T, B, 11, 11, 3), dtype=torch.uint8)
    starts = torch.zeros(T, B, dtype=torch.bool)
    state = (torch.zeros(1, B, 256), torch.zeros(1, B, 256))

    def amp(bf16: bool):
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def train_step(bf16: bool) -> None:
        with amp(bf16):
            logits, value, _, _ = agent(obs, state, starts)
        loss = logits.logsumexp(-1).mean() + value.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward(bf16: bool) -> None:
        with torch.no_grad(), amp(bf16):
            agent(obs, state, starts)

    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        for bf16 in (False, True):
            for name, f in (("train", train_step), ("forward", forward)):
                for _ in range(2):
                    f(bf16)
                t = time.perf_counter()
                for _ in range(reps):
                    f(bf16)
                key = f"{name} {'bf16' if bf16 else 'fp32'}"
                out.setdefault(key, []).append((time.perf_counter() - t) / reps * 1000)
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(f"bf16 instructions: {', '.join(cpu_bf16_flags()) or 'none'}")
    for threads in (1, 2):
        ms = minibatch_ms(threads)
        for key, v in ms.items():
            print(f"threads {threads}  {key:13s} {min(v):7.1f} ms (rounds: {', '.join(f'{x:.1f}' for x in v)})")
        print(f"threads {threads}  bf16 / fp32 minibatch time: {min(ms['train bf16']) / min(ms['train fp32']):.2f}")
        print(f"threads {threads}  probe: bf16 matmul at {bf16_matmul_speedup():.2f}x the fp32 rate "
              f"(auto needs {BF16_MIN_SPEEDUP}x)")
    print(f"auto: {resolve_precision('auto')}")


if __name__ == "__main__":
    main()
