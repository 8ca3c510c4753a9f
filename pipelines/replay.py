"""Replay: re-simulate episodes from the lake's action log and check them against the stored events.

The environment is deterministic given its config (run.json), the RNG state just before the reset,
the rigged pairs given to the reset and every step's joint action; the ``actions`` table stores the
last three per episode (``pipelines.schema.ACTIONS_SCHEMA``). So an episode can be rebuilt from the
lake alone, without the policy or its checkpoint, and the events it regenerates must equal the
stored ones row for row. A difference means the stored events, the actions, or the environment's
rules are not the ones that produced the run.

- :func:`check_run` replays every episode of a run (batched: up to ``batch`` episodes stepped
  together, which is bit-identical to one at a time) and returns ``(n_checked, first_mismatch)``.
- :func:`check_episode` replays one.
- :func:`render_episode` replays one, checks it and writes it as an animated GIF (Pillow), an MP4
  (ffmpeg, when on PATH) or a PNG strip of frames.

Each episode is checked three ways, in this order: its events (every column of the events table,
``global_step`` included), its ``episodes`` rows (returns and counts; complete episodes only), and
a digest of the environment state after its last step (``end_digest``), which catches a changed
action that left no event behind (a turn, say) but moved the state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from karmic.events import EVENT_TYPES, SPAWN_CAUSES
from karmic.lake import LakeError
from pipelines import storage
from pipelines.storage import LakePath

# the events table's columns compared by a replay (run_id is the partition)
EVENT_COLUMNS = ("episode", "t", "global_step", "seq", "event_type", "agent", "target", "x", "y",
                 "target_x", "target_y", "direction", "apple_context", "spawn_cause")
STAT_COLUMNS = ("steps", "return", "apples", "zaps_fired", "zaps_hit", "times_hit", "frozen_steps")
_MASK64 = 0xFFFFFFFFFFFFFFFF


class ReplayError(LakeError):
    """The run cannot be replayed (unknown run, no action log, bad episode): one line, exit 2."""


class ReplayMismatch(Exception):
    """A replayed episode differs from the lake (``render_episode``): one line, exit 1."""


# --- what the writers record ----------------------------------------------------------------------
def env_digest(state, b: int = 0) -> int:
    """A signed 64-bit hash of env ``b``'s state (board, agents, timers, clock, event counter, RNG)."""
    h = hashlib.blake2b(digest_size=8)
    for a in (state.apples[b], state.pos[b], state.dirs[b], state.removed[b], state.t[b],
              state.seq[b], state.rng[b]):
        h.update(np.ascontiguousarray(a).tobytes())
    return int.from_bytes(h.digest(), "little", signed=True)


def seeded_rng(seed: int) -> int:
    """The RNG state ``HarvestVecEnv.seed(seed)`` gives an env (what a seeded reset starts from)."""
    from karmic.envs.kernels import splitmix64

    return int(splitmix64(np.uint64(int(seed) & _MASK64)))


# --- reading a run ------------------------------------------------------------------------------
def _read_table(lake: LakePath, table: str, run_id: str) -> pa.Table | None:
    d = lake / table / f"run_id={run_id}"
    files = sorted(d.glob("*.parquet")) if storage.is_remote(d) or d.is_dir() else []
    if not files:
        return None
    try:
        parts = [storage.read_parquet(f) for f in files]
    except (OSError, pa.ArrowException) as exc:
        raise ReplayError(f"unreadable part file in {d}: {str(exc).splitlines()[0]}") from None
    t = pa.concat_tables(parts, promote_options="default")
    return t.drop_columns([c for c in ("run_id",) if c in t.column_names])


@dataclass
class RunLog:
    """What the lake holds of one run, as replay needs it."""

    run_id: str
    meta: dict
    config: object  # HarvestConfig
    num_envs: int
    actions: pa.Table  # sorted by (episode, agent index)
    events: pa.Table  # sorted by (episode, seq)
    episodes: pa.Table | None
    n_agents: int

    @property
    def episode_ids(self) -> np.ndarray:
        return np.unique(self.actions.column("episode").to_numpy())


