"""The TVT memory read of one learner minibatch: numba kernels vs torch.topk, in one script.

A read of 25 steps x 80 agents x 2 heads over a bank of 1,100 rows (the learner's shape once the
memory spans its earlier shards), forward and backward, timed three ways, alternated:

- ``dense``: the read over all R rows with autograd (``TVTMemory.read`` without ``unit``);
- ``torch``: the sparse read as torch ops (the selection by ``torch.topk``, the k rows gathered
  into one (T, B, H, k, word) tensor): how ``karmic`` read before its kernels;
- ``kernels``: ``TVTMemory.read`` with ``unit`` (``karmic.tvt.kernels``).

Also the selection alone (``torch.topk`` vs ``kernels.topk_valid``). Prints best-of and median
milliseconds and the ratios; ``--threads 1,2``.

    python benchmarks/tvt_read.py [--threads 1,2] [--rounds 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.nn import functional as F

from karmic.tvt import kernels
from karmic.tvt.memory import TVTMemory, window_valid

T, B, R, HID, WORD = 25, 80, 1100, 256, 32


def torch_sparse_read(m: TVTMemory, h, mem, valid, unit):
    """The sparse read in torch ops (the selection by torch.topk, the rows gathered): the value
    and gradient of ``m.read(h, mem, valid, unit)``, computed the way karmic did before."""
    keys = F.normalize(m.keys(h).view(T, B, m.heads, m.word), dim=-1)
    strength = F.softplus(m.strengths(h))
    k = min(m.top_k, R)
    with torch.no_grad():
        logits = torch.einsum("tbhd,brd->tbhr", keys, unit)
        logits.mul_(strength[..., None]).masked_fill_(~valid[:, :, None, :], float("-inf"))
        top, idx = logits.topk(k, dim=-1)
        ok = torch.isfinite(top)
    flat = (idx + (torch.arange(B) * R).view(1, B, 1, 1)).reshape(-1)
    rows = mem.reshape(B * R, -1).index_select(0, flat).view(T, B, m.heads, k, -1)
    norm = rows.norm(dim=-1).clamp(min=1e-12)
    top = strength[..., None] * torch.einsum("tbhd,tbhkd->tbhk", keys, rows) / norm
    w = torch.softmax(top.masked_fill(~ok, float("-inf")).masked_fill(~ok.any(-1, keepdim=True), 0.0), -1)
    w = torch.where(ok, w, torch.zeros_like(w))
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    return torch.einsum("tbhk,tbhkd->tbhd", w, rows).reshape(T, B, -1), strength


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=8, help="alternations per thread count (>= 1)")
    args = ap.parse_args()
    try:
        threads = [int(x) for x in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if args.rounds < 1 or min(threads) < 1:
        ap.error("--rounds and every --threads value must be >= 1")
    torch.manual_seed(0)
    m = TVTMemory(HID, 64, 8, 363, word=WORD)
    mem = torch.tanh(torch.randn(B, R, WORD))
    unit = F.normalize(mem, dim=-1)
    valid = window_valid(torch.arange(R)[None].expand(B, -1), (torch.arange(T) + 1000)[:, None].expand(-1, B), 1000)
    h0 = torch.randn(T, B, HID)

    def run(kind: str):
        h = h0.clone().requires_grad_()
        if kind == "torch":
            vec, strength = torch_sparse_read(m, h, mem, valid, unit)
        else:
            r = m.read(h, mem, valid, unit=unit if kind == "kernels" else None)
            vec, strength = r.vec, r.strength
        (vec.square().sum() + strength.sum()).backward()
        return vec.detach(), h.grad

    ref = run("dense")
    for kind in ("torch", "kernels"):
        v, g = run(kind)
        print(f"{kind:8s} vs dense: max |vec diff| {(v - ref[0]).abs().max():.1e}, max |grad diff| {(g - ref[1]).abs().max():.1e}")
    keys = F.normalize(torch.randn(T, B, 2, WORD), dim=-1)
    cos = torch.einsum("tbhd,brd->tbhr", keys, unit).contiguous()
    idx = np.empty((T, B, 2, 50), np.int64)
    val = np.empty((T, B, 2, 50), np.float32)
    sel = {"torch.topk": lambda: cos.masked_fill(~valid[:, :, None], float("-inf")).topk(50, dim=-1),
           "topk_valid": lambda: kernels.topk_valid(cos.numpy(), valid.numpy(), idx, val, 50)}
    for th in threads:
        torch.set_num_threads(th)
        times: dict[str, list[float]] = {k: [] for k in ("dense", "torch", "kernels", *sel)}
        for _ in range(args.rounds):
            for kind in ("dense", "torch", "kernels"):
                t = time.perf_counter()
                for _ in range(3):
                    run(kind)
                times[kind].append((time.perf_counter() - t) / 3 * 1e3)
            for name, f in sel.items():
                t = time.perf_counter()
                for _ in range(3):
                    f()
                times[name].append((time.perf_counter() - t) / 3 * 1e3)
        for k, v in times.items():
            print(f"threads {th}  {k:10s} best {min(v):6.1f} ms  median {statistics.median(v):6.1f} ms")
        print(f"threads {th}  read fwd+bwd torch / kernels: best {min(times['torch']) / min(times['kernels']):.2f}x, "
              f"median {statistics.median(times['torch']) / statistics.median(times['kernels']):.2f}x; "
              f"selection torch.topk / topk_valid: best {min(times['torch.topk']) / min(times['topk_valid']):.2f}x")


if __name__ == "__main__":
    main()
