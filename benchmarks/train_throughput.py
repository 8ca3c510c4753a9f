"""End-to-end training throughput: rollout, lake write, replay, PPO update.

Trains fresh runs (hidden 256, default config) for a few updates on a temporary lake and reports
env-steps/s (B envs x steps per wall second, everything included, warm-up updates excluded: one,
or for TVT enough to fill the memory of earlier shards), the time shares of the rollout, the
learner and the lake round trip, and the model FLOP/s against a large fp32 and bf16 matmul
measured in the same script. Sections (all in the default run, a few minutes on 2 cores):

1. conditions x grids (default baseline, tvt, full at 10 and 30): TVT as a ratio of baseline;
2. threads: baseline at 1 and 2 torch threads, and a sweep of one 1-thread worker per core
   against one worker (aggregate env-steps/s);
3. scaling: baseline env-steps/s at num_envs 8, 16, 32, 64 and at 5 and 10 agents;
4. ``tvt-parts`` (not in the default run): where TVT's time goes, per update, at each grid:
   ``baseline``, ``memory`` (the TVT agent's memory, reads and losses, no transports), ``tvt``, and
   ``tvt`` with the memory read stubbed out (``tvt-stub-read``: no selection, no weighted sum; the
   keys and strengths still run), each split into the rollout, the PPO epochs, the replay passes
   over earlier shards and the lake. The stubbed run is a diagnostic, not a method: with reads of
   zero, its learned transports and so its replay passes differ (their count is printed).

5. ``tvt-speed`` (not in the default run): ``tvt`` and ``full`` in TVT's old method and the new
   ones (``--tvt-methods old,select,new``: docs/tvt-speed.md) against ``baseline``, as ratios,
   every run's updates interleaved one by one in one process (``--repeats`` per run). A method
   name ending in 0 (``old0``, ``select0``, ``new0``) runs that method with the code of before
   issue 33's exact speed-ups (``engineering_of_old``: the same bits, slower), so
   ``--tvt-methods old0,old,new0,new`` gives their before/after in one process.
   ``new-rK`` (or ``select-rK``) is that method with the acting read refreshed every K steps
   (``tvt_read_refresh = K``); its records add the ratio to the run without it.
6. ``tvt-exact`` (not in the default run): each of those exact speed-ups on its own, the code it
   replaced and its own timed alternately on a run's shapes (ms a call, calls an update).
7. ``tvt-acting`` (not in the default run): the acting read alone, one rollout step of it, with
   ``tvt_read_refresh`` 1 and each K of ``--refresh`` (ms a step).

    python benchmarks/train_throughput.py --algos ppo,drqn [--repeats 2]   # learners side by side

    python benchmarks/train_throughput.py --sections tvt-speed --grids 10,30 --repeats 5 [--tvt-methods old,new]
    python benchmarks/train_throughput.py --sections tvt-speed --grids 10 --conditions tvt,full --repeats 7 \
        --tvt-methods old0,old,new0,new --threads 1 --precision bf16     # issue 33's before/after

    python benchmarks/train_throughput.py [--grids 10,30] [--conditions baseline,tvt,full]
        [--updates 6] [--precision auto|fp32|bf16] [--sections main,threads,scaling] [--json]

    python benchmarks/train_throughput.py --sections tvt-parts [--grids 10,30] [--updates 4]

``--json`` prints, as its last line, a JSON list of records ``{"section", "grid_size",
"condition", "precision", "threads", "num_envs", "n_agents", "env_steps_per_s", "lake_share",
"rollout_share", "learn_share", "model_gflops", "matmul_gflops", "matmul_bf16_gflops", ...}``
(sweep records: ``workers``, ``aggregate_env_steps_per_s``, ``efficiency``; ``tvt-parts`` records
add ``s_per_update`` with ``rollout``, ``ppo`` (the learner less its replay passes: the PPO epochs
and, for ``tvt``, the transports), ``replay``, ``lake`` and ``total``, and ``replay_passes``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import sys
import tempfile
import time

import torch

from karmic.training.config import MODES, PRECISIONS
from karmic.training.ppo import RolloutState, matmul_rate


def matmul_gflops(n: int = 2048, reps: int = 3, trials: int = 5, dtype=torch.float32) -> float:
    """A large square matmul's GFLOP/s, best of several trials (the closest to the peak)."""
    return matmul_rate(n, n, n, dtype, trials, reps) / 1e9


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