def load_run(lake: Path | str, run_id: str) -> RunLog:
    from karmic.envs.config import HarvestConfig

    lake = storage.resolve(lake)
    text = storage.read_text(lake / "runs" / f"run_id={run_id}" / "run.json")
    if text is None:
        raise ReplayError(f"run not found in {lake}: {run_id}")
    try:
        meta = json.loads(text)
        config = HarvestConfig.from_dict(meta["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ReplayError(f"run {run_id}: run.json has no usable environment config ({exc})") from None
    actions = _read_table(lake, "actions", run_id)
    if actions is None or actions.num_rows == 0:
        raise ReplayError(f"run {run_id} has no action log (it was written before the lake kept "
                          "actions, or by a writer that does not): it cannot be replayed")
    agent_idx = _agent_codes(actions.column("agent"))
    actions = actions.append_column("_agent", pa.array(agent_idx)).sort_by(
        [("episode", "ascending"), ("_agent", "ascending")])
    events = _read_table(lake, "events", run_id)
    if events is None:
        events = pa.table({c: pa.array([], pa.int64()) for c in EVENT_COLUMNS})
    events = events.sort_by([("episode", "ascending"), ("seq", "ascending")])
    episodes = _read_table(lake, "episodes", run_id)
    return RunLog(run_id=run_id, meta=meta, config=config, num_envs=int(meta.get("num_envs") or 1),
                  actions=actions, events=events, episodes=episodes, n_agents=config.n_agents)


# --- events as comparable integer codes ---------------------------------------------------------
def _agent_codes(col) -> np.ndarray:
    """'agent_<i>' -> i; null -> -1; anything else -> -2 (never equal to a real agent)."""
    col = pc.cast(col, pa.string()) if col.type != pa.string() else col
    null = pc.is_null(col).to_numpy(zero_copy_only=False)
    ok = pc.fill_null(pc.match_substring_regex(col, r"^agent_\d+$"), False).to_numpy(zero_copy_only=False)
    digits = pc.fill_null(pc.utf8_slice_codeunits(col, 6), "0")
    out = np.full(len(col), -2, np.int64)
    if ok.any():
        out[ok] = pc.cast(pc.filter(digits, pa.array(ok)), pa.int64()).to_numpy()
    out[null] = -1
    return out


def _name_codes(col, names: tuple[str, ...]) -> np.ndarray:
    idx = pc.index_in(col, value_set=pa.array(names)).to_numpy(zero_copy_only=False)
    null = pc.is_null(col).to_numpy(zero_copy_only=False)
    out = np.where(np.isnan(idx.astype(float)), -2, idx).astype(np.int64)
    out[null] = -1
    return out


def event_codes(t: pa.Table) -> dict[str, np.ndarray]:
    """The events table's columns as int64 arrays (nulls -1, unknown names -2)."""
    out = {}
    for c in EVENT_COLUMNS:
        if c not in t.column_names:
            out[c] = np.full(t.num_rows, -3, np.int64)
            continue
        col = t.column(c)
        if c == "event_type":
            out[c] = _name_codes(col, EVENT_TYPES)
        elif c == "spawn_cause":
            out[c] = _name_codes(col, SPAWN_CAUSES)
        elif c in ("agent", "target"):
            out[c] = _agent_codes(col)
        else:
            if pa.types.is_boolean(col.type):
                col = pc.cast(col, pa.int8())
            out[c] = np.asarray(pc.fill_null(col, -1).to_numpy(zero_copy_only=False)).astype(np.int64)
    return out


def _describe(row: dict) -> str:
    et = row.get("event_type")
    what = f"{et} {row.get('agent')}"
    if row.get("target") is not None:
        what += f" -> {row['target']}"
    what += f" at ({row.get('x')}, {row.get('y')})"
    if et == "ZAP_HIT":
        what += f" apple_context={row.get('apple_context')}"
    if et == "SPAWN":
        what += f" {row.get('spawn_cause')}"
    return f"t={row.get('t')} seq={row.get('seq')} {what}"


def _first_event_mismatch(run_id: str, ep: int, stored: pa.Table, replayed: pa.Table) -> str | None:
    a, b = event_codes(stored), event_codes(replayed)
    n, m = stored.num_rows, replayed.num_rows
    k = min(n, m)
    diff = np.zeros(k, bool)
    for c in EVENT_COLUMNS:
        diff |= a[c][:k] != b[c][:k]
    if diff.any():
        i = int(np.argmax(diff))
        cols = [c for c in EVENT_COLUMNS if a[c][i] != b[c][i]]
        s, r = stored.slice(i, 1).to_pylist()[0], replayed.slice(i, 1).to_pylist()[0]
        detail = ", ".join(f"{c} {s.get(c)!r} != {r.get(c)!r}" for c in cols)
        return (f"run {run_id} episode {ep}: event {i} differs ({detail}): "
                f"stored {_describe(s)}; replayed {_describe(r)}")
    if n != m:
        extra = (f"first missing from the lake: {_describe(replayed.slice(k, 1).to_pylist()[0])}" if m > n
                 else f"first not replayed: {_describe(stored.slice(k, 1).to_pylist()[0])}")
        return f"run {run_id} episode {ep}: the lake has {n} events, the replay {m} ({extra})"
    return None


# --- replaying ----------------------------------------------------------------------------------
@dataclass
class Replayed:
    episode: int
    events: pa.Table  # the events table rows this episode regenerates
    stats: dict[str, np.ndarray]  # (N,) per agent
    digest: int


def _episode_inputs(run: RunLog, ep: int) -> dict:
    """The stored reset state, pairs and (steps, N) actions of episode ``ep``."""
    ep_col = run.actions.column("episode").to_numpy()
    lo, hi = np.searchsorted(ep_col, [ep, ep + 1])
    rows = run.actions.slice(lo, hi - lo)
    if rows.num_rows == 0:
        raise ReplayError(f"run {run.run_id} has no episode {ep} in its action log "
                          f"(episodes {int(ep_col[0])}..{int(ep_col[-1])})")
    N = run.n_agents
    agents = rows.column("_agent").to_numpy()
    steps = rows.column("steps").to_numpy()
    acts_col = rows.column("actions").combine_chunks()
    if rows.num_rows != N or not np.array_equal(agents, np.arange(N)) or len(set(steps.tolist())) != 1:
        return {"bad": f"run {run.run_id} episode {ep}: the action log has rows for agents "
                       f"{sorted(agents.tolist())} with steps {sorted(set(steps.tolist()))}, "
                       f"expected one row per agent 0..{N - 1} with equal steps"}
    T = int(steps[0])
    lens = pc.list_value_length(acts_col).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(acts_col).to_numpy(zero_copy_only=False)
    if not (lens == T).all() or flat.size != N * T:
        return {"bad": f"run {run.run_id} episode {ep}: an action list's length is not its steps ({T})"}
    if flat.size and (flat.min() < 0 or flat.max() > 7):
        return {"bad": f"run {run.run_id} episode {ep}: an action is outside 0..7"}
    pairs = np.asarray(rows.column("pairs")[0].as_py() or [], np.int64).reshape(-1, 2)
    return {
        "episode": ep, "steps": T, "actions": flat.reshape(N, T).T.astype(np.int64),
        "rng": int(rows.column("reset_rng")[0].as_py()), "pairs": [tuple(p) for p in pairs.tolist()],
        "global_step": int(rows.column("global_step")[0].as_py()),
        "digest": int(rows.column("end_digest")[0].as_py()),
    }


def _make_env(config, inputs: list[dict]):
    """A batched env reset exactly as each episode's was (rng state and pairs per env)."""
    from karmic.envs.core import HarvestVecEnv

    env = HarvestVecEnv(config, num_envs=len(inputs))
    env.record_events = True
    env.state.rng[:] = np.array([x["rng"] for x in inputs], np.uint64)
    env._seeded = True  # the state above is the seeded one: reset must not re-seed
    pairs = [x["pairs"] for x in inputs]
    obs = env.reset(pairs=pairs if any(pairs) else None)
    return env, obs


def _replayed(run: RunLog, env, inputs: list[dict]) -> list[Replayed]:
    from pipelines.writer import events_table

    ev = env.take_recorded()
    eps = np.array([x["episode"] for x in inputs], np.int64)
    gs0 = np.array([x["global_step"] for x in inputs], np.int64)
    envs = ev.env.astype(np.int64)
    ev.episode = eps[envs]
    gstep = gs0[envs] + ev.t.astype(np.int64) * run.num_envs
    table = events_table(run.run_id, ev, gstep).drop_columns(["run_id"])
    bounds = np.searchsorted(envs, np.arange(len(inputs) + 1))
    stats = env.episode_stats()
    return [Replayed(int(eps[b]), table.slice(bounds[b], bounds[b + 1] - bounds[b]),
                     {k: v[b] for k, v in stats.items()}, env_digest(env.state, b))
            for b in range(len(inputs))]


def replay_batch(run: RunLog, inputs: list[dict]) -> list[Replayed]:
    """Step the episodes of ``inputs`` (equal ``steps``) together from their stored resets."""
    env, _ = _make_env(run.config, inputs)
    acts = np.stack([x["actions"] for x in inputs], axis=1)  # (T, B, N)
    for t in range(acts.shape[0]):
        env.step(acts[t])
    return _replayed(run, env, inputs)


def compare(run: RunLog, rep: Replayed, inputs: dict, ev_slices: dict[int, pa.Table]) -> str | None:
    """The first difference between a replayed episode and the lake, as one line, or None."""
    ep = rep.episode
    stored = ev_slices.get(ep, run.events.slice(0, 0))
    msg = _first_event_mismatch(run.run_id, ep, stored, rep.events)
    if msg:
        return msg
    if run.episodes is not None and inputs["steps"] == run.config.episode_length:
        rows = run.episodes.filter(pc.equal(run.episodes.column("episode"), ep))
        if rows.num_rows:
            idx = _agent_codes(rows.column("agent"))
            for c in STAT_COLUMNS:
                if c not in rows.column_names:
                    continue
                vals = rows.column(c).to_numpy(zero_copy_only=False)
                for j, a in enumerate(idx):
                    want = rep.stats[c][a] if 0 <= a < run.n_agents else None
                    if want is None or vals[j] != want:
                        return (f"run {run.run_id} episode {ep}: episodes row of agent_{a}: {c} "
                                f"stored {vals[j]!r}, replayed {want!r}")
    if rep.digest != inputs["digest"]:
        return (f"run {run.run_id} episode {ep}: events match but the state after the last step "
                "does not (end_digest): an action that leaves no event differs")
    return None


def _event_slices(run: RunLog) -> dict[int, pa.Table]:
    ep = run.events.column("episode").to_numpy(zero_copy_only=False)
    if not len(ep):
        return {}
    uniq, starts = np.unique(ep, return_index=True)
    ends = np.append(starts[1:], len(ep))
    return {int(e): run.events.slice(s, n - s) for e, s, n in zip(uniq, starts, ends, strict=True)}


def check_run(lake: Path | str, run_id: str, batch: int = 32) -> tuple[int, str | None]:
    """Replay every episode of ``run_id``: (episodes checked, the first mismatch as one line or
    None). Raises :class:`ReplayError` when the run cannot be replayed at all."""
    run = load_run(lake, run_id)
    slices = _event_slices(run)
    episodes = [int(e) for e in run.episode_ids]
    missing = sorted(set(slices) - set(episodes))
    inputs = []
    for ep in episodes:
        x = _episode_inputs(run, ep)
        if "bad" in x:
            return 0, x["bad"]
        inputs.append(x)
    by_steps: dict[int, list[dict]] = {}
    for x in inputs:
        by_steps.setdefault(x["steps"], []).append(x)
    first: tuple[int, str] | None = None
    n = 0
    for group in by_steps.values():
        for i in range(0, len(group), batch):
            chunk = group[i:i + batch]
            if first is not None and chunk[0]["episode"] > first[0]:
                break
            for x, rep in zip(chunk, replay_batch(run, chunk), strict=True):
                n += 1
                msg = compare(run, rep, x, slices)
                if msg and (first is None or x["episode"] < first[0]):
                    first = (x["episode"], msg)
                    break
    if missing and (first is None or missing[0] < first[0]):
        first = (missing[0], f"run {run_id} episode {missing[0]}: events in the lake but no actions")
    return n, None if first is None else first[1]


def check_episode(lake: Path | str, run_id: str, episode: int) -> tuple[int, str | None]:
    """Replay one episode: (events compared, first mismatch or None)."""
    run = load_run(lake, run_id)
    x = _episode_inputs(run, episode)
    if "bad" in x:
        return 0, x["bad"]
    rep = replay_batch(run, [x])[0]
    return rep.events.num_rows, compare(run, rep, x, _event_slices(run))


# --- rendering ----------------------------------------------------------------------------------
def render_episode(lake: Path | str, run_id: str, episode: int, out_path: str | Path,
                   agent: str | None = None, fps: int = 8, max_frames: int | None = None,
                   scale: int | None = None, every: int = 1) -> Path:
    """Replay ``episode`` of ``run_id`` from the lake, check it, and write it to ``out_path``:
    ``.gif`` (animated), ``.mp4`` (needs ffmpeg on PATH) or ``.png`` (a strip of 8 frames).

    Frames: the board after the reset and after every ``every``-th step (and the last; up to
    ``max_frames`` of them), with agents
    (colour, id, facing), beams, hits, removed agents (a hollow square where they were hit, with
    the steps left), and a caption with t, apples on the board and the step's social events.
    ``agent="agent_2"`` outlines that agent and adds its egocentric view beside the board.
    Raises :class:`ReplayMismatch` if the replay differs from the lake (nothing is written)."""
    from karmic.envs.render import annotated_frame, compact_frame, save_frames

    out = Path(out_path)
    if out.suffix.lower() not in (".gif", ".mp4", ".png"):
        raise ReplayError(f"--out {out}: use a .gif, .mp4 or .png file")
    if out.suffix.lower() == ".mp4":
        import shutil

        if shutil.which("ffmpeg") is None:
            raise ReplayError(f"writing {out.name} needs ffmpeg on PATH (not found): write a .gif instead")
    if fps < 1:
        raise ReplayError(f"--fps must be >= 1, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ReplayError(f"--max-frames must be >= 1, got {max_frames}")
    if every < 1:
        raise ReplayError(f"--every must be >= 1, got {every}")
    run = load_run(lake, run_id)
    focus = None
    if agent is not None:
        names = [f"agent_{i}" for i in range(run.n_agents)]
        if agent not in names:
            raise ReplayError(f"--agent {agent!r}: the run's agents are {', '.join(names)}")
        focus = names.index(agent)
    x = _episode_inputs(run, episode)
    if "bad" in x:
        raise ReplayMismatch(x["bad"])
    env, obs = _make_env(run.config, [x])
    T = x["steps"]
    # the frames kept: the reset, every `every`-th step and the last step (the whole episode is
    # still replayed and checked)
    n_kept = len({*range(0, T + 1, every), T})
    n_frames = n_kept if max_frames is None else min(n_kept, max_frames)
    frames = [compact_frame(annotated_frame(env, 0, env.reset_events, episode=episode,
                                            focus=focus, obs=obs, scale=scale))]
    for t in range(T):
        obs, _, _, ev = env.step(x["actions"][t][None])
        if len(frames) < n_frames and ((t + 1) % every == 0 or t + 1 == T):
            frames.append(compact_frame(annotated_frame(env, 0, ev, episode=episode, focus=focus,
                                                        obs=obs, scale=scale)))
    rep = _replayed(run, env, [x])[0]
    msg = compare(run, rep, x, _event_slices(run))
    if msg:
        raise ReplayMismatch(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_frames(frames, out, fps=fps)
    return out
