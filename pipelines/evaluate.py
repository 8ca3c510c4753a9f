"""``karmic evaluate``: is an agent that preys less restrained or incapable? (Melting Pot's scenarios)

Scenarios, each one lake run of kind ``eval`` (run.json ``kind = "eval"``, ``condition =
"eval-<scenario>"``) with events and episode rows like any run, and an ``eval_agents`` row per
agent saying its role and policy, so ``queries/agent_episodes.sql`` and ``eval_summary.sql`` read
them with SQL:

- ``solo``: agent_0 plays the policy alone on the board: the other agents are taken off it for the
  whole episode (their removal timer set past its end after each reset, so they never respawn,
  are never seen and eat nothing). Role ``solo``; the others ``absent``.
- ``solo-frozen``: agent_0 plays the policy; the others stand where they spawned and do nothing
  (no-op every step; a zapped one respawns and stands again). Roles ``focal`` / ``frozen``.
- ``cross-play``: agents 0..K-1 (``focal``) play one policy among background agents playing
  another, for every ordered pair of the sources given (A among B and B among A).

A source is a policy file (a kept ``policies/.../final.pt``, fp16 weights only, or a checkpoint
``ckpt-*.pt``), a folder holding one (``results/<study>/policies/<run>/``, whose ``final.pt`` is
taken, or a checkpoint folder), a run id of the lake (its kept final policy, else its last
checkpoint) or a scripted policy (``random``, ``greedy``: ``karmic.policies``). The environment
is the first trained source's own (its train_config: preset, grid size, overrides), unless a
preset / grid size is given; every trained policy must take its observations (same shape, same
agent count if it was trained with identity input), else a one-line ``EvalError``.

Episodes: the ``episodes`` of a scenario are played together as one batch of environments
(``HarvestVecEnv(num_envs=B)``, at most ``MAX_BATCH`` at a time), each seeded on its own:
episode ``e`` of seed ``s`` starts from ``episode_seed(s, e)`` and its policies draw their
actions from streams of ``(s, the source's first agent, e)``, so an episode's randomness does
not depend on how many are played with it. A trained policy acts only for the agents it
controls, batched over the episodes, under ``torch.inference_mode`` with one torch thread (the
same rounding on any machine with the same CPU kind, whatever its core count), and samples
by inverse CDF from the softmax with the episode's uniforms; a scripted one (``karmic.policies``)
is one instance per episode. Each episode is written as before: its events and rows as episode
``e`` of env 0, ``global_step = e * max_steps + t``. No actions table: the frozen and absent
agents are set by hand, so these runs are not replayable and say so in run.json.

Orchestration (it plays policies and writes the lake), no CLI: ``karmic/commands/evaluate.py``
parses and prints.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines import storage
from pipelines.schema import EVAL_AGENTS_SCHEMA
from pipelines.writer import LakeWriter, episodes_table, write_table

SCENARIOS = ("solo", "solo-frozen", "cross-play")
SCRIPTED = ("random", "greedy")
NOOP = 0


class EvalError(ValueError):
    """A bad source or a mismatch: one line for the user (exit 2)."""


@dataclass
class Source:
    """A policy to evaluate: ``label`` names it in tables, ``origin`` says where it came from."""

    label: str
    origin: str
    kind: str  # "trained" | "scripted"
    path: Any = None  # the policy or checkpoint file (a LakePath) of a trained source
    meta: dict[str, Any] = field(default_factory=dict)  # the file's train_config, algo, global_step



def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", s).strip("-") or "policy"


def _read_meta(path) -> dict[str, Any]:
    import io

    import torch

    try:
        ck = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=False)
        if not isinstance(ck, dict) or "agent_config" not in ck or "model" not in ck:
            raise ValueError("no agent_config / model")
    except Exception as exc:  # noqa: BLE001 - a foreign or torn file: one line
        raise EvalError(f"{path}: not a karmic policy or checkpoint ({type(exc).__name__})") from None
    tc = ck.get("train_config") or {}
    return {"train_config": tc, "algo": ck.get("algo") or tc.get("algo"), "global_step": ck.get("global_step"),
            "run_id": ck.get("run_id"), "obs_shape": tuple(ck["agent_config"]["obs_shape"]),
            "n_agents_input": int(ck["agent_config"].get("n_agents") or 0)}


def resolve_source(spec: str, lake: str | Path | None = None) -> Source:
    """A source from what the user typed (module docstring); EvalError if it names nothing."""
    from pipelines.checkpoints import list_checkpoints, policy_dir

    if spec in SCRIPTED:
        return Source(spec, "scripted", "scripted")
    p = storage.resolve(spec) if ("://" in spec or Path(spec).exists()) else None
    if p is not None:
        if p.is_dir():
            cands = [p / "final.pt"] + sorted(p.glob("ckpt-*.pt"))[-1:]
            found = [c for c in cands if c.is_file()]
            if not found:
                raise EvalError(f"no policy in {spec} (final.pt or ckpt-*.pt)")
            p = found[0]
        if not p.is_file():
            raise EvalError(f"no policy file at {spec}")
        meta = _read_meta(p)
        # policies/<run>/final.pt -> "<run>"; a run's ckpt dir ".../run_id=<run>/ckpt-000003.pt" -> "<run>@3"
        stem = p.name.removesuffix(".pt")
        parent = p.parent.name.split("=")[-1]
        label = parent if stem == "final" else f"{parent}@{stem}"
        return Source(_safe(label), str(spec), "trained", p, meta)
    if lake is not None and re.fullmatch(r"[A-Za-z0-9_.\-]+", spec):
        final = policy_dir(lake, spec) / "final.pt"
        if final.is_file():
            return Source(_safe(spec), f"{spec} (lake policy)", "trained", final, _read_meta(final))
        ckpts = list_checkpoints(lake, spec)
        if ckpts:
            return Source(_safe(spec), f"{spec} (lake checkpoint {ckpts[-1].name})", "trained", ckpts[-1],
                          _read_meta(ckpts[-1]))
    raise EvalError(f"unknown policy {spec!r}: not a file, a folder with a policy, a run of the lake with a "
                    f"policy or checkpoint, or one of {', '.join(SCRIPTED)}")


def env_config_for(sources: list[Source], preset: str | None = None, grid_size: int | None = None,
                   overrides: dict[str, Any] | None = None):
    """The environment: the first trained source's own, with ``preset`` / ``grid_size`` /
    ``overrides`` over it; checks that every trained source can act in it."""
    from karmic.envs.config import make_config
    from karmic.envs.core import HarvestVecEnv

    trained = [s for s in sources if s.kind == "trained"]
    tc = dict(trained[0].meta.get("train_config") or {}) if trained else {}
    env_over = dict(tc.get("env_overrides") or {})
    env_over.update(overrides or {})
    if preset is not None:
        tc["preset"] = preset
    if grid_size is not None:
        env_over["grid_size"] = grid_size
    elif "grid_size" not in env_over and tc.get("grid_size") is not None:
        env_over["grid_size"] = tc["grid_size"]
    elif "grid_size" not in env_over and tc.get("preset") is None:
        env_over["grid_size"] = 10
    try:
        config = make_config(tc.get("preset"), **env_over)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    shape = HarvestVecEnv(config).obs_shape
    for s in trained:
        if tuple(s.meta["obs_shape"]) != tuple(shape):
            raise EvalError(f"{s.label}: the policy takes observations {tuple(s.meta['obs_shape'])}, the "
                            f"environment gives {tuple(shape)} (identity channels or view size differ)")
        k = s.meta["n_agents_input"]
        if k and k != config.n_agents:
            raise EvalError(f"{s.label}: the policy was trained with {k} agents' identity input, the "
                            f"environment has {config.n_agents}")
    return config


@dataclass
class Scenario:
    name: str  # solo | solo-frozen | cross-play
    focal: Source
    background: Source | None = None
    n_focal: int = 1


def plan(sources: list[Source], scenarios: list[str], n_focal: int = 1,
         references: bool = True) -> list[Scenario]:
    """Solo scenarios for every source (and the scripted references, unless given or not
    wanted); cross-play for every ordered pair of distinct sources."""
    for s in scenarios:
        if s not in SCENARIOS:
            raise EvalError(f"unknown scenario {s!r}; choose {', '.join(SCENARIOS)}")
    out: list[Scenario] = []
    solo_sources = list(sources)
    if references:
        solo_sources += [Source(r, "scripted", "scripted") for r in SCRIPTED
                         if r not in {s.label for s in sources}]
    for name in ("solo", "solo-frozen"):
        if name in scenarios:
            out += [Scenario(name, s) for s in solo_sources]
    if "cross-play" in scenarios:
        if len(sources) < 2:
            raise EvalError("cross-play needs two policies (focal and background)")
        out += [Scenario("cross-play", a, b, n_focal) for a in sources for b in sources if a is not b]
    return out


def roles(sc: Scenario, n_agents: int) -> list[tuple[str, Source | None]]:
    if sc.name == "solo":
        return [("solo", sc.focal)] + [("absent", None)] * (n_agents - 1)
    if sc.name == "solo-frozen":
        return [("focal", sc.focal)] + [("frozen", None)] * (n_agents - 1)
    if not 1 <= sc.n_focal < n_agents:
        raise EvalError(f"--focal {sc.n_focal}: must be between 1 and {n_agents - 1} for {n_agents} agents")
    return [("focal", sc.focal)] * sc.n_focal + [("background", sc.background)] * (n_agents - sc.n_focal)


MAX_BATCH = 32  # episodes played together as one batch of environments
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _stream(seed: int, *keys: int) -> int:
    """A 64-bit seed for the stream ``keys`` of ``seed`` (numpy's SeedSequence: distinct keys,
    unrelated streams)."""
    return int(np.random.SeedSequence([int(seed) & _MASK64, *keys]).generate_state(1, np.uint64)[0])


def episode_seed(seed: int, episode: int) -> int:
    """The environment seed of episode ``episode`` of an evaluation run with ``seed``."""
    return _stream(seed, 1, episode)


def policy_stream(seed: int, agent: int, episode: int) -> int:
    """The seed of the actions drawn in episode ``episode`` by the source whose first agent is
    ``agent``."""
    return _stream(seed, 2, agent, episode)


class _TrainedActor:
    """A trained source acting for ``agents`` in B episodes at once: one forward pass over the
    (B * K) observations per step, each LSTM state its own (env, agent) slot."""

    def __init__(self, src: Source, agents: np.ndarray, seed: int, first: int) -> None:
        import torch

        from karmic.agents.policy import load_policy

        pol = load_policy(src.path)
        self.agent, self.greedy = pol.agent, pol.greedy
        self.agents, self.seed, self.first = agents, seed, first
        self.torch = torch

    def start(self, env, episodes: list[int]) -> None:
        torch, B, K = self.torch, len(episodes), len(self.agents)
        self.state = self.agent.initial_state(B * K)
        self.starts = torch.ones(1, B * K, dtype=torch.bool)
        self.ids = torch.from_numpy(np.tile(self.agents, B)) if self.agent.n_agents else None
        # each episode's uniforms for its whole length, drawn from its own stream
        self.u = None if self.greedy else np.stack([
            np.random.default_rng(policy_stream(self.seed, self.first, e)).random((env.max_steps, K))
            for e in episodes])

    def act(self, env, obs: np.ndarray, t: int) -> np.ndarray:
        B, K = obs.shape[0], len(self.agents)
        x = self.torch.from_numpy(obs[:, self.agents].reshape(1, B * K, *obs.shape[2:]))
        logits, _, self.state, _ = self.agent(x, self.state, self.starts, self.ids)
        if self.starts[0, 0]:
            self.starts = self.torch.zeros_like(self.starts)
        if self.greedy:  # a Q-learner: the arg-max (karmic.agents.policy.load_policy)
            return logits[0].argmax(-1).numpy().reshape(B, K)
        # inverse CDF: the first action whose cumulative probability exceeds the uniform
        cdf = self.torch.cumsum(self.torch.softmax(logits[0], -1), -1).numpy()
        u = self.u[:, t].reshape(B * K, 1)
        return (u >= cdf[:, :-1]).sum(-1).reshape(B, K)

    def observe(self, events) -> None:
        pass


class _ScriptedActor:
    """A scripted source (``karmic.policies``): one policy per episode, seeded by its stream."""

    def __init__(self, src: Source, agents: np.ndarray, seed: int, first: int) -> None:
        self.label, self.agents, self.seed, self.first = src.label, [int(n) for n in agents], seed, first

    def start(self, env, episodes: list[int]) -> None:
        from karmic.policies import make_policy

        self.pols = [make_policy(self.label, policy_stream(self.seed, self.first, e)) for e in episodes]

    def act(self, env, obs: np.ndarray, t: int) -> np.ndarray:
        return np.array([[p.act_one(env, b, n) for n in self.agents] for b, p in enumerate(self.pols)],
                        dtype=np.int64).reshape(len(self.pols), len(self.agents))

    def observe(self, events) -> None:
        for p in self.pols:  # events of every env: a policy keys what it keeps by env (b)
            p.observe(events)


def _episode_events(ev, lo: int, hi: int, episode: int):
    """Rows lo:hi of a batch's recorded events (one env's) as episode ``episode`` of env 0."""
    from dataclasses import fields, replace

    part = replace(ev, **{f.name: getattr(ev, f.name)[lo:hi] for f in fields(ev)})
    part.env = np.zeros(hi - lo, part.env.dtype)
    part.episode = np.full(hi - lo, episode, part.episode.dtype)
    return part


def run_scenario(lake, sc: Scenario, config, episodes: int, seed: int,
                 on_episode: Callable[[], None] | None = None, run_id: str | None = None) -> str:
    """Play ``episodes`` episodes of ``sc`` and write them as one eval run; returns its run id."""
    import contextlib

    from karmic.envs.core import HarvestVecEnv

    N, T = config.n_agents, config.episode_length
    who = roles(sc, N)
    bg = sc.background.label if sc.background is not None else None
    run_id = run_id or _safe(f"eval-{sc.name}-{sc.focal.label}" + (f"-in-{bg}" if bg else "")
                             + f"-s{seed}-{uuid.uuid4().hex[:6]}")
    # one acting policy per distinct source, for the agents it controls (agents of a source share
    # it, as in training); its streams are named by its first agent
    by_label: dict[str, tuple[Source, list[int]]] = {}
    for k, (_, src) in enumerate(who):
        if src is not None:
            by_label.setdefault(src.label, (src, []))[1].append(k)
    acting = [((_TrainedActor if src.kind == "trained" else _ScriptedActor)(src, np.array(ks), seed, ks[0]),
               np.array(ks)) for src, ks in by_label.values()]
    trained = any(isinstance(a, _TrainedActor) for a, _ in acting)
    listens = [a for a, _ in acting if isinstance(a, _ScriptedActor)]
    condition = f"eval-{sc.name}"
    writer = LakeWriter(lake, run_id, meta={
        "kind": "eval", "condition": condition, "policy": sc.focal.label, "grid_size": config.grid_size,
        "seed": seed, "n_agents": N, "num_envs": min(episodes, MAX_BATCH), "episodes": episodes,
        "scenario": sc.name,
        "focal": {"label": sc.focal.label, "origin": sc.focal.origin, "agents": sc.n_focal if bg else 1},
        "background": None if sc.background is None else {"label": bg, "origin": sc.background.origin},
        "replayable": False, "config": config.to_dict(),
    }, flush_episodes=10)
    write_table(lake, "eval_agents", run_id, pa.Table.from_pylist([
        {"run_id": run_id, "agent": f"agent_{k}", "role": role,
         "policy": src.label if src is not None else "no-op" if role == "frozen" else None,
         "source": src.origin if src is not None else None, "scenario": sc.name}
        for k, (role, src) in enumerate(who)], schema=EVAL_AGENTS_SCHEMA))
    others = np.array([src is None for _, src in who])
    done = 0
    try:
        with contextlib.ExitStack() as stack:
            if trained:
                import torch

                threads = torch.get_num_threads()
                stack.callback(torch.set_num_threads, threads)
                torch.set_num_threads(1)
                stack.enter_context(torch.inference_mode())
            for first in range(0, episodes, MAX_BATCH):
                eps = list(range(first, min(episodes, first + MAX_BATCH)))
                B = len(eps)
                env = HarvestVecEnv(config, num_envs=B)
                env.record_events = True
                obs = env.reset(seed=[episode_seed(seed, e) for e in eps])
                if sc.name == "solo":
                    # the others leave the board for the whole episode: their timers outlast it
                    env.state.removed[:, others] = T + 1
                    obs = env.observe()
                for p, _ in acting:
                    p.start(env, eps)
                a = np.full((B, N), NOOP, np.int64)  # the frozen and absent agents: no-op
                for t in range(T):
                    for p, ks in acting:
                        a[:, ks] = p.act(env, obs, t)
                    obs, _, _, ev = env.step(a)
                    if listens and len(ev):
                        for p in listens:
                            p.observe(ev)
                ev = env.take_recorded()  # ordered by (env, step, seq)
                bounds = np.searchsorted(ev.env, np.arange(B + 1))
                stats = env.episode_stats()
                for b, e in enumerate(eps):
                    part = _episode_events(ev, bounds[b], bounds[b + 1], e)
                    writer.write_events(part, e * T + part.t.astype(np.int64))
                    writer.write_episodes(episodes_table(run_id, np.array([e]), np.array([e * T]),
                                                         {k: v[b : b + 1] for k, v in stats.items()},
                                                         condition, config.grid_size, seed))
                    done += 1
                    if on_episode is not None:
                        on_episode()
    except BaseException as exc:
        writer.close("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", episodes_done=done)
        raise
    writer.close("completed", episodes_done=done)  # one status vocabulary (pipelines.schema)
    return run_id


def summary(lake, run_ids: list[str]) -> tuple[list[str], list[tuple]]:
    """``queries/eval_summary.sql`` over these runs: one row per run and role."""
    from karmic.lake import connect, fetch, query_sql

    con = connect(lake)
    con.register("_eval_runs", pa.table({"run_id": pa.array(run_ids, pa.string())}))
    sql = query_sql("eval_summary").strip().rstrip(";")
    return fetch(con, f"select s.* from ({sql}) as s semi join _eval_runs using (run_id)")


def evaluate(lake, specs: list[str], scenarios: list[str], episodes: int = 4, seed: int = 0,
             n_focal: int = 1, preset: str | None = None, grid_size: int | None = None,
             max_steps: int | None = None, references: bool = True,
             on_start: Callable[[int], None] | None = None,
             on_episode: Callable[[], None] | None = None) -> tuple[list[str], list[tuple], list[str]]:
    """Resolve, check, plan and play every scenario: (columns, summary rows, run ids)."""
    if episodes < 1:
        raise EvalError(f"--episodes must be >= 1, got {episodes}")
    if not specs:
        raise EvalError("give at least one policy")
    sources = [resolve_source(s, lake) for s in specs]
    labels = [s.label for s in sources]
    if len(set(labels)) != len(labels):
        raise EvalError(f"two sources with the same label ({', '.join(labels)}): give distinct policies")
    config = env_config_for(sources, preset, grid_size, {"max_steps": max_steps} if max_steps else None)
    scs = plan(sources, scenarios, n_focal, references)
    for sc in scs:
        roles(sc, config.n_agents)  # a bad --focal: one line before anything is written
    if on_start is not None:
        on_start(len(scs) * episodes)
    run_ids = [run_scenario(lake, sc, config, episodes, seed, on_episode) for sc in scs]
    cols, rows = summary(lake, run_ids)
    return cols, rows, run_ids


__all__ = ["MAX_BATCH", "SCENARIOS", "EvalError", "Scenario", "Source", "env_config_for", "episode_seed", "evaluate",
           "plan", "policy_stream", "resolve_source", "run_scenario", "summary"]
