"""Recurrent PPO on the batched Harvest env, trained from trajectory shards replayed from the lake.

One update (CleanRL ``ppo_atari_lstm`` structure, with the recurrent state handled properly):

1. **Rollout**: ``num_steps`` steps on ``B`` envs x ``N`` agents (``S = B*N`` slots) with one
   shared :class:`~karmic.agents.KarmicAgent`; actions are sampled from a dedicated torch
   generator. Buffers are preallocated, time-major ``(T, S, ...)``. The LSTM state before every
   sequence of ``seq_len`` steps is stored.
2. **Lake**: the rollout is written as a trajectory shard (``pipelines.trajectories``) and read
   back; the learner trains from what it read. Shards older than the last ``keep_shards`` are
   removed unless ``keep_trajectories``.
3. **TVT** (conditions whose agent has the TVT memory): the one seam, :class:`karmic.training.tvt_run.TVTRun`,
   which the loop calls at each acting step (the memory read), each rollout step (the read, the
   word written, the role tags) and each update (the kept earlier shards, the transports into
   this shard's rewards, the memory bank the learner reads, and the replay passes over earlier
   shards that received value).
4. **GAE** (lambda) on the time-major rewards and values, bootstrapped from the value after the
   last step; an episode start at t+1 cuts the return at t.
5. **PPO**: ``update_epochs`` epochs over minibatches of whole sequences (rows of the shard),
   each run from its stored LSTM state, with the state zeroed at episode starts. Clipped policy
   and value losses, entropy bonus, global gradient clipping; for a TVT agent, the memory's
   reconstruction and read-strength losses (``TVTRun.learner_memory``).

Episodes: all envs finish together every ``max_steps``; a *round* is one episode of every env.
Round ``r`` resets env ``b`` with a seed derived from ``(seed, r, b)`` and numbers its episode
``r * B + b``; ``global_step`` of a step is the env steps of the run before it,
``(r * max_steps + t) * B``. Events and episode rows of a round are written when it ends.
Rollouts are aligned with rounds (``num_steps`` divides ``max_steps`` or is a multiple of it) and
a run always ends at a round boundary, so ``total_steps`` is rounded up to whole rounds.

Checkpoints (``pipelines.checkpoints``) are taken at round boundaries, where the env needs no
state beyond the round index: model, optimizer, the action-sampling generator, the minibatch
numpy generator, and counters. Resume rebuilds the matchmaker's ledger by folding the run's
events from the lake, re-runs any round the lake already holds without writing it twice, and
reproduces an uninterrupted run exactly (same parameters, same events).

TVT (what ``karmic.tvt`` provides for ``tvt`` / ``full`` / ``memory``):

- ``make_tvt_module(agent) -> nn.Module``, stored as ``agent.tvt`` by ``KarmicAgent(...,
  use_tvt=True)``: trained by the same optimizer, saved in checkpoints with the agent.
- ``transport_rewards(shard, history, agent, cfg) -> TransportResult``: the shard's rewards
  plus transported value, the transports made (written to the lake's ``tvt_transports`` by
  ``pipelines.trajectories.transports_table``) and the value moved into earlier shards, which
  the learner replays (``tvt`` / ``full`` only; ``memory`` keeps the environment's rewards).
- ``TVTMemory.losses``: reconstruction and read-strength regulariser, added to the PPO loss of
  every minibatch.

Conditions are records of ``karmic.conditions`` (``karmic conditions``); the trainer reads the
run's record for what to build: the TVT memory (agent ``memory`` / ``tvt``), rigged spawns (env
b's ledger folds env b's episodes, ``episode % B == b``, as ``karmic.ledger.VecLedger``; its pairs
go to env b's reset), the transport (``TVTRun.transport``: learned / semantic / both / sham) and
the shaping (``hit-cost``: each step's own landed hits are kept in the shard's ``hits_landed``
column and the learner gets ``reward - hit_cost * hits``, ``karmic.rl.shaped_rewards``).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from karmic.agents.network import KarmicAgent
from karmic.conditions import get_condition
from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv
from karmic.envs.kernels import N_ACTIONS
from karmic.rl import clipped_surrogate, gae, landed_hits, shaped_rewards
from karmic.training.config import MODES, TrainConfig
from karmic.training.device import (
    CUDA_AUTO_PRECISION,
    check_resume,
    configure,
    device_type,
    resolve_device,
)
from karmic.training.lakeio import RunLake, read_yoke
from karmic.training.tvt_run import TVTRun
from pipelines import faults
from pipelines.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from pipelines.storage import resolve
from pipelines.trajectories import (
    TrajectoryShard,
    list_shards,
    prune_shards,
    read_shard,
    shard_update,
    write_shard,
)

_auto_precision: tuple[str, str] | None = None  # (choice, why): measured once per process

# `auto` picks bf16 only where its matmuls measure at least this much faster than fp32. The bf16
# flags alone do not say it: on the AMD EPYC these runs were first measured on, bf16 matmuls ran
# about 3x the fp32 rate (and training 1.4x faster); on an Intel Xeon with the same avx512_bf16
# flag, 0.5x (and a learner minibatch 1.3-1.4x slower). The margin keeps a machine's load from
# flipping a close call; the two cases seen are far from it.
BF16_MIN_SPEEDUP = 1.25


def cpu_bf16_flags() -> list[str]:
    """The CPU's bf16 matrix instructions (avx512_bf16, amx_bf16) from /proc/cpuinfo; where that
    file is missing, torch's own check (oneDNN's bf16 support)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
        return [x for x in ("avx512_bf16", "amx_bf16") if x in flags]
    except OSError:
        try:
            return ["mkldnn_bf16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else []
        except (AttributeError, RuntimeError):
            return []


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype = torch.float32, trials: int = 5,
                reps: int = 3) -> float:
    """FLOP/s of an (m, k) @ (k, n) matmul in ``dtype``: the best of ``trials`` timings of ``reps``
    products (on a shared machine the best is the least disturbed by other load)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n * reps / max(best, 1e-9)


def bf16_matmul_speedup(m: int = 1024, k: int = 256, n: int = 1024, trials: int = 5, reps: int = 3) -> float:
    """bf16 / fp32 rate of a matmul of the learner's LSTM shape (its largest op); about 0.1-0.2 s."""
    return matmul_rate(m, k, n, torch.bfloat16, trials, reps) / matmul_rate(m, k, n, torch.float32, trials, reps)


