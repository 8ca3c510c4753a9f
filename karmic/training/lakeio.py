"""The training run's side of the lake: run.json, events and episodes per round, the ledger.

``RunLake(lake, run_id, cfg, env_config, n_agents)`` is the only place the training loop touches
the events / episodes / runs tables and the matchmaker's ledgers (``karmic.ledger.VecLedger``).
It writes them with the lake's own writer, ``pipelines.writer.LakeWriter`` (docs/DESIGN.md schemas,
atomic part files, a directory or an ``s3://`` lake), flushed once per round.

- A round's events get run episode numbers ``round * B + env`` and
  ``global_step = (round * max_steps + t) * B``; the episodes rows get the same numbering and
  ``global_step`` at episode start.
- Exactly once across a kill and a resume: a resumed run re-runs every round and update after
  its last checkpoint, and re-produces the same rows (the run is deterministic). Each round's
  events, actions and episode rows are one part per table named by the round
  (``round-<r>.parquet``), each update's TVT transports one part named by the update
  (``update-<u>.parquet``, :meth:`write_transports`), written with
  ``pipelines.writer.write_table_once``: a part whose name is taken is not written again. Parts of
  older lakes (``part-<n>.parquet``) are read once at construction for the rounds (highest
  episode) and updates they hold, which are not written again either. Temporary files a killed
  writer of this run left behind are removed at construction.
- Actions (``begin_round`` / ``record_actions``, called by the rollout): every step's joint action
  of the round, each env's reset RNG state and rigged pairs, written with the round's events as the
  ``actions`` table (``pipelines.replay`` re-simulates any episode from it).
- The matchmaker's ledger is the fold of every event of the run in (episode, seq) order with
  decay after each episode: live, round by round (:meth:`fold_round`), and on resume from the
  lake (:meth:`rebuild_ledger`), so both give the same debts as ``karmic ledger``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from karmic.events import EVENT_COLUMNS, EVENT_TYPES, NULL, SPAWN_CAUSES, EventBatch
from pipelines import storage
from pipelines.replay import env_digest
from pipelines.storage import LakePath
from pipelines.writer import (
    LakeWriter,
    actions_table,
    episodes_table,
    events_table,
    now_iso,
    versions,
    write_table_once,
)

TABLES = ("events", "episodes", "actions", "tvt_transports")


def _legacy_parts(part_dir: LakePath) -> list[LakePath]:
    """A run partition's parts from before parts were named by round / update (``part-<n>``)."""
    files = sorted(part_dir.glob("part-*.parquet")) if storage.is_remote(part_dir) or part_dir.is_dir() else []
    return files


def _max_episode(part_dir: LakePath) -> int:
    """Highest episode in a run partition's legacy parts, -1 if none."""
    best = -1
    for f in _legacy_parts(part_dir):
        col = storage.read_parquet(f, columns=["episode"]).column("episode")
        if len(col):
            best = max(best, int(pc.max(col).as_py()))
    return best


def _legacy_updates(part_dir: LakePath) -> set[int]:
    """The updates a run's legacy ``tvt_transports`` parts hold."""
    out: set[int] = set()
    for f in _legacy_parts(part_dir):
        out.update(int(u) for u in pc.unique(storage.read_parquet(f, columns=["update"]).column("update")).to_pylist())
    return out


