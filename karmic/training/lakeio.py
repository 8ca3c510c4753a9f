"""The training run's side of the lake: run.json, events and episodes per round, the ledger.

``RunLake(lake, run_id, cfg, env_config, n_agents)`` is the only place the training loop touches
the events / episodes / runs tables (DESIGN.md schemas, atomic part files: see ``_writer``) and
the matchmaker's ledgers (``karmic.ledger.VecLedger``).

- A round's events get run episode numbers ``round * B + env`` and
  ``global_step = (round * max_steps + t) * B``; the episodes rows get the same numbering and
  ``global_step`` at episode start.
- Resume safety: at construction the highest episode already in the run's events and episodes
  partitions is read; a re-run round whose episodes are already there is not written again
  (a deterministic re-run produces the same rows), so a run killed after writing a round but
  before its checkpoint resumes without duplicates.
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
import pyarrow.parquet as pq

from karmic.events import EVENT_COLUMNS, EVENT_TYPES, NULL, SPAWN_CAUSES, EventBatch


def _max_episode(part_dir: Path) -> int:
    """Highest episode in a run partition's parquet files, -1 if none."""
    best = -1
    if part_dir.is_dir():
        for f in sorted(part_dir.glob("*.parquet")):
            col = pq.read_table(f, columns=["episode"]).column("episode")
            if len(col):
                best = max(best, int(pa.compute.max(col).as_py()))
    return best


class RunLake:
    def __init__(self, lake: Path, run_id: str, cfg, env_config, n_agents: int) -> None:
        self.lake = Path(lake)
        self.run_id = run_id
        self.cfg = cfg
        self.env_config = env_config
        self.N = int(n_agents)
        self.writer = _writer(self.lake, run_id)
        self.events_written = _max_episode(self.lake / "events" / f"run_id={run_id}")
        self.episodes_written = _max_episode(self.lake / "episodes" / f"run_id={run_id}")

    # -- run.json ----------------------------------------------------------------------------
    def run_exists(self) -> bool:
        return (self.lake / "runs" / f"run_id={self.run_id}" / "run.json").is_file()

    def start_run(self, total_steps: int) -> None:
        import torch

        cfg = self.cfg
        self.writer.write_run(
            {
                "run_id": self.run_id,
                "kind": "train",
                "condition": cfg.mode,
                "grid_size": cfg.grid_size,
                "seed": cfg.seed,
                "n_agents": self.N,
                "num_envs": cfg.num_envs,
                "total_steps": int(total_steps),
                "config": self.env_config.to_dict(),
                "train_config": cfg.to_dict(),
                "versions": {"torch": torch.__version__, "numpy": np.__version__},
            }
        )

    def set_status(self, status: str) -> None:
        self.writer.set_status(status)

    # -- rounds ------------------------------------------------------------------------------
    def end_round(self, rnd, round_events, stats, max_steps, B, cfg, global_step) -> EventBatch:
        ev = EventBatch.concat(round_events)
        # episodes of a run are numbered round * B + env; order rows by (episode, seq)
        ev.episode = (rnd * B + ev.env.astype(np.int64)).astype(np.int64)
        order = np.lexsort((ev.seq, ev.episode))
        ev = ev.take(order)
        gstep = ((rnd * max_steps + ev.t.astype(np.int64)) * B).astype(np.int64)
        last_episode = rnd * B + B - 1
        if last_episode > self.events_written:
            self.writer.write_events(ev, global_step=gstep)
        if last_episode > self.episodes_written:
            self.writer.write_episodes(self._episode_table(rnd, stats, max_steps, B))
        return ev

    def _episode_table(self, rnd, stats, max_steps, B) -> pa.Table:
        N = self.N
        ep = (rnd * B + np.repeat(np.arange(B), N)).astype(np.int64)
        col = {k: np.asarray(v).reshape(B * N) for k, v in stats.items()}
        return pa.table(
            {
                "run_id": pa.array([self.run_id] * (B * N), pa.string()),
                "episode": pa.array(ep, pa.int64()),
                "global_step": pa.array(np.full(B * N, rnd * max_steps * B, np.int64), pa.int64()),
                "agent": pa.array([f"agent_{i}" for i in np.tile(np.arange(N), B)], pa.string()),
                "steps": pa.array(col["steps"].astype(np.int32), pa.int32()),
                "return": pa.array(col["return"].astype(np.float64), pa.float64()),
                "apples": pa.array(col["apples"].astype(np.int32), pa.int32()),
                "zaps_fired": pa.array(col["zaps_fired"].astype(np.int32), pa.int32()),
                "zaps_hit": pa.array(col["zaps_hit"].astype(np.int32), pa.int32()),
                "times_hit": pa.array(col["times_hit"].astype(np.int32), pa.int32()),
                "frozen_steps": pa.array(col["frozen_steps"].astype(np.int32), pa.int32()),
                "condition": pa.array([self.cfg.mode] * (B * N), pa.string()),
                "grid_size": pa.array(np.full(B * N, self.cfg.grid_size, np.int32), pa.int32()),
                "seed": pa.array(np.full(B * N, self.cfg.seed, np.int64), pa.int64()),
            }
        )

    # -- ledger ----------------------------------------------------------------------------
    def new_ledger(self):
        """One ledger per env (karmic.ledger.VecLedger): env b's ledger folds episodes
        b, B + b, 2B + b ... (episode % B == b), as the lake rebuild of a batched run does."""
        from karmic.ledger import VecLedger

        decay = float(getattr(self.env_config, "ledger_decay", 0.95))
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
        files = sorted(d.glob("*.parquet")) if d.is_dir() else []
        if not files or rounds <= 0:
            return ledger
        ev = _events_from_table(pa.concat_tables([pq.read_table(f) for f in files]))
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