@contextlib.contextmanager
def stubbed_read():
    """TVT's memory read replaced by zeros of its shapes (``tvt-parts``): the keys and strengths
    still run, the selection over the memory rows and the weighted sum do not."""
    from karmic.tvt.memory import Read, TVTMemory

    def read(self, h, mem, valid, unit=None):
        T, B, _ = h.shape
        k = min(self.top_k, mem.shape[1])
        self.keys(h)
        strength = torch.nn.functional.softplus(self.strengths(h))
        return Read(h.new_zeros(T, B, self.read_dim), h.new_zeros(T, B, self.heads, k), strength,
                    torch.zeros(T, B, self.heads, k, dtype=torch.int64))

    orig = TVTMemory.read
    TVTMemory.read = read
    try:
        yield
    finally:
        TVTMemory.read = orig


@contextlib.contextmanager
def engineering_of_old():
    """TVT's code as it ran before issue 33's exact speed-ups, for before/after ratios in one
    process (``--tvt-methods old0,new0``) and the tests that check the speed-ups change no bit:
    the gathered sums' loops of old (``kernels.gather_sum_v0``, ``gather_sum_at_v0``), the
    learner's bank laid out as ``np.concatenate`` left it (every read copied it), the
    reconstruction's target converted in every minibatch, and the stored selection gathered and
    transposed in every minibatch."""
    from karmic.training import tvt_run
    from karmic.tvt import kernels
    from karmic.tvt.harvest import memory_bank
    from karmic.tvt.memory import Selection, _Gathered, _GatheredAt

    def bank(self, shards):
        words, times = memory_bank(shards, self.S, self.word)
        w = torch.from_numpy(words).to(self.device)
        return w, torch.nn.functional.normalize(w, dim=-1), torch.from_numpy(times).to(self.device)

    def obs_flat(self, obs, idx):
        o = obs[idx].transpose(0, 1)
        return o.reshape(*o.shape[:2], -1).float() / 255.0

    def init(self, cfg, bank_, shard):
        init_now(self, cfg, bank_, shard)
        if self.sel is not None:  # back to (rows, L, H, k), gathered and transposed per minibatch
            self.sel = tuple(x.transpose(0, 1).contiguous() for x in self.sel)

    def memory(self, idx):
        if self.sel is None:
            return memory_now(self, idx)
        rows, ok = self.sel
        return (self.words, None, self.unit, Selection(rows[idx].transpose(0, 1).contiguous(),
                                                       ok[idx].transpose(0, 1).contiguous(), self.slots[idx]))

    LM = tvt_run.LearnerMemory
    init_now, memory_now = LM.__init__, LM.memory
    saved = (dict(_Gathered.KERNELS), dict(_GatheredAt.KERNELS), tvt_run.TVTRun._bank, LM.obs_flat, LM.__init__,
             LM.memory)
    _Gathered.KERNELS = {"dot": (kernels.gather_dot, kernels.gather_sum_v0),
                         "sum": (kernels.gather_sum_v0, kernels.gather_dot)}
    _GatheredAt.KERNELS = {"dot": (kernels.gather_dot_at, kernels.gather_sum_at_v0),
                           "sum": (kernels.gather_sum_at_v0, kernels.gather_dot_at)}
    tvt_run.TVTRun._bank, LM.obs_flat, LM.__init__, LM.memory = bank, obs_flat, init, memory
    try:
        yield
    finally:
        _Gathered.KERNELS, _GatheredAt.KERNELS, tvt_run.TVTRun._bank, LM.obs_flat, LM.__init__, LM.memory = saved