def choose_precision(flags: list[str], speedup: Callable[[], float]) -> tuple[str, str]:
    """``auto``'s rule: fp32 without bf16 instructions; with them, bf16 only if its matmuls measure
    at least ``BF16_MIN_SPEEDUP`` times the fp32 rate. Returns (precision, why)."""
    if not flags:
        return "fp32", "this CPU has no bf16 instructions"
    s = speedup()
    chosen = "bf16" if s >= BF16_MIN_SPEEDUP else "fp32"
    return chosen, (f"this CPU has {', '.join(flags)}; its bf16 matmuls measured {s:.2f}x the fp32 rate, "
                    f"bf16 needs {BF16_MIN_SPEEDUP}x")


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """The precision a run trains in: fp32 / bf16 as asked; ``auto`` (an explicit opt-in, never
    the default) -> ``precision_choice``'s choice for the device."""
    return precision_choice(precision, device)[0]


def precision_choice(precision: str, device: str = "cpu") -> tuple[str, str]:
    """(precision, why). The default is fp32: the same bits on every machine, since bf16's speed
    depends on the CPU (3x on one EPYC, 0.5x on a Xeon with the same flag) and a measurement moves
    with the machine's load (2.2x-5.5x on successive runs here), so a default that measured could
    train two runs of one command in different precisions. ``auto`` on the CPU measures once per
    process and says so on stderr; on CUDA it is ``CUDA_AUTO_PRECISION`` (``karmic.training.device``).
    The run records what was chosen and why (run.json ``precision``), so a resume or a repeat of
    the run never switches."""
    global _auto_precision
    if precision != "auto":
        return precision, "asked for (--precision)"
    if device_type(device) != "cpu":
        return CUDA_AUTO_PRECISION, f"auto on CUDA: {CUDA_AUTO_PRECISION}, measured faster end to end (docs/devices.md)"
    if _auto_precision is None:
        _auto_precision = choose_precision(cpu_bf16_flags(), bf16_matmul_speedup)
        print(f"precision: {_auto_precision[0]} ({_auto_precision[1]}; --precision fp32|bf16 to choose)",
              file=sys.stderr)
    return _auto_precision[0], f"auto: {_auto_precision[1]}"


def new_run_id(cfg: TrainConfig) -> str:
    return f"{cfg.mode}-g{cfg.grid_size}-s{cfg.seed}-{uuid.uuid4().hex[:6]}"