def _writer(lake: Path, run_id: str):
    """The run's writer for run.json, events and episodes.

    pipelines.lake (the lake's own writer) had not landed when this was written; until the
    training loop is switched to it, _FallbackWriter writes the same DESIGN.md tables with the
    same atomic-rename rule."""
    return _FallbackWriter(lake, run_id)


def events_table(run_id: str, ev: EventBatch, global_step: np.ndarray) -> pa.Table:
    """An EventBatch as DESIGN.md's events table."""
    null = ev.target == NULL
    names = np.array([f"agent_{i}" for i in range(max(int(ev.agent.max(initial=0)),
                                                      int(ev.target.max(initial=0))) + 1)])
    et = np.array(EVENT_TYPES)[ev.event_type]
    is_hit = ev.event_type == EVENT_TYPES.index("ZAP_HIT")
    is_spawn = ev.event_type == EVENT_TYPES.index("SPAWN")
    n = len(ev)
    return pa.table({
        "run_id": pa.array([run_id] * n, pa.string()),
        "episode": pa.array(ev.episode, pa.int64()),
        "t": pa.array(ev.t, pa.int32()),
        "global_step": pa.array(global_step, pa.int64()),
        "seq": pa.array(ev.seq, pa.int32()),
        "event_type": pa.array(et, pa.string()),
        "agent": pa.array(names[ev.agent], pa.string()),
        "target": pa.array(np.where(null, None, names[np.maximum(ev.target, 0)]), pa.string()),
        "x": pa.array(ev.x, pa.int16()),
        "y": pa.array(ev.y, pa.int16()),
        "target_x": pa.array(ev.target_x, pa.int16(), mask=null),
        "target_y": pa.array(ev.target_y, pa.int16(), mask=null),
        "direction": pa.array(ev.direction, pa.int8()),
        "apple_context": pa.array(ev.apple_context == 1, pa.bool_(), mask=~is_hit),
        "spawn_cause": pa.array(np.array(SPAWN_CAUSES)[np.maximum(ev.spawn_cause, 0)],
                                pa.string(), mask=~is_spawn),
    })


class _FallbackWriter:
    """Atomic part files ``part-<n>.parquet`` per run partition, and run.json (see _writer)."""

    def __init__(self, lake: Path, run_id: str) -> None:
        self.lake, self.run_id = Path(lake), run_id
        self.meta: dict[str, Any] = {}

    def _part(self, table: str) -> Path:
        d = self.lake / table / f"run_id={self.run_id}"
        n = len(list(d.glob("part-*.parquet"))) if d.is_dir() else 0
        return d / f"part-{n:06d}.parquet"

    def write_run(self, meta: dict[str, Any]) -> None:
        self.meta = dict(meta)
        self.set_status("created")

    def set_status(self, status: str) -> None:
        from pipelines.trajectories import write_bytes_atomic

        p = self.lake / "runs" / f"run_id={self.run_id}" / "run.json"
        if not self.meta and p.is_file():
            self.meta = json.loads(p.read_text())
        self.meta["status"] = status
        write_bytes_atomic(json.dumps(self.meta, indent=1, default=str).encode(), p)

    def write_events(self, ev: EventBatch, global_step: np.ndarray) -> None:
        from pipelines.trajectories import write_table_atomic

        write_table_atomic(events_table(self.run_id, ev, global_step), self._part("events"))

    def write_episodes(self, table: pa.Table) -> None:
        from pipelines.trajectories import write_table_atomic

        write_table_atomic(table, self._part("episodes"))


def read_run_json(lake: Path, run_id: str) -> dict[str, Any]:
    p = Path(lake) / "runs" / f"run_id={run_id}" / "run.json"
    if not p.is_file():
        raise FileNotFoundError(f"no run {run_id} in {lake}")
    return json.loads(p.read_text())