def bench(grid: int, condition: str, updates: int, num_envs: int, threads: int,
          stub: bool = False, precision: str = "auto", n_agents: int = 5, stub_read: bool = False) -> dict:
    from karmic.training.ppo import TrainConfig, Trainer

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as lake, (stubbed_read() if stub_read else contextlib.nullcontext()):
        overrides = {} if n_agents == 5 else {"n_agents": n_agents}
        cfg = TrainConfig(mode=condition, grid_size=grid, seed=0, num_envs=num_envs,
                          total_steps=10**9, checkpoint_every=10**6, threads=threads,
                          precision=precision, env_overrides=overrides)
        # TVT: measure once the learner's memory spans as many earlier shards as it will
        warm = 1 + (math.ceil(cfg.memory_size / cfg.num_steps) if MODES[condition][0] else 0)
        marks: list[tuple[float, int, dict, float, int]] = []
        replay = [0.0, 0]  # seconds in the replay passes, passes

        tr = Trainer(cfg, lake, env=StubEnv(num_envs) if stub else None,
                     on_update=lambda i: marks.append(
                         (time.perf_counter(), i["global_step"], dict(i["timing"]), *replay)))
        learn_replay = tr.learn_replay

        def timed_replay(shard, added):
            t = time.perf_counter()
            out = learn_replay(shard, added)
            replay[0] += time.perf_counter() - t
            replay[1] += 1
            return out

        tr.learn_replay = timed_replay  # TVTRun.learn calls the trainer's attribute
        tr.run(stop_after=warm + updates, at_boundary=False)
        (t0, s0, tm0, r0, n0), (t1, s1, tm1, r1, n1) = marks[warm - 1], marks[-1]
        dt = t1 - t0
        steps = s1 - s0
        timing = {k: tm1[k] - tm0[k] for k in tm1}
        total = sum(timing.values())
        agent_steps = steps * tr.N
        f = tr.agent.flops_per_step()
        # rollout: one forward per agent-step; learning: epochs x (forward + backward ~ 3 forwards)
        flops = agent_steps * f * (1 + 3 * cfg.update_epochs)
        n = len(marks) - warm
        return {
            "grid_size": grid,
            "condition": condition + ("-stub-env" if stub else "") + ("-stub-read" if stub_read else ""),
            "precision": cfg.precision,
            "threads": threads,
            "env_steps_per_s": round(steps / dt, 1),
            "lake_share": round(timing["lake"] / total, 4),
            "rollout_share": round(timing["rollout"] / total, 4),
            "learn_share": round(timing["learn"] / total, 4),
            "model_gflops": round(flops / dt / 1e9, 2),
            "params": sum(p.numel() for p in tr.agent.parameters()),
            "num_envs": num_envs,
            "n_agents": tr.N,
            "updates": updates,
            "s_per_update": {"rollout": round(timing["rollout"] / n, 4),
                             "ppo": round((timing["learn"] - (r1 - r0)) / n, 4),
                             "replay": round((r1 - r0) / n, 4), "lake": round(timing["lake"] / n, 4),
                             "total": round(dt / n, 4)},
            "replay_passes": round((n1 - n0) / n, 2),
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


def _worker(args, q) -> None:
    q.put(bench(*args))


def sweep(workers: int, grid: int, updates: int, num_envs: int, precision: str) -> dict:
    """``workers`` baseline runs at once, one process and one torch thread each."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=((grid, "baseline", updates, num_envs, 1, False, precision), q))
             for _ in range(workers)]
    for p in procs:
        p.start()
    recs = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return {"section": "sweep", "workers": workers, "grid_size": grid, "condition": "baseline",
            "precision": recs[0]["precision"], "threads": 1, "num_envs": num_envs,
            "aggregate_env_steps_per_s": round(sum(r["env_steps_per_s"] for r in recs), 1)}


# TVT's methods (docs/tvt-speed.md): the TrainConfig fields each sets. A name ending in 0 runs
# the same method with the code of before issue 33's exact speed-ups (``engineering_of_old``).
TVT_METHODS = {
    "old": {},
    "select": {"tvt_select": "rollout"},
    "new": {"tvt_select": "rollout", "tvt_learn": "lagged"},
}
TVT_METHODS.update({f"{k}0": v for k, v in list(TVT_METHODS.items())})


def tvt_method(name: str) -> dict | None:
    """The TrainConfig fields of a ``--tvt-methods`` name: one of TVT_METHODS, or ``new-rK`` /
    ``select-rK`` (that method with the acting read refreshed every K steps, ``tvt_read_refresh``);
    None: unknown."""
    base, _, r = name.partition("-r")
    if r:
        return {**TVT_METHODS[base], "tvt_read_refresh": int(r)} if base in ("new", "select") and r.isdigit() \
            and int(r) >= 1 else None
    return TVT_METHODS.get(name)


def _code_of_old(run: str) -> bool:
    """A tvt-speed run (``cond-method``) whose method runs with the code of before the exact speed-ups."""
    method = run.partition("-")[2]
    return method.endswith("0") and method in TVT_METHODS


def tvt_speed(args, out) -> list[dict]:
    """The ``tvt-speed`` section: ``tvt`` and ``full`` in each of ``--tvt-methods`` (old: the method
    of old; select: the learner reads the rows the rollout selected; new: that and the lagged
    shard queue) against ``baseline``, at each grid. One trainer per run, all alive at once: each
    is warmed up (TVT: until its memory spans the earlier shards and, for ``lagged``, its queue
    has started learning), then ``--repeats`` rounds in which every trainer makes one update, in
    an order rotated each round, timed end to end (rollout, lake, learner). On a shared machine
    the load drifts; interleaving update by update puts every run under the same drift. Speed is
    reported as baseline's seconds per update over the run's (the same env steps per update):
    the median of the per-round ratios, and the ratio of the summed times; by wall time and by
    the process's CPU time (with one torch thread, the work an update did: on a loaded machine
    it moves far less than wall time). A run with its code of old beside it (``new`` and
    ``new0``) also gets the median per-round ratio of their CPU times."""
    import statistics

    from karmic.training import ppo
    from karmic.training.ppo import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    methods = args.tvt_methods.split(",")
    records = []
    for g in [int(x) for x in args.grids.split(",")]:
        with tempfile.TemporaryDirectory() as lake:
            runs: dict[str, Trainer] = {}
            conds = [c for c in args.conditions.split(",") if c in ("tvt", "full")]
            names = ["baseline"] + [f"{c}-{m}" for c in conds for m in methods]
            for name in names:
                cond, _, method = name.partition("-")
                cfg = TrainConfig(mode=cond, grid_size=g, seed=0, num_envs=args.num_envs, total_steps=10**9,
                                  checkpoint_every=10**6, threads=args.threads, precision=args.precision,
                                  run_id=f"speed-{name}", **(tvt_method(method) or {}))
                if method.startswith("new") and args.tvt_lag is not None:
                    cfg.tvt_lag = args.tvt_lag
                tr = Trainer(cfg, lake)
                warm = 1 + (math.ceil(cfg.memory_size / cfg.num_steps) if MODES[cond][0] else 0)
                if MODES[cond][0] and args.tvt_warmup:
                    warm = args.tvt_warmup
                with engineering_of_old() if _code_of_old(name) else contextlib.nullcontext():
                    tr.run(stop_after=warm, at_boundary=False)
                runs[name] = tr
            times: dict[str, list[float]] = {n: [] for n in names}
            cpu: dict[str, list[float]] = {n: [] for n in names}  # the process's CPU seconds
            for rep in range(args.repeats):
                order = names[rep % len(names):] + names[:rep % len(names)]
                for name in order:
                    tr = runs[name]
                    loop = tr.loop
                    ppo.RolloutState = lambda *a, _loop=loop, **k: _loop  # run() keeps the running loop
                    try:
                        with engineering_of_old() if _code_of_old(name) else contextlib.nullcontext():
                            t, c = time.perf_counter(), time.process_time()
                            tr.run(stop_after=1, at_boundary=False)
                            times[name].append(time.perf_counter() - t)
                            cpu[name].append(time.process_time() - c)
                    finally:
                        ppo.RolloutState = RolloutState
            steps = args.num_envs * runs["baseline"].cfg.num_steps
            base = times["baseline"]
            base_cpu = cpu["baseline"]
            for name in names:
                ratios = [b / x for b, x in zip(base, times[name], strict=True)]
                r = {"section": "tvt-speed", "grid_size": g, "run": name, "precision": runs[name].cfg.precision,
                     "threads": args.threads, "num_envs": args.num_envs, "repeats": args.repeats,
                     "s_per_update": [round(x, 4) for x in times[name]],
                     "cpu_s_per_update": [round(x, 4) for x in cpu[name]],
                     "env_steps_per_s": round(steps * len(times[name]) / sum(times[name]), 1),
                     "vs_baseline_median": round(statistics.median(ratios), 3),
                     "vs_baseline_total": round(sum(base) / sum(times[name]), 3),
                     # by CPU time (1 torch thread: the work done, less moved by other processes' load)
                     "vs_baseline_cpu_median": round(statistics.median(
                         [b / x for b, x in zip(base_cpu, cpu[name], strict=True)]), 3),
                     "vs_baseline_cpu_total": round(sum(base_cpu) / sum(cpu[name]), 3)}
                if _code_of_old(name) or f"{name}0" in names:  # the exact speed-ups: this run / its code of old
                    ref = name if _code_of_old(name) else f"{name}0"
                    if ref in names and ref != name:
                        r["vs_code_of_old_cpu_median"] = round(statistics.median(
                            [b / x for b, x in zip(cpu[ref], cpu[name], strict=True)]), 3)
                cond, _, method = name.partition("-")
                plain = f"{cond}-{method.partition('-r')[0]}"
                if "-r" in method and plain in names:  # the refreshed read: its run / the run without it
                    r["vs_unrefreshed_cpu_median"] = round(statistics.median(
                        [b / x for b, x in zip(cpu[plain], cpu[name], strict=True)]), 3)
                    r["vs_unrefreshed_median"] = round(statistics.median(
                        [b / x for b, x in zip(times[plain], times[name], strict=True)]), 3)
                records.append(r)
                extra = (f"; x its code of old (CPU, median) {r['vs_code_of_old_cpu_median']:.2f}"
                         if "vs_code_of_old_cpu_median" in r else "")
                if "vs_unrefreshed_cpu_median" in r:
                    extra += (f"; x {plain} (median, CPU) {r['vs_unrefreshed_cpu_median']:.2f}"
                              f" (wall {r['vs_unrefreshed_median']:.2f})")
                print(f"grid {g:>2} {name:<12} {r['env_steps_per_s']:>7.0f} env-steps/s  x baseline: "
                      f"median {r['vs_baseline_median']:.2f}, total {r['vs_baseline_total']:.2f}; by CPU time: "
                      f"median {r['vs_baseline_cpu_median']:.2f}, total {r['vs_baseline_cpu_total']:.2f}{extra}  "
                      f"(s/update {' '.join(f'{x:.2f}' for x in times[name])}; CPU s "
                      f"{' '.join(f'{x:.2f}' for x in cpu[name])})", file=out, flush=True)
    return records


def tvt_exact(args, out) -> list[dict]:
    """The ``tvt-exact`` section: each of issue 33's exact speed-ups on its own, the replaced code
    and its replacement timed alternately on the shapes of a 10x10 / 30x30 run (16 envs x 5
    agents, 1,100 bank rows, 1,000 ring rows, minibatches of 80 sequences of 25 steps; the
    shapes do not depend on the grid): milliseconds a call (median of ``--repeats`` x 10
    alternations, caches evicted before each call as the rest of an update evicts them), and
    the calls an update makes (lagged learner: 16 minibatches and 4 of the proximal pass)."""
    import statistics

    import numpy as np

    from karmic.tvt import kernels

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    S, R, D, T, mb, H, k, rows = 80, 1100, 32, 25, 80, 2, 50, 320
    bank_np = np.swapaxes(rng.standard_normal((R, S, D)).astype(np.float32), 0, 1)  # as np.concatenate lays it
    bank_t = torch.from_numpy(bank_np)
    bank_c = bank_t.contiguous()
    w = rng.random((T, mb, H, k)).astype(np.float32)
    idx = rng.integers(0, R, (T, mb, H, k))
    slots = rng.permutation(S)
    out_sum = np.empty((T, mb, H, D), np.float32)
    ring = rng.standard_normal((S, 1000, D)).astype(np.float32)
    w1, idx1, out1 = w[:1], rng.integers(0, 1000, (1, S, H, k)), np.empty((1, S, H, D), np.float32)
    obs = torch.from_numpy(rng.integers(0, 2, (rows, T, 11, 11, 3), dtype=np.uint8))
    flat_tm = obs.transpose(0, 1).reshape(T, rows, -1).float() / 255.0
    mbi = torch.from_numpy(rng.permutation(rows)[:mb])
    sel = torch.from_numpy(rng.integers(0, R, (rows, T, H, k)))
    sel_tm = sel.transpose(0, 1).contiguous()
    junk = torch.zeros(8 * 2**20)
    cases = {  # name: (old, new, calls an update)
        "gather_sum_at (learner read fwd + dot's bwd)": (
            lambda: kernels.gather_sum_at_v0(w, idx, out_sum, bank_c.numpy(), slots[:mb]),
            lambda: kernels.gather_sum_at(w, idx, out_sum, bank_c.numpy(), slots[:mb]), 36),
        "gather_sum (acting read)": (lambda: kernels.gather_sum_v0(w1, idx1, out1, ring),
                                     lambda: kernels.gather_sum(w1, idx1, out1, ring), 100),
        "bank made contiguous in each learner read (words + unit)": (
            lambda: (bank_t.contiguous(), bank_t.contiguous()), lambda: (bank_c.contiguous(), bank_c.contiguous()), 20),
        "reconstruction target of a minibatch": (
            lambda: obs[mbi].transpose(0, 1).reshape(T, mb, -1).float() / 255.0,
            lambda: flat_tm[:, mbi], 16),
        "stored selection of a minibatch (rows + ok)": (
            lambda: (sel[mbi].transpose(0, 1).contiguous(), (sel[mbi] > 0).transpose(0, 1).contiguous()),
            lambda: (sel_tm.index_select(1, mbi), sel_tm.index_select(1, mbi) > 0), 20),
    }
    records = []
    for name, (f_old, f_new, calls) in cases.items():
        f_old(), f_new()
        t_old, t_new = [], []
        for _ in range(10 * args.repeats):
            for f, acc in ((f_old, t_old), (f_new, t_new)):
                junk.add_(1.0)
                t = time.perf_counter()
                f()
                acc.append(time.perf_counter() - t)
        a, b = statistics.median(t_old) * 1e3, statistics.median(t_new) * 1e3
        r = {"section": "tvt-exact", "part": name, "old_ms": round(a, 3), "new_ms": round(b, 3),
             "speedup": round(a / b, 2), "calls_per_update": calls, "s_saved_per_update": round((a - b) * calls / 1e3, 4)}
        records.append(r)
        print(f"{name:<58} old {a:7.3f} ms  new {b:7.3f} ms  {a / b:5.2f}x  x{calls}/update: "
              f"{r['s_saved_per_update']:.3f} s/update saved", file=out, flush=True)
    return records


def tvt_acting(args, out) -> list[dict]:
    """The ``tvt-acting`` section: the acting read alone, one rollout step of it at a run's shapes
    (16 envs x 5 agents, a full 1,000-row ring, 2 heads, top 50, hidden 256; the shapes do not
    depend on the grid), with ``tvt_read_refresh`` K = 1 (every step scores the whole ring) and
    each K of ``--refresh`` (default 4, 8): per step the candidate rows when due (``TVTRun.
    acting_memory``), the read (``TVTMemory.read``), the kept selection and the step's ring
    write; ms a step, the median over ``--repeats`` x K-step cycles (as many steps for each K),
    K-step blocks of the methods alternated, caches evicted before each step as the rest of a
    rollout step evicts them."""
    import statistics

    import numpy as np

    from karmic.training.config import TrainConfig
    from karmic.training.tvt_run import TVTRun
    from karmic.tvt.memory import TVTMemory

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    S, R, hidden = 80, 1000, 256
    ks = [1] + [int(k) for k in args.refresh.split(",")]
    mod = TVTMemory(hidden=hidden, latent=64, n_actions=8, obs_dim=363)
    runs = {}
    for k in ks:
        cfg = TrainConfig(mode="tvt", memory_size=R, tvt_select="rollout", tvt_read_refresh=k)
        run = TVTRun(cfg, S, mod)
        run.ring.load(torch.tanh(torch.randn(S, R, mod.word)).numpy(), np.arange(R))
        runs[k] = run
    words = torch.tanh(torch.randn(64, S, mod.word))
    hs = torch.randn(64, 1, S, hidden)
    junk = torch.zeros(8 * 2**20)
    cycle = max(ks) * 2  # steps per block: whole cycles of every K
    per_step: dict[int, list[float]] = {k: [] for k in ks}
    tau = {k: R for k in ks}
    with torch.no_grad():
        for rep in range(args.repeats + 1):  # the first round warms numba and the allocator up
            for k in ks[rep % len(ks):] + ks[:rep % len(ks)]:
                run = runs[k]
                for _ in range(cycle):
                    t = tau[k]
                    junk.add_(1.0)
                    t0 = time.perf_counter()
                    mem = run.acting_memory(t)
                    rd = mod.read(hs[t % 64], *mem)
                    run.keep_selection(rd, t)
                    run.ring.write(words[t % 64], t)
                    if rep:
                        per_step[k].append(time.perf_counter() - t0)
                    tau[k] = t + 1
    full = statistics.median(per_step[1]) * 1e3
    records = []
    for k in ks:
        ms = statistics.mean(per_step[k]) * 1e3  # the mean: refresh steps and the others, in their share
        med = statistics.median(per_step[k]) * 1e3
        r = {"section": "tvt-acting", "refresh": k, "ms_per_step_mean": round(ms, 3), "ms_per_step_median": round(med, 3),
             "vs_refresh_1": round(statistics.mean(per_step[1]) / statistics.mean(per_step[k]), 2),
             "steps": len(per_step[k])}
        records.append(r)
        print(f"acting read, tvt_read_refresh {k:>2}: {ms:6.3f} ms a step (mean; median {med:.3f}; "
              f"K = 1's median {full:.3f}) = {r['vs_refresh_1']:.2f}x faster than K = 1, "
              f"{r['steps']} steps", file=out, flush=True)
    return records


def _line(r: dict) -> str:
    return (f"grid {r['grid_size']:>2} {r['condition']:<10} {r['precision']} t{r['threads']} "
            f"B{r['num_envs']:<3} N{r['n_agents']:<2} {r['env_steps_per_s']:>8.0f} env-steps/s  "
            f"lake {100 * r['lake_share']:4.1f}%  rollout {100 * r['rollout_share']:4.1f}%  "
            f"learn {100 * r['learn_share']:4.1f}%  model {r['model_gflops']:.1f} GFLOP/s "
            f"(matmul fp32 {r['matmul_gflops']:.0f}, bf16 {r['matmul_bf16_gflops']:.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="10,30")
    ap.add_argument("--conditions", default="baseline,tvt,full")
    ap.add_argument("--updates", type=int, default=6, help="measured updates per run")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto",
                    help="auto | fp32 | bf16, or a list (fp32,bf16): each condition in each, in turn")
    ap.add_argument("--sections", default="main,threads,scaling")
    ap.add_argument("--stub-env", action="store_true",
                    help="random observations instead of Harvest: learner + lake cost only")
    ap.add_argument("--algos", default=None,
                    help="compare learners instead, e.g. ppo,drqn (baseline condition, records carry algo)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="with --algos: alternations per grid; tvt-speed: measured updates per run")
    ap.add_argument("--tvt-methods", default="old,new",
                    help="tvt-speed: TVT methods to time, of " + ", ".join(TVT_METHODS)
                    + " (ending in 0: the code of before issue 33's exact speed-ups), or new-rK / select-rK "
                    "(the acting read refreshed every K steps: tvt_read_refresh = K)")
    ap.add_argument("--tvt-warmup", type=int, default=0,
                    help="tvt-speed: warm-up updates of a TVT run [default 0: until its memory spans the "
                         "earlier shards; fewer: a smaller bank than in a long run, which flatters the old method]")
    ap.add_argument("--tvt-lag", type=int, default=None,
                    help="tvt-speed: tvt_lag of the new method [default: the memory's span]; a shorter lag "
                         "starts its learning sooner (the cost of an update does not depend on it)")
    ap.add_argument("--refresh", default="4,8",
                    help="tvt-acting: the tvt_read_refresh values timed against 1")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        [int(g) for g in args.grids.split(",")]
    except ValueError:
        ap.error(f"--grids takes integers like 10,30, got {args.grids!r}")
    if min(args.updates, args.num_envs, args.threads, args.repeats) < 1:
        ap.error("--updates, --num-envs, --threads and --repeats must be >= 1")
    if args.tvt_warmup < 0 or (args.tvt_lag is not None and args.tvt_lag < 0):
        ap.error("--tvt-warmup and --tvt-lag must be >= 0")
    if args.tvt_warmup and (args.tvt_lag is None or args.tvt_lag >= args.tvt_warmup):
        ap.error("--tvt-warmup needs a --tvt-lag below it (the lagged queue learns in every measured update)")
    torch.set_num_threads(args.threads)
    if args.algos:
        records = compare_learners(args)
        if args.json:
            print(json.dumps(records))
        return
    out = sys.stderr if args.json else sys.stdout
    sections = set(args.sections.split(","))
    unknown = sections - {"main", "threads", "scaling", "tvt-parts", "tvt-speed", "tvt-exact", "tvt-acting"}
    if unknown:
        ap.error(f"unknown --sections {', '.join(sorted(unknown))}; "
                 "choose from main, threads, scaling, tvt-parts, tvt-speed, tvt-exact, tvt-acting")
    bad = {m for m in args.tvt_methods.split(",") if tvt_method(m) is None}
    if bad:
        ap.error(f"unknown --tvt-methods {', '.join(sorted(bad))}; choose from {', '.join(TVT_METHODS)}")
    bad = set(args.conditions.split(",")) - set(MODES)
    if bad:
        ap.error(f"unknown --conditions {', '.join(sorted(bad))}; choose from {', '.join(MODES)}")
    bad = set(args.precision.split(",")) - set(PRECISIONS)
    if bad:
        ap.error(f"unknown --precision {', '.join(sorted(bad))}; choose from {', '.join(PRECISIONS)}")
    records = []

    def run(section: str, *a, **kw) -> dict:
        torch.set_num_threads(args.threads)
        peak = matmul_gflops()  # next to each run: the load on the machine drifts
        peak16 = matmul_gflops(dtype=torch.bfloat16)
        r = {"section": section, **bench(*a, **kw)}
        r["matmul_gflops"], r["matmul_bf16_gflops"] = round(peak, 1), round(peak16, 1)
        records.append(r)
        print(_line(r), file=out, flush=True)
        return r

    precisions = args.precision.split(",")
    if "main" in sections:
        for g in [int(x) for x in args.grids.split(",")]:
            for c in args.conditions.split(","):
                for prec in precisions:
                    r = run("main", g, c, args.updates, args.num_envs, args.threads, args.stub_env, prec)
                    base = [b for b in records if b["section"] == "main" and b["grid_size"] == g
                            and b["condition"] == "baseline" and b["precision"] == r["precision"]]
                    if c != "baseline" and base:
                        r["vs_baseline"] = round(r["env_steps_per_s"] / base[-1]["env_steps_per_s"], 3)
                        print(f"  {c} / baseline at {g}x{g}, {r['precision']}: {r['vs_baseline']:.2f}x",
                              file=out, flush=True)
    args.precision = precisions[-1]
    if "threads" in sections:
        by = {t: run("threads", 10, "baseline", args.updates, args.num_envs, t, False, args.precision)
              for t in (1, 2)}
        best = max(by, key=lambda t: by[t]["env_steps_per_s"])
        print(f"  threads: 1 -> {by[1]['env_steps_per_s']:.0f}, 2 -> {by[2]['env_steps_per_s']:.0f} "
              f"env-steps/s: {best} is faster for one run", file=out, flush=True)
        one = sweep(1, 10, args.updates, args.num_envs, args.precision)
        two = sweep(2, 10, args.updates, args.num_envs, args.precision)
        two["efficiency"] = round(two["aggregate_env_steps_per_s"] / one["aggregate_env_steps_per_s"], 3)
        records += [one, two]
        print(f"  sweep, one 1-thread worker per core: 1 worker {one['aggregate_env_steps_per_s']:.0f}, "
              f"2 workers {two['aggregate_env_steps_per_s']:.0f} env-steps/s in all: "
              f"{two['efficiency']:.2f}x", file=out, flush=True)
    if "scaling" in sections:
        for b in (8, 16, 32, 64):
            run("num_envs", 10, "baseline", max(2, args.updates // 2), b, args.threads, False, args.precision)
        for n in (5, 10):
            run("agents", 10, "baseline", max(2, args.updates // 2), args.num_envs, args.threads, False,
                args.precision, n_agents=n)
    if "tvt-parts" in sections:
        tvt_parts(args, run, out)
    if "tvt-exact" in sections:
        records += tvt_exact(args, out)
    if "tvt-acting" in sections:
        records += tvt_acting(args, out)
    if "tvt-speed" in sections:
        if len(precisions) > 1:
            ap.error("--sections tvt-speed takes one --precision")
        records += tvt_speed(args, out)
    if args.json:
        print(json.dumps(records))


def tvt_parts(args, run, out) -> None:
    """The ``tvt-parts`` section: per-update seconds of baseline, memory, tvt and tvt without
    its read, each part of an update and the run's speed as a ratio of baseline's."""
    prec = args.precision
    for g in [int(x) for x in args.grids.split(",")]:
        rows = {}
        for name, cond, sr in (("baseline", "baseline", False), ("memory", "memory", False),
                               ("tvt", "tvt", False), ("tvt-stub-read", "tvt", True)):
            r = run("tvt-parts", g, cond, args.updates, args.num_envs, args.threads, False, prec, stub_read=sr)
            rows[name] = r
        print(f"  where TVT's time goes at {g}x{g}, {rows['tvt']['precision']}, seconds per update "
              f"({args.num_envs} envs x 100 steps, {args.updates} updates each):", file=out)
        for name, r in rows.items():
            p = r["s_per_update"]
            print(f"    {name:<14} total {p['total']:.3f}  rollout {p['rollout']:.3f}  ppo {p['ppo']:.3f}  "
                  f"replay {p['replay']:.3f} ({r['replay_passes']:.1f} passes)  lake {p['lake']:.3f}  "
                  f"= {r['env_steps_per_s'] / rows['baseline']['env_steps_per_s']:.2f}x baseline",
                  file=out, flush=True)


if __name__ == "__main__":
    main()
