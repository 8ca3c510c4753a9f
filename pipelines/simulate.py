"""``karmic simulate``: run episodes with a policy and write every social event to the lake.

One environment (B = 1) by default, so the run's episodes are 0, 1, 2 ... and
``global_step = episode * max_steps + t``. With ``matchmaker=True`` a live
:class:`karmic.ledger.Ledger` folds each step's ZAP_HITs, decays at each episode end, and its
greedy pairs go to the next reset (rigged spawns). Events and episode rows are buffered by
:class:`pipelines.writer.LakeWriter` and flushed every ``flush_episodes`` episodes; Ctrl-C flushes
what was simulated and marks the run ``interrupted``.

A run killed (SIGKILL, a crash) can be resumed in place (``resume=True``, what a study's retry
of a scripted cell does): the same seed simulates the same episodes again, and each table skips
the episodes its parts already hold (flushes write whole episodes, events before actions before
episode rows), so the resumed run equals an uninterrupted one row for row. A run stopped with
Ctrl-C holds a partial episode and is not resumed (``interrupted``: the caller starts a new run).

Every step's joint action goes to the ``actions`` table with what rebuilds each reset (the env's
RNG state before it, the rigged pairs), so ``pipelines.replay`` can re-simulate any episode.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from karmic.envs.config import make_config
from karmic.envs.core import HarvestVecEnv
from karmic.events import APPLE_EATEN, ZAP_FIRED, ZAP_HIT
from karmic.ledger import Ledger
from pipelines import faults
from pipelines.replay import env_digest
from pipelines.writer import (
    LakeWriter,
    actions_table,
    deferred_interrupt,
    episodes_table,
    written_through,
)


@dataclass
class SimResult:
    run_id: str
    episodes: int = 0
    steps: int = 0
    apples: int = 0
    zaps_fired: int = 0
    hits: int = 0
    status: str = "running"
    ledger: Ledger | None = None
    returns: list[float] = field(default_factory=list)


class CheckpointAdapter:
    """A trained checkpoint behind the scripted-policy interface."""

    def __init__(self, path: str, seed: int):
        from karmic.agents.policy import load_policy
        from pipelines.storage import resolve

        self.policy = load_policy(resolve(path), seed=seed)
        # for the run id: "ckpt-00003.pt" -> "ckpt-00003", "run_id=abc" (a checkpoint directory) -> "abc"
        name = Path(str(path).rstrip("/")).name.removesuffix(".pt").split("=")[-1]
        self.name = re.sub(r"[^A-Za-z0-9_.\-]", "-", name) or "ckpt"

    def reset(self):
        self.policy.state = None
        self.policy.shape = None

    def observe(self, events):
        pass

    def act(self, env, obs):
        return self.policy.act(obs)


def resolve_policy(name: str, seed: int):
    from karmic.policies import POLICIES, make_policy

    if name in POLICIES:
        return make_policy(name, seed)
    if "://" in name or Path(name).exists():  # a checkpoint file or directory, local or s3://
        return CheckpointAdapter(name, seed)
    raise ValueError(f"unknown policy {name!r}: use {', '.join(POLICIES)} or a checkpoint path")


def simulate(
    lake: str | Path,
    grid_size: int = 10,
    episodes: int = 10,
    policy: str = "random",
    matchmaker: bool = False,
    seed: int = 0,
    max_steps: int | None = None,
    preset: str | None = None,
    run_id: str | None = None,
    env_overrides: dict | None = None,
    write: bool = True,
    flush_episodes: int = 10,
    on_episode: Callable[[SimResult], None] | None = None,
    log_actions: bool = True,
    resume: bool = False,
) -> SimResult:
    """Run ``episodes`` episodes and write them to the lake (``write``); ``log_actions=False``
    leaves out the actions table (only for measuring what it costs: such a run cannot be
    replayed); ``resume``: ``run_id`` was killed, write only the episodes it lacks (module
    docstring)."""
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    overrides = dict(env_overrides or {})  # HarvestConfig fields (a study cell's environment)
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if preset is None:
        overrides.setdefault("grid_size", grid_size)
    config = make_config(preset, **overrides)
    pol = resolve_policy(policy, seed)
    env = HarvestVecEnv(config, num_envs=1)
    T = env.max_steps
    run_id = run_id or f"sim-{pol.name}-g{config.grid_size}-s{seed}-{uuid.uuid4().hex[:6]}"
    condition = "simulate-" + ("matchmaker-" if matchmaker else "") + pol.name
    writer = None
    done = {"events": -1, "actions": -1, "episodes": -1}  # episodes each table already holds
    if write and resume and run_id:
        done = {t: written_through(lake, t, run_id) for t in done}
    if write:
        writer = LakeWriter(lake, run_id, meta={
            "kind": "simulate", "condition": condition, "policy": policy,
            "grid_size": config.grid_size, "seed": seed, "n_agents": config.n_agents,
            "num_envs": 1, "episodes": episodes, "matchmaker": matchmaker,
            "config": config.to_dict(),
        }, flush_episodes=flush_episodes)
    ledger = Ledger(config.n_agents, config.ledger_decay) if matchmaker else None
    res = SimResult(run_id=run_id, ledger=ledger)
    env.record_events = writer is not None  # the writer takes one batch per episode
    N = config.n_agents
    # the policy's output per step, kept by reference and stacked once per episode: copying it
    # into an array every step would cost a few percent of a random-policy step (policies return
    # a new array each step; if one ever reused its buffer the replay check would say so)
    acts: list = []
    steps_done = 0
    reset_rng, reset_pairs = 0, []
    open_episode = None  # reset but not yet written: an interrupt writes its steps so far

    def write_actions(ep: int) -> None:
        nonlocal open_episode
        open_episode = None
        if not log_actions or ep <= done["actions"]:
            return
        steps = np.concatenate(acts[:steps_done]) if steps_done else np.zeros(0)
        writer.write_actions(actions_table(run_id, np.array([ep]), np.array([ep * T]),
                                           steps.astype(np.int8).reshape(1, steps_done, N),
                                           np.array([reset_rng], np.uint64),
                                           [reset_pairs], np.array([env_digest(env.state, 0)])))

    try:
        with deferred_interrupt() as interrupted:
            for ep in range(episodes):
                pairs = [ledger.pairs()] if ledger is not None else None
                if ep == 0:
                    env.seed(seed)  # what reset(seed=seed) does first; the state is logged below
                reset_rng, reset_pairs = int(env.state.rng[0]), pairs[0] if pairs else []
                obs = env.reset(pairs=pairs)
                open_episode = ep
                pol.reset()
                base = ep * T
                steps_done = 0
                acts, prev = [], None
                for t in range(T):
                    interrupted.check()
                    faults.point("simulate.step")
                    a = pol.act(env, obs)
                    if log_actions:
                        acts.append(a if a is not prev else np.copy(a))
                        prev = a
                    obs, _, dones, ev = env.step(a)
                    steps_done = t + 1
                    if len(ev):
                        if ledger is not None:
                            ledger.observe(ev)
                        pol.observe(ev)
                        et = ev.event_type
                        res.apples += int((et == APPLE_EATEN).sum())
                        res.zaps_fired += int((et == ZAP_FIRED).sum())
                        res.hits += int((et == ZAP_HIT).sum())
                if ledger is not None:
                    ledger.end_episode()
                stats = env.episode_stats()
                if writer:
                    ev = env.take_recorded()
                    if ep > done["events"]:
                        writer.write_events(ev, base + ev.t.astype(np.int64))
                    write_actions(ep)
                    if ep > done["episodes"]:
                        writer.write_episodes(episodes_table(
                            run_id, np.array([ep]), np.array([base]), stats, condition, config.grid_size, seed
                        ))
                res.episodes += 1
                res.steps += T
                res.returns.append(float(stats["return"].sum()))
                if on_episode:
                    on_episode(res)
    except KeyboardInterrupt:
        res.status = "interrupted"
        if writer:
            ev = env.take_recorded()  # the unfinished episode's events are kept too
            writer.write_events(ev, res.episodes * T + ev.t.astype(np.int64))
            if open_episode is not None:
                write_actions(open_episode)
            writer.close("interrupted", episodes_done=res.episodes)
        raise
    except BaseException:
        res.status = "failed"
        if writer:
            writer.close("failed", episodes_done=res.episodes)
        raise
    res.status = "completed"  # one vocabulary with training (pipelines.schema.RUN_STATUSES)
    if writer:
        writer.close("completed", episodes_done=res.episodes)
    return res
