"""``karmic study status``: where every cell of a study stands, read from the lake.

A cell is ``done`` when its run.json says completed (trained) or finished (simulated);
``running`` when its run has started and the study's driver is alive; ``stopped`` when it has
started but no driver is (it resumes with the next ``karmic study run``); ``missing`` when no
run exists yet (``waiting``: a yoked cell whose partner's run has not finished, so the driver
cannot start it yet); ``pending`` when no run exists and its grid's ecology is pending (``run`` leaves
it out, and its steps are not in the ETA); ``carried`` when the lake has not completed it but a
results folder has (the study's driver marked it so in the manifest: ``run --carry``, or
``status --carry`` finds it there now); its steps are that run's and not in the ETA. Steps come
from the run's episodes table (env steps of the episodes written). The ETA divides each cell's
steps left by the pace of the finished cells of its condition and grid (a 30x30 `tvt` cell runs at
a fraction of a 10x10 `baseline` cell's pace), else by the pace of all finished cells, and the sum
by the workers in flight; before any cell of this lake has finished (a study just resumed on a new
lake), by the running cells' pace since they started. A pause of the driver (SIGSTOP) counts in
a cell's seconds, so a paused study's ETA is pessimistic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.storage import read_parquet, resolve
from pipelines.study import Carry, Study, cells_table, holder, row_key
from pipelines.sweep import CARRIED, DONE_STATUSES, read_manifest, run_status


def _steps_done(lake: str, run_id: str, episode_length: int) -> int:
    """Env steps of the episodes the run has written (a trained round = num_envs episodes)."""
    d = resolve(lake) / "episodes" / f"run_id={run_id}"
    episodes = set()
    for p in sorted(d.glob("*.parquet")) if d.is_dir() else []:
        episodes.update(read_parquet(p, columns=["episode"]).column("episode").to_pylist())
    return len(episodes) * episode_length


def study_status(study: Study, lake: str, carry: Carry | None = None) -> tuple[list[str], list[tuple], str]:
    """``carry``: a results folder's carried runs (``carried_runs``), shown as ``carried``."""
    from karmic.envs.config import make_config

    try:
        manifest = read_manifest(lake, study.sweep_id)
    except ValueError:
        manifest = None
    entries = {e["run_id"]: e for e in (manifest or {}).get("tasks", [])}
    by_key = {e["key"]: e for e in entries.values()}
    driver = holder(lake, study.name)
    rows, left = [], 0
    left_by: dict[tuple[str, int], int] = {}  # (condition, grid_size) -> its cells' steps left
    finished: dict[tuple[str, int], tuple[int, float]] = {}  # -> (steps, seconds) of its finished cells
    pace: list[tuple[int, float]] = []  # (steps, seconds since it started) of each running cell
    now = datetime.now(UTC)
    counts: dict[str, int] = {}
    sources: set[str] = set()
    for cell in cells_table(study, manifest):
        rid = cell["run_id"]
        e = entries.get(rid, {})
        carried = carry.runs.get(row_key(cell)) if carry is not None else None
        env = make_config(study.preset(cell["grid_size"]), grid_size=cell["grid_size"],
                          **study.env_overrides(_as_cell(cell)))
        target = (study.episodes * env.episode_length if cell["scripted"]
                  else study.total_steps[cell["grid_size"]])
        st = run_status(lake, rid)
        if st in DONE_STATUSES:
            state = "done"
        elif carried is not None or e.get("status") == CARRIED:
            state = "carried"
            sources.add(str(carry.source) if carried is not None else e.get("carried_from", "?"))
        elif st is None:
            state = "pending" if cell["grid_size"] in study.pending else "missing"
            partner = by_key.get(e.get("yoke"))
            if state == "missing" and partner is not None and run_status(lake, partner["run_id"]) not in DONE_STATUSES:
                state = "waiting"  # a yoked cell: it starts once its partner's run has finished
        else:
            state = "running" if driver else "stopped"
        steps = _steps_done(lake, rid, env.episode_length) if st is not None else 0
        if state == "carried":
            steps = int((carried or {}).get("global_step") or e.get("global_step") or target)
        kind = (cell["condition"], cell["grid_size"])
        if state == "done" and not cell["scripted"] and e.get("seconds"):
            done_steps, done_s = finished.get(kind, (0, 0.0))
            finished[kind] = (done_steps + steps, done_s + float(e["seconds"]))
        if state == "running" and not cell["scripted"] and e.get("started_at"):
            pace.append((steps, (now - datetime.fromisoformat(e["started_at"])).total_seconds()))
        if not cell["scripted"] and state not in ("pending", "carried"):
            left += max(0, target - steps)
            left_by[kind] = left_by.get(kind, 0) + max(0, target - steps)
        counts[state] = counts.get(state, 0) + 1
        rows.append((cell["level"], cell["condition"], cell["grid_size"], cell["seed"], state, steps, target, rid))
    workers = 1
    if manifest:
        inv = manifest.get("invocations") or [{}]
        workers = int(inv[-1].get("workers") or 0) or _cores()
    eta = eta_line(left_by, finished, pace, workers, now=now)
    who = f"driver pid {driver.get('pid')} on {driver.get('host')}" if driver else "no driver running"
    whence = f"; carried from {', '.join(sorted(sources))}" if sources else ""
    summary = (f"{', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}{whence}; {left:,} env steps left; "
               f"{eta}; {who}")
    return ["level", "condition", "grid_size", "seed", "state", "steps", "target", "run_id"], rows, summary


def eta_line(left: dict[Any, int], finished: dict[Any, tuple[int, float]], running: list[tuple[int, float]],
             workers: int, now: datetime | None = None) -> str:
    """The ETA of the env steps ``left`` of each kind of cell (``(condition, grid_size)``) at
    ``workers`` workers: each kind at the pace of its own cells finished in this lake (``finished``:
    their steps and seconds), a kind with none at the pace of all finished cells, and with no
    finished cell at all, at the running cells' pace so far (``running``: steps and seconds since
    each started; a slight overestimate, it counts start-up). The rate printed is the one the ETA
    implies: all steps left over the seconds they take at one worker; with ``now``, the clock
    time it points at (UTC)."""
    total = sum(left.values())
    if not total:
        return "nothing left to run"
    steps, seconds = sum(s for s, _ in finished.values()), sum(t for _, t in finished.values())
    whence = ""
    if seconds <= 0 or steps <= 0:
        steps, seconds = sum(s for s, _ in running), sum(t for _, t in running)
        whence = " (the running cells' pace so far)"
    if seconds <= 0 or steps <= 0:
        return "ETA unknown (no trained cell has finished or written an episode yet)"
    pooled, worker_s, borrowed = steps / seconds, 0.0, False
    for kind, n in left.items():
        k_steps, k_s = finished.get(kind, (0, 0.0))
        if k_steps > 0 and k_s > 0:
            worker_s += n * k_s / k_steps
        else:
            worker_s += n / pooled
            borrowed = borrowed or n > 0
    if not whence and borrowed:
        whence = " (kinds of cell with none finished at the pace of all finished cells)"
    minutes = worker_s / workers / 60
    at = f" (~{(now + timedelta(minutes=minutes)):%H:%M} UTC)" if now is not None else ""
    return f"ETA {minutes:.0f} min{at} at {total / worker_s:,.0f} env-steps/s per worker x {workers}{whence}"


def _as_cell(row: dict[str, Any]):
    from pipelines.study import Cell

    return Cell(row["condition"], row["grid_size"], row["level"], row["seed"])


def _cores() -> int:
    from pipelines.sweep import available_cores

    return available_cores()


__all__ = ["study_status"]