class RunLake:
    def __init__(self, lake: Path | str, run_id: str, cfg, env_config, n_agents: int) -> None:
        self.lake = storage.resolve(lake)
        self.run_id = run_id
        self.cfg = cfg
        self.env_config = env_config
        self.N = int(n_agents)
        # one part file per round and table, written at the end of the round (before any
        # checkpoint that counts the round), as the resume logic below expects
        self.writer = LakeWriter(self.lake, run_id, flush_events=1, flush_episodes=1)
        for table in (*TABLES, "trajectories", "checkpoints"):
            storage.remove_stale_temps(self.lake / table / f"run_id={run_id}")
        self.events_written = _max_episode(self.lake / "events" / f"run_id={run_id}")
        self.episodes_written = _max_episode(self.lake / "episodes" / f"run_id={run_id}")
        self.actions_written = _max_episode(self.lake / "actions" / f"run_id={run_id}")
        self.transports_written = _legacy_updates(self.lake / "tvt_transports" / f"run_id={run_id}")
        self._env = None  # set by begin_round: the round's actions are then recorded
        self.log_actions = True  # False only to measure what the action log costs

    # -- run.json ----------------------------------------------------------------------------
    def run_exists(self) -> bool:
        return self.writer.run_json_path.is_file()

    def start_run(self, total_steps: int) -> None:
        import torch

        cfg = self.cfg
        self.writer.meta = {
            "run_id": self.run_id,
            "kind": "train",
            "condition": cfg.mode,
            "algo": getattr(cfg, "algo", "ppo"),
            "grid_size": cfg.grid_size,
            "seed": cfg.seed,
            "n_agents": self.N,
            "num_envs": cfg.num_envs,
            "total_steps": int(total_steps),
            "config": self.env_config.to_dict(),
            "train_config": cfg.to_dict(),
            "precision": getattr(self, "precision_note", None),
            "started_at": now_iso(),
            "versions": {**versions(), "torch": torch.__version__},
            **getattr(self, "extra_meta", {}),  # the command line and --config file (karmic train)
        }
        self.writer.set_status("created")

    def set_status(self, status: str) -> None:
        self.writer.set_status(status)

    # -- rounds ------------------------------------------------------------------------------
    def begin_round(self, env, seeds, pairs) -> None:
        """After the round's reset: remember what rebuilds it (the RNG state each env's seed gives,
        the pairs each env got) and start recording actions. Only the Harvest core is replayable."""
        from karmic.envs.core import HarvestVecEnv
        from pipelines.replay import seeded_rng

        if not self.log_actions or not isinstance(env, HarvestVecEnv):
            self._env = None
            return
        B, S = env.num_envs, env.num_envs * env.n_agents
        if self._env is not env:
            self._acts = np.zeros((env.max_steps, S), np.int8)
        self._env = env
        self._rng = np.array([seeded_rng(s) for s in seeds], np.uint64)
        self._pairs = [list(p) for p in pairs] if pairs else [[] for _ in range(B)]

    def record_actions(self, t: int, actions: np.ndarray) -> None:
        """Step ``t``'s joint action, (S,) in slot order (env-major)."""
        if self._env is not None:
            self._acts[t] = actions

    def _actions_table(self, rnd, max_steps, B) -> pa.Table:
        env = self._env
        acts = self._acts[:max_steps].reshape(max_steps, B, self.N).transpose(1, 0, 2)
        digests = np.array([env_digest(env.state, b) for b in range(B)], np.int64)
        return actions_table(self.run_id, (rnd * B + np.arange(B)).astype(np.int64),
                             np.full(B, rnd * max_steps * B, np.int64), acts, self._rng,
                             self._pairs, digests)

    def end_round(self, rnd, round_events, stats, max_steps, B, cfg, global_step) -> EventBatch:
        ev = EventBatch.concat(round_events)
        # episodes of a run are numbered round * B + env; order rows by (episode, seq)
        ev.episode = (rnd * B + ev.env.astype(np.int64)).astype(np.int64)
        order = np.lexsort((ev.seq, ev.episode))
        ev = ev.take(order)
        gstep = ((rnd * max_steps + ev.t.astype(np.int64)) * B).astype(np.int64)
        last_episode = rnd * B + B - 1
        # events first, then the actions that produced them, then the episode rows that
        # summarise them; each part written once (module docstring)
        if last_episode > self.events_written and len(ev):
            self._write_once("events", events_table(self.run_id, ev, gstep), "round", rnd)
        if self._env is not None and last_episode > self.actions_written:
            self._write_once("actions", self._actions_table(rnd, max_steps, B), "round", rnd)
        if last_episode > self.episodes_written:
            self._write_once("episodes", self._episode_table(rnd, stats, max_steps, B), "round", rnd)
        self._env = None
        return ev

    def _write_once(self, table: str, rows: pa.Table, kind: str, key: int) -> None:
        write_table_once(self.lake, table, self.run_id, rows, kind, key)

    def write_transports(self, update: int, rows: pa.Table) -> None:
        """An update's ``tvt_transports`` rows, once (a resumed run re-runs the update)."""
        if update not in self.transports_written:
            self._write_once("tvt_transports", rows, "update", update)

    def _episode_table(self, rnd, stats, max_steps, B) -> pa.Table:
        """The round's B episodes x N agents (stats: (B, N) arrays), docs/DESIGN.md's episodes table."""
        episode = (rnd * B + np.arange(B)).astype(np.int64)
        global_step = np.full(B, rnd * max_steps * B, np.int64)
        return episodes_table(self.run_id, episode, global_step, stats, self.cfg.mode,
                              self.cfg.grid_size, self.cfg.seed)

    # -- ledger ----------------------------------------------------------------------------
    def new_ledger(self):
        """One ledger per env (karmic.ledger.VecLedger): env b's ledger folds episodes
        b, B + b, 2B + b ... (episode % B == b), as the lake rebuild of a batched run does."""
        from karmic.ledger import DEFAULT_DECAY, VecLedger

        decay = float(getattr(self.env_config, "ledger_decay", DEFAULT_DECAY))
        return VecLedger(self.cfg.num_envs, self.N, decay=decay)

    @staticmethod
    def fold_round(ledger, events: EventBatch, B: int) -> None:
        """Fold a round's events (rows in (episode, seq) order, env column set), then decay."""
        ledger.observe(events)
        ledger.end_episode()

    def rebuild_ledger(self, episodes_before: int):
        """The per-env ledgers after the run's first ``episodes_before`` episodes, from the lake."""
        ledger = self.new_ledger()
        B = self.cfg.num_envs
        rounds = episodes_before // B
        d = self.lake / "events" / f"run_id={self.run_id}"
        files = sorted(d.glob("*.parquet")) if storage.is_remote(d) or d.is_dir() else []
        if not files or rounds <= 0:
            return ledger
        ev = _events_from_table(pa.concat_tables([storage.read_parquet(f) for f in files]))
        ev = ev.take(np.flatnonzero(ev.episode < rounds * B))
        ev = ev.take(np.lexsort((ev.seq, ev.episode)))
        ev.env = (ev.episode % B).astype(ev.env.dtype)
        # the same operations as live, round by round (a multi-episode fold decays with
        # decay**k, which can differ from k single decays in the last bit)
        bounds = np.searchsorted(ev.episode, np.arange(rounds + 1) * B)
        for r in range(rounds):
            self.fold_round(ledger, ev.take(np.arange(bounds[r], bounds[r + 1])), B)
        return ledger

    # -- tensorboard -------------------------------------------------------------------------
    def tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(Path("runs") / self.run_id))

    @staticmethod
    def log_tensorboard(tb, info: dict[str, Any], step: int) -> None:
        tb.add_scalar("charts/steps_per_s", info["steps_per_s"], step)
        tb.add_scalar("charts/episodic_return", info["mean_return"], step)
        for k in ("zaps", "apples", "zaps_hit", "frozen_steps"):
            tb.add_scalar(f"social/{k}_per_episode", info[f"{k}_per_episode"], step)
        tb.add_scalar("charts/lake_share", info["lake_share"], step)
        for k in ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac"):
            if k in info:
                tb.add_scalar(f"losses/{k}", info[k], step)