def round_seeds(seed: int, rnd: int, num_envs: int) -> list[int]:
    """Reset seeds of round ``rnd``: a pure function of (seed, round), so resume needs no env state."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x6B61726D, int(rnd)])
    return [int(s) for s in ss.generate_state(num_envs, dtype=np.uint32)]


@dataclass
class RolloutState:
    """Where the rollout stands between two updates: the envs' last observation, the agents'
    LSTM state, which slots start an episode at the next step, and the bootstrap of the last
    rollout (the value after its last step, and whether that step starts an episode)."""

    state: tuple[torch.Tensor, torch.Tensor]
    starts: np.ndarray
    obs: np.ndarray | None = None
    need_reset: bool = True
    t_in_episode: int = 0
    round_events: list = field(default_factory=list)  # the round's EventBatches, reset first
    next_value: np.ndarray | None = None
    next_start: np.ndarray | None = None


class Trainer:
    """One training run (see the module docstring). ``run()`` trains to ``total_steps``."""

    def __init__(
        self,
        cfg: TrainConfig,
        lake: Path | str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        tensorboard: bool = False,
        resume_from: dict[str, Any] | None = None,
        env=None,
        io_factory: Callable[..., Any] | None = None,
    ) -> None:
        cfg.validate()
        cfg.device = resolve_device(cfg.device)  # recorded resolved: a resume keeps it
        requested = cfg.precision
        cfg.precision, why = precision_choice(cfg.precision, cfg.device)
        if resume_from is not None:
            why = "recorded in the run (a resume never switches precision)"
        self.precision_note = {"requested": requested, "used": cfg.precision, "why": why}
        configure(cfg.device)
        self.device = torch.device(cfg.device)
        self.cfg = cfg
        self.lake = resolve(lake)  # a directory (Path) or an s3:// prefix (pipelines.storage)
        self.on_update = on_update
        # what the condition is (karmic.conditions): the agent, the spawns, the transport, the shaping
        self.condition = get_condition(cfg.mode, trained=True)
        self.use_tvt, self.use_matchmaker = self.condition.use_tvt, self.condition.rigged
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)

        if env is None:

            env_config = make_config(cfg.preset, grid_size=cfg.grid_size, **cfg.env_overrides)
            env = HarvestVecEnv(env_config, num_envs=cfg.num_envs)
        self.env = env
        self.env_config = env.config
        self.max_steps = int(getattr(env, "max_steps", None) or self.env_config.max_steps)
        ns, ms = cfg.num_steps, self.max_steps
        if ms % ns and ns % ms:
            raise ValueError(
                f"num_steps ({ns}) must divide the episode length ({ms}) or be a multiple of it"
            )
        self.B = cfg.num_envs
        # a probe reset gives the observation shape (round 0 is reset again with the same seed)
        probe = env.reset(seed=round_seeds(cfg.seed, 0, self.B))
        if probe.shape[0] != self.B:
            raise ValueError(f"env has {probe.shape[0]} envs, config says {self.B}")
        self.N = int(probe.shape[1])
        self.S = self.B * self.N
        self.obs_shape = tuple(int(s) for s in probe.shape[2:])

        torch.manual_seed(cfg.seed)
        self.agent = KarmicAgent(
            self.obs_shape,
            n_actions=N_ACTIONS,
            use_tvt=self.use_tvt,
            hidden=cfg.hidden,
            latent=cfg.latent,
            n_agents=self.N if cfg.agent_id else 0,
            memory_size=cfg.memory_size,
        ).to(self.device)
        # fused: one kernel over all parameters, 0.2-0.3 ms a step against 0.65-1.1 ms for the
        # per-tensor loop (benchmarks/adam_step.py); the same update up to the last bit
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
        self.gen = torch.Generator(self.device).manual_seed(cfg.seed)  # action sampling
        self.rng = np.random.default_rng([cfg.seed, 1])  # minibatch shuffles
        self.agent_ids = torch.arange(self.S, device=self.device) % self.N
        self.bf16 = cfg.precision == "bf16"

        # training counters; a run ends at a round boundary
        steps_per_update = ns * self.B
        align = math.lcm(ns, ms) // ns
        n_updates = math.ceil(cfg.total_steps / steps_per_update)
        self.n_updates = max(align, math.ceil(n_updates / align) * align)
        self.update = 0
        self.round = 0
        self.global_step = 0
        self.last_ckpt_update = 0
        self.run_id = cfg.run_id or new_run_id(cfg)
        cfg.run_id = self.run_id

        self.tvt = TVTRun(cfg, self.S, self.agent.tvt) if self.use_tvt else None
        self.keep_shards = cfg.keep_shards
        if self.tvt is not None:  # the learner rebuilds each step's memory from the shards
            self.keep_shards = max(cfg.keep_shards, self.tvt.history_needed + 1)
        if self.tvt is not None and self.tvt.transport == "yoked":  # before run.json: a bad partner leaves no run
            self.tvt.yoke = read_yoke(self.lake, cfg, self.env_config, self.N, self.max_steps)
        self.io = (io_factory or RunLake)(self.lake, self.run_id, cfg, self.env_config, self.N)
        self.io.precision_note = self.precision_note  # run.json says which precision and why
        self.ledger = self.io.new_ledger() if self.use_matchmaker else None
        if resume_from is not None:
            self._restore(resume_from)
        self.tb = self.io.tensorboard() if tensorboard else None
        self._alloc()
        self.loop = RolloutState(self.agent.initial_state(self.S), np.ones(self.S, dtype=bool))
        self.event_write_time = 0.0
        self.recent_returns: list[float] = []
        self.recent_zaps: list[float] = []
        self.recent_social: dict[str, list[float]] = {"apples": [], "zaps_hit": [], "frozen_steps": []}

    # -- state -------------------------------------------------------------------------------
    def _alloc(self) -> None:
        T, S, L = self.cfg.num_steps, self.S, self.cfg.seq_len
        H = self.cfg.hidden
        self.buf_obs = np.zeros((T, S, *self.obs_shape), np.uint8)
        self.buf_act = np.zeros((T, S), np.int8)
        self.buf_rew = np.zeros((T, S), np.float32)
        self.buf_start = np.zeros((T, S), np.uint8)
        self.buf_logp = np.zeros((T, S), np.float32)
        self.buf_val = np.zeros((T, S), np.float32)
        self.buf_h0 = np.zeros((T // L, S, H), np.float32)
        self.buf_c0 = np.zeros((T // L, S, H), np.float32)
        self.buf_episode = np.zeros((T // L, S), np.int64)
        self.buf_t0 = np.zeros((T // L, S), np.int32)
        self.buf_gstep = np.zeros((T // L, S), np.int64)
        self.buf_extra: dict[str, np.ndarray] = self.tvt.buffers(T) if self.tvt is not None else {}
        if self.condition.shaping == "hit-cost":  # each step's own landed hits, which the cost reads
            self.buf_extra["hits_landed"] = np.zeros((T, S), np.uint8)

    def _restore(self, ck: dict[str, Any]) -> None:
        self.agent.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.gen.set_state(ck["torch_gen"])
        self.rng.bit_generator.state = ck["np_rng"]
        self.update = int(ck["update"])
        self.round = int(ck["round"])
        self.global_step = int(ck["global_step"])
        self.last_ckpt_update = self.update
        if self.ledger is not None:
            self.ledger = self.io.rebuild_ledger(episodes_before=self.round * self.B)
        if self.tvt is not None:  # the memory is rebuilt from the shards the lake kept
            self.tvt.restore(self.lake, self.run_id, self.update)
            self.tvt.load_state(ck.get("tvt_state"))

    def resume_needs_from(self) -> int | None:
        """The oldest shard a resume from the last checkpoint reads (TVT refills its memory from
        the shards before it); retention keeps every shard from there on, however many updates
        past the checkpoint the run gets before it is killed. None: a resume reads no shard."""
        return self.last_ckpt_update - self.tvt.history_needed if self.tvt is not None else None

    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "agent_config": self.agent.config(),
            "model": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_gen": self.gen.get_state(),
            "np_rng": self.rng.bit_generator.state,
            "update": self.update,
            "round": self.round,
            "global_step": self.global_step,
            "train_config": self.cfg.to_dict(),
            "resumable": True,
            # TVT's lagged queue (tvt_learn = lagged); absent for the method of old
            **({"tvt_state": self.tvt.state()} if self.tvt is not None and self.tvt.state() else {}),
        }

    def amp(self):
        """The network's precision: bf16 autocast, or nothing (fp32: the code path of old)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def acting_scope(self):
        """Around a whole rollout: autocast keeps its bf16 copies of the weights until the
        outermost autocast region exits, so this (disabled) outer region lets the per-step
        ``amp()`` regions cast each weight once per rollout instead of once per step. Sound
        only where the weights do not change inside it: no optimizer step in a rollout."""
        return torch.autocast(self.device.type, enabled=False) if self.bf16 else contextlib.nullcontext()

    def tensor(self, a: np.ndarray) -> torch.Tensor:
        """A numpy array as a tensor on the run's device (on the CPU: the array's own memory)."""
        return torch.from_numpy(a).to(self.device)

    # -- rollout -----------------------------------------------------------------------------
    def _reset_round(self) -> np.ndarray:
        pairs = self.ledger.pairs() if self.ledger is not None else None  # one list per env
        seeds = round_seeds(self.cfg.seed, self.round, self.B)
        obs = self.env.reset(seed=seeds, pairs=pairs if pairs and any(pairs) else None)
        self.io.begin_round(self.env, seeds, pairs)  # the action log (pipelines.replay)
        # the agents start the round from the zero state (the start flags zero it anyway); set
        # here, the shard's stored h0 / c0 of a round's first sequence do not depend on whether
        # the run was resumed at this round, so a resumed run's shards equal the uninterrupted's
        self.loop.state = self.agent.initial_state(self.S)
        self.loop.t_in_episode = 0
        self.loop.round_events = [self.env.reset_events]
        return obs

    def _end_round(self) -> None:
        stats = self.env.episode_stats()
        t0 = time.perf_counter()
        events = self.io.end_round(
            self.round, self.loop.round_events, stats, self.max_steps, self.B, self.cfg, self.global_step
        )
        self.event_write_time += time.perf_counter() - t0
        if self.ledger is not None:
            self.io.fold_round(self.ledger, events, self.B)
        ret = stats["return"].astype(np.float64)
        self.recent_returns.extend(ret.mean(axis=1).tolist())
        self.recent_zaps.extend(stats["zaps_fired"].sum(axis=1).astype(float).tolist())
        for k, v in self.recent_social.items():  # per episode, summed over agents
            v.extend(stats[k].sum(axis=1).astype(float).tolist())
        self.round += 1

    @torch.no_grad()
    def rollout(self) -> None:
        with self.acting_scope():
            self._rollout()

    def _rollout(self) -> None:
        T, L = self.cfg.num_steps, self.cfg.seq_len
        lp, tvt = self.loop, self.tvt
        for t in range(T):
            if lp.t_in_episode == 0 and lp.need_reset:
                lp.obs = self._reset_round()
                lp.need_reset = False
                lp.starts[:] = True
            faults.point("rollout.step")  # the crash tests' kill points (pipelines.faults)
            flat = lp.obs.reshape(self.S, *self.obs_shape)
            self.buf_obs[t] = flat
            self.buf_start[t] = lp.starts
            if t % L == 0:
                k = t // L
                self.buf_h0[k] = lp.state[0][0].cpu().numpy()
                self.buf_c0[k] = lp.state[1][0].cpu().numpy()
                self.buf_episode[k] = self.round * self.B + np.repeat(np.arange(self.B), self.N)
                self.buf_t0[k] = lp.t_in_episode
                self.buf_gstep[k] = self.global_step
            with self.amp():
                logits, value, lp.state, z = self.agent(
                    self.tensor(flat)[None],
                    lp.state,
                    self.tensor(lp.starts)[None],
                    self.agent_ids,
                    memory=tvt.acting_memory(self.global_step // self.B) if tvt is not None else None,
                )
            logp_all = torch.log_softmax(logits[0], -1)
            action = torch.multinomial(logp_all.exp(), 1, generator=self.gen)[:, 0]
            act_np = action.cpu().numpy()
            self.buf_act[t] = act_np
            self.io.record_actions(lp.t_in_episode, self.buf_act[t])
            self.buf_logp[t] = logp_all.gather(1, action[:, None])[:, 0].cpu().numpy()
            self.buf_val[t] = value[0].cpu().numpy()
            lp.obs, rew, dones, events = self.env.step(act_np.reshape(self.B, self.N))
            self.buf_rew[t] = rew.reshape(self.S)
            lp.round_events.append(events)
            if "hits_landed" in self.buf_extra:
                self.buf_extra["hits_landed"][t] = landed_hits(events, self.B, self.N)
            if tvt is not None:
                tvt.record_step(self.buf_extra, t, self.agent, z[0], action, rew.reshape(self.S), events,
                                self.buf_start[t], self.global_step // self.B,
                                lp.round_events[0] if lp.t_in_episode == 0 else None, self.B, self.N)
            lp.starts[:] = False
            lp.t_in_episode += 1
            self.global_step += self.B
            if dones.any():
                if not dones.all():
                    raise RuntimeError("envs of a batch must finish together")
                self._end_round()
                lp.t_in_episode = 0
                lp.need_reset = True
        # value after the last step: the next round's first observation if a round just ended
        if lp.need_reset:
            lp.next_value = np.zeros(self.S, np.float32)
            lp.next_start = np.ones(self.S, np.uint8)
        else:
            with self.amp():
                _, v, _, _ = self.agent(
                    self.tensor(lp.obs.reshape(self.S, *self.obs_shape))[None],
                    lp.state,
                    torch.zeros(1, self.S, dtype=torch.bool, device=self.device),
                    self.agent_ids,
                    memory=tvt.acting_memory(self.global_step // self.B) if tvt is not None else None,
                )
            lp.next_value = v[0].cpu().numpy().copy()
            lp.next_start = np.zeros(self.S, np.uint8)

    def make_shard(self):
        tmp = TrajectoryShard(
            run_id=self.run_id, update=self.update, seq_len=self.cfg.seq_len,
            num_envs=self.B, n_agents=self.N, obs=np.zeros((0,)), h0=self.buf_h0, c0=self.buf_c0,
        )
        rows_of = tmp.from_time_major
        K = self.cfg.num_steps // self.cfg.seq_len
        slot = np.tile(np.arange(self.S), K)
        rows = {
            "update": np.full(K * self.S, self.update, np.int32),
            "chunk": np.repeat(np.arange(K), self.S).astype(np.int32),
            "slot": slot.astype(np.int32),
            "env": (slot // self.N).astype(np.int32),
            "agent": (slot % self.N).astype(np.int16),
            "episode": self.buf_episode.reshape(-1),
            "t0": self.buf_t0.reshape(-1),
            "global_step": self.buf_gstep.reshape(-1),
            # the bootstrap value of sequence k is the value at the first step of sequence k+1
            "next_value": np.concatenate([self.buf_val[self.cfg.seq_len :: self.cfg.seq_len],
                                          self.loop.next_value[None]]).reshape(-1),
            "next_start": np.concatenate([self.buf_start[self.cfg.seq_len :: self.cfg.seq_len],
                                          self.loop.next_start[None]]).reshape(-1),
        }
        return TrajectoryShard(
            run_id=self.run_id, update=self.update, seq_len=self.cfg.seq_len,
            num_envs=self.B, n_agents=self.N, obs=rows_of(self.buf_obs),
            h0=self.buf_h0.reshape(K * self.S, -1), c0=self.buf_c0.reshape(K * self.S, -1),
            steps={"action": rows_of(self.buf_act), "reward": rows_of(self.buf_rew),
                   "start": rows_of(self.buf_start), "logprob": rows_of(self.buf_logp),
                   "value": rows_of(self.buf_val)},
            rows=rows,
            extra={k: rows_of(v) for k, v in self.buf_extra.items()},
        )

    # -- learning ----------------------------------------------------------------------------
    def learn(self, shard, rewards: np.ndarray, off_policy: bool = False) -> dict[str, float]:
        """GAE then PPO epochs over minibatches of whole sequences of ``shard``.

        ``off_policy`` (TVT's lagged learner, docs/tvt-speed.md): the shard was acted by an
        older policy. A forward pass first gives the current policy's log-probs and values (the
        "proximal" policy); the clipped ratio is taken against it, each step's loss is weighted
        by its importance weight over the behaviour policy, truncated at 1 (V-trace's rho-bar),
        and GAE, the value targets and the value clip use its values."""
        cfg = self.cfg
        tm = shard.time_major
        R = shard.n_rows
        obs = self.tensor(shard.obs)
        act = self.tensor(shard.action.astype(np.int64))
        starts = self.tensor(shard.start.astype(bool))
        old_logp = self.tensor(shard.logprob)
        old_val = self.tensor(shard.value)
        h0 = self.tensor(shard.h0)
        c0 = self.tensor(shard.c0)
        ids = self.tensor(shard.rows["agent"].astype(np.int64))
        mb_rows = max(1, R // cfg.num_minibatches)
        mem = self.tvt.learner_memory(shard) if self.tvt is not None else None
        with self.amp():  # the encoder's input, converted once for all minibatches
            obs_in = self.agent.prepare_obs(obs)
        is_w = None
        if off_policy:
            behaviour = old_logp
            old_logp, old_val = self._evaluate(obs_in, h0, c0, starts, ids, act, mem, mb_rows)
            is_w = (old_logp - behaviour).exp().clamp(max=1.0)
        # rows with chunk K-1 hold the rollout's final bootstrap
        last = shard.rows["chunk"] == shard.rows["chunk"].max()
        adv_tm, ret_tm = gae(
            tm(rewards), tm(old_val.cpu().numpy() if off_policy else shard.value), tm(shard.start),
            shard.rows["next_value"][last], shard.rows["next_start"][last],
            cfg.gamma, cfg.gae_lambda,
        )
        adv_t = self.tensor(shard.from_time_major(adv_tm))
        ret_t = self.tensor(shard.from_time_major(ret_tm))
        stats: dict[str, list[float]] = {k: [] for k in
                                         ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac")}
        for _ in range(cfg.update_epochs):
            perm = self.rng.permutation(R)
            for s in range(0, R, mb_rows):
                faults.point("learn.minibatch")
                idx = self.tensor(perm[s : s + mb_rows])
                with self.amp():
                    logits, value, _, z = self.agent(
                        obs_in.index_select(0, idx).transpose(0, 1),
                        (h0[idx][None], c0[idx][None]),
                        starts[idx].transpose(0, 1),
                        ids[idx],
                        memory=mem.memory(idx) if mem is not None else None,
                    )
                logits = logits.transpose(0, 1)  # (mb, L, A)
                value = value.transpose(0, 1)
                logp_all = torch.log_softmax(logits, -1)
                logp = logp_all.gather(-1, act[idx][..., None])[..., 0]
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                logratio = logp - old_logp[idx]
                ratio = logratio.exp()
                mb_adv = adv_t[idx]
                if cfg.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                if is_w is None:
                    pg_loss = clipped_surrogate(mb_adv, ratio, cfg.clip_coef).mean()
                else:
                    pg_loss = (is_w[idx] * clipped_surrogate(mb_adv, ratio, cfg.clip_coef)).mean()
                if cfg.clip_vloss:
                    v_clipped = old_val[idx] + (value - old_val[idx]).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max((value - ret_t[idx]) ** 2, (v_clipped - ret_t[idx]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((value - ret_t[idx]) ** 2).mean()
                loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
                if mem is not None:
                    loss = mem.add_losses(loss, self.agent, idx, z, obs)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    stats["pg_loss"].append(float(pg_loss))
                    stats["v_loss"].append(float(v_loss))
                    stats["entropy"].append(float(entropy))
                    stats["approx_kl"].append(float(((ratio - 1) - logratio).mean()))
                    stats["clipfrac"].append(float(((ratio - 1).abs() > cfg.clip_coef).float().mean()))
        return {k: float(np.mean(v)) for k, v in stats.items()}

    @torch.no_grad()
    def _evaluate(self, obs_in, h0, c0, starts, ids, act, mem, mb_rows) -> tuple[torch.Tensor, torch.Tensor]:
        """The current policy's log-probs of the taken actions and its values, (rows, L) each, in
        row order, a minibatch of rows at a time (``learn(off_policy=True)``)."""
        logps, values = [], []
        for s in range(0, len(ids), mb_rows):
            idx = torch.arange(s, min(s + mb_rows, len(ids)))
            with self.amp():
                logits, value, _, _ = self.agent(
                    obs_in.index_select(0, idx).transpose(0, 1), (h0[idx][None], c0[idx][None]),
                    starts[idx].transpose(0, 1), ids[idx], memory=mem.memory(idx) if mem is not None else None,
                )
            logp_all = torch.log_softmax(logits.transpose(0, 1).float(), -1)
            logps.append(logp_all.gather(-1, act[idx][..., None])[..., 0])
            values.append(value.transpose(0, 1).float())
        return torch.cat(logps).contiguous(), torch.cat(values).contiguous()

    def learn_replay(self, shard, added: np.ndarray) -> float:
        """One clipped policy-gradient pass over an earlier shard whose steps received value.

        The shard was learned from when it was new; what is new now is only the transported value,
        so the advantage here is the (gamma * lambda)-discounted sum of the added rewards within
        each episode, and values are left alone. Its memory comes from the same bank (rows older
        than the bank are not readable: an approximation the ratio clipping absorbs)."""
        cfg = self.cfg
        zeros = np.zeros_like(added, np.float32)  # GAE with zero values: the discounted added value
        adv_tm, _ = gae(added, zeros, shard.time_major(shard.start), zeros[0], zeros[0],
                        cfg.gamma, cfg.gae_lambda)
        adv = shard.from_time_major(adv_tm)
        rows = np.flatnonzero(np.abs(adv).sum(1) > 0)
        if len(rows) == 0:
            return 0.0
        idx = self.tensor(rows)
        with self.amp():
            logits, _, _, _ = self.agent(
                self.tensor(shard.obs)[idx].transpose(0, 1),
                (self.tensor(shard.h0)[idx][None], self.tensor(shard.c0)[idx][None]),
                self.tensor(shard.start.astype(bool))[idx].transpose(0, 1),
                self.tensor(shard.rows["agent"].astype(np.int64))[idx],
                memory=self.tvt.learner_memory(shard).memory(idx),
            )
        logp = torch.log_softmax(logits.transpose(0, 1), -1).gather(
            -1, self.tensor(shard.action.astype(np.int64))[idx][..., None])[..., 0]
        ratio = (logp - self.tensor(shard.logprob)[idx]).exp()
        a = self.tensor(adv)[idx]
        pg = clipped_surrogate(a, ratio, cfg.clip_coef).mean()
        self.optimizer.zero_grad(set_to_none=True)
        pg.backward()
        nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        return float(pg.detach())

    # -- loop --------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None, at_boundary: bool = True) -> dict[str, Any]:
        """Train to ``n_updates``, or stop after ``stop_after`` more updates (tests, benchmarks):
        at the next round boundary (a resumable stop) unless ``at_boundary`` is false."""
        cfg = self.cfg
        if self.update == 0 or not self.io.run_exists():
            self.io.start_run(self.n_updates * cfg.num_steps * self.B)
        self.io.set_status("running")
        self.loop = RolloutState(self.agent.initial_state(self.S), np.ones(self.S, dtype=bool))
        timing = {"rollout": 0.0, "lake": 0.0, "learn": 0.0}
        t_start = time.perf_counter()
        steps_start = self.global_step
        done_updates = 0
        try:
            while self.update < self.n_updates:
                t0 = time.perf_counter()
                self.rollout()
                t1 = time.perf_counter()
                shard = self.make_shard()
                path = write_shard(self.lake, shard)
                faults.point("update.after_shard")
                replay = read_shard(path)
                history = [p for p in list_shards(self.lake, self.run_id)
                           if shard_update(p) < self.update][-max(self.keep_shards - 1, 0):]
                t2 = time.perf_counter()
                losses = self.learn_update(replay, history)
                t3 = time.perf_counter()
                if not cfg.keep_trajectories:
                    prune_shards(self.lake, self.run_id, self.keep_shards, upto=self.update,
                                 keep_from=self.resume_needs_from())
                t4 = time.perf_counter()
                # events / episodes writes happen inside the rollout: count them as lake time
                ev_t, self.event_write_time = self.event_write_time, 0.0
                timing["rollout"] += t1 - t0 - ev_t
                timing["lake"] += (t2 - t1) + (t4 - t3) + ev_t
                timing["learn"] += t3 - t2
                self.update += 1
                done_updates += 1
                faults.point("update.before_checkpoint")
                if self.loop.need_reset and (
                    self.update - self.last_ckpt_update >= cfg.checkpoint_every
                    or self.update == self.n_updates
                ):
                    save_checkpoint(self.lake, self.run_id, self.update, self.checkpoint_payload(),
                                    keep=cfg.keep_checkpoints)
                    self.last_ckpt_update = self.update
                info = self._info(losses, timing, t_start, steps_start)
                if self.tb is not None:
                    self.io.log_tensorboard(self.tb, info, self.global_step)
                if self.on_update is not None:
                    self.on_update(info)
                if stop_after is not None and done_updates >= stop_after:
                    if self.loop.need_reset or not at_boundary:
                        break
        except BaseException:
            self.io.set_status("interrupted")
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
        finished = self.update >= self.n_updates
        self.io.set_status("completed" if finished else "interrupted")
        return self._info({}, timing, t_start, steps_start)

    def learn_update(self, replay, history: list) -> dict[str, float]:
        """The learner's half of an update, on the shard just read back from the lake: PPO on the
        environment's rewards, or, for a TVT agent, TVT's seam (``karmic.training.tvt_run``):
        the transports, PPO on the new rewards, and the replay passes."""
        if self.tvt is not None:
            return self.tvt.learn(self, replay, history)
        if self.condition.shaping == "hit-cost":  # the shard keeps the env's rewards; the learner pays
            return self.learn(replay, shaped_rewards(replay.reward, replay.extra["hits_landed"], self.cfg.hit_cost))
        return self.learn(replay, np.asarray(replay.reward, np.float32))

    def _info(self, losses, timing, t_start, steps_start) -> dict[str, Any]:
        elapsed = time.perf_counter() - t_start
        total = sum(timing.values()) or 1.0
        last = slice(-max(self.B, 1) * 4, None)
        return {
            "run_id": self.run_id,
            "update": self.update,
            "n_updates": self.n_updates,
            "global_step": self.global_step,
            "total_steps": self.n_updates * self.cfg.num_steps * self.B,
            "steps_per_s": (self.global_step - steps_start) / elapsed if elapsed > 0 else 0.0,
            "mean_return": float(np.mean(self.recent_returns[last])) if self.recent_returns else float("nan"),
            "zaps_per_episode": float(np.mean(self.recent_zaps[last])) if self.recent_zaps else float("nan"),
            "episodes": len(self.recent_returns),
            **{f"{k}_per_episode": float(np.mean(v[last])) if v else float("nan")
               for k, v in self.recent_social.items()},
            "lake_share": timing["lake"] / total,
            "timing": dict(timing),
            **losses,
        }


def train(
    cfg: TrainConfig,
    lake: Path | str,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Run one condition to completion; returns the final info dict (with ``run_id``)."""
    return Trainer(cfg, lake, on_update=on_update, tensorboard=tensorboard).run()


def resume(
    run_id: str,
    lake: Path | str,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    total_steps: int | None = None,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Continue ``run_id`` from its last checkpoint (optionally to a new ``total_steps``)."""
    return resumed_trainer(run_id, lake, on_update, total_steps, tensorboard).run()


def resumed_trainer(
    run_id, lake, on_update=None, total_steps=None, tensorboard=False, env=None, device=None
) -> Trainer:
    ck = load_checkpoint(latest_checkpoint(lake, run_id))
    cfg = TrainConfig.from_dict(ck["train_config"])
    if total_steps is not None:
        cfg.total_steps = total_steps
    cfg.device = check_resume(cfg.device, device)  # the device it recorded (or another GPU)
    return Trainer(cfg, lake, on_update=on_update, tensorboard=tensorboard, resume_from=ck, env=env)


__all__ = ["MODES", "TrainConfig", "Trainer", "gae", "resume", "train"]