def _events_from_table(t: pa.Table) -> EventBatch:
    """Lake events (strings) back to an EventBatch (codes)."""
    n = t.num_rows

    def codes(name: str, names: tuple[str, ...]) -> np.ndarray:
        lut = {s: i for i, s in enumerate(names)}
        return np.array([lut.get(v, NULL) if v is not None else NULL for v in t.column(name).to_pylist()])

    def agent_idx(name: str) -> np.ndarray:
        return np.array([int(v.split("_")[1]) if v else NULL for v in t.column(name).to_pylist()])

    def ints(name: str) -> np.ndarray:
        return np.asarray(t.column(name).fill_null(NULL).to_numpy(zero_copy_only=False))

    ac = t.column("apple_context").to_pylist()
    cols = {
        "env": np.zeros(n),
        "episode": ints("episode"),
        "t": ints("t"),
        "seq": ints("seq"),
        "event_type": codes("event_type", EVENT_TYPES),
        "agent": agent_idx("agent"),
        "target": agent_idx("target"),
        "x": ints("x"),
        "y": ints("y"),
        "target_x": ints("target_x"),
        "target_y": ints("target_y"),
        "direction": ints("direction"),
        "apple_context": np.array([NULL if v is None else int(v) for v in ac]),
        "spawn_cause": codes("spawn_cause", SPAWN_CAUSES),
    }
    return EventBatch(**{k: np.asarray(v).astype(EVENT_COLUMNS[k]) for k, v in cols.items()})


def read_run_json(lake: Path | str, run_id: str) -> dict[str, Any]:
    p = storage.resolve(lake) / "runs" / f"run_id={run_id}" / "run.json"
    text = storage.read_text(p)
    if text is None:
        raise FileNotFoundError(f"no run {run_id} in {lake}")
    return json.loads(text)


# what a yoked run and its partner must share for the partner's (stream, step) to be this run's
YOKE_TRAIN_FIELDS = ("num_envs", "num_steps", "memory_size", "grid_size")


def read_yoke(lake: Path | str, cfg, env_config, n_agents: int, max_steps: int) -> dict[int, list]:
    """The semantic transports of ``cfg.tvt_yoke_run`` (the partner of the yoked run ``cfg``), as
    update -> [(slot, Transports)] (``pipelines.trajectories.transports_by_update``). The partner
    must be a finished run of the condition ``cfg.mode`` is yoked to, with this run's env, envs,
    agents, rollout length and memory, and at least its steps: else a ValueError in one line."""
    from karmic.conditions import yoke_partner
    from karmic.lake import connect
    from pipelines.trajectories import transports_by_update

    partner, run = yoke_partner(cfg.mode), cfg.tvt_yoke_run
    try:
        meta = read_run_json(lake, run)
    except (FileNotFoundError, ValueError):
        raise ValueError(f"yoked run: no readable run {run} in {lake} (tvt_yoke_run names the {partner.name} "
                         "run to yoke to, in the same lake)") from None
    theirs = meta.get("train_config") or {}
    if meta.get("condition") != partner.name:
        raise ValueError(f"yoked run: {run} is a {meta.get('condition')} run; {cfg.mode} is yoked to {partner.name}")
    if meta.get("status") != "completed":
        raise ValueError(f"yoked run: {run} has not finished (status {meta.get('status')}); "
                         "a yoked run starts after its partner")
    ours = cfg.to_dict()
    for f in YOKE_TRAIN_FIELDS:
        if theirs.get(f) != ours[f]:
            raise ValueError(f"yoked run: {run} has {f} {theirs.get(f)}, this run {ours[f]}; they must match")
    if int(meta.get("n_agents") or -1) != n_agents:
        raise ValueError(f"yoked run: {run} has {meta.get('n_agents')} agents, this run {n_agents}")
    want = json.loads(json.dumps(env_config.to_dict()))
    got = meta.get("config") or {}
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    if diff:
        raise ValueError(f"yoked run: {run}'s environment differs from this run's in {', '.join(diff)}")
    if int(theirs.get("total_steps", 0)) < int(cfg.total_steps):
        raise ValueError(f"yoked run: {run} ran {theirs.get('total_steps')} steps, fewer than this run's "
                         f"{cfg.total_steps}")
    sql = ("select * from tvt_transports where mode = 'semantic' order by update, agent, source_episode, "
           "source_t, target_episode, target_t, amount")
    con = connect(lake, run=run, sql=sql)
    try:
        rows = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    return transports_by_update(rows, cfg.num_envs, n_agents, max_steps)
