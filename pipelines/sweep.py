"""Ablation sweeps: every (condition, grid size, seed) of a study as its own training task.

A sweep is a list of :class:`Task` (mode x grid size x seed). Each task is one call of the
trainer (``karmic.training.ppo``) with a deterministic run id ``<sweep_id>-<mode>-g<G>-s<S>``,
so every task writes its own partitions of the shared lake (``runs/``, ``events/``,
``episodes/``, ``trajectories/``, ``checkpoints/`` under ``run_id=<that id>``) and no two
writers ever share a file. Tasks run on a backend:

- ``LocalBackend(workers)``: a ``ProcessPoolExecutor`` with the *spawn* context (no forked
  torch/numba state), at most one worker per core, one torch thread per worker;
- ``RayBackend(address, workers)``: Ray core tasks (``ray.remote(num_cpus=1)``) on the cluster
  at ``address`` (``ray.init(address=...)``), or on a local cluster when no address is given.

:func:`run_sweep` keeps at most ``workers`` tasks in flight, retries a failed task up to
``retries`` times (a retry resumes from the run's last checkpoint when it has one) and reports
every start, retry, success and failure through a callback; the other tasks go on.

The manifest ``<lake>/sweeps/sweep_id=<id>/sweep.json`` holds the sweep's settings and every
task's status (``pending``, ``running``, ``completed``, ``failed``, ``interrupted``, or
``carried``: a study's cell whose completed run is in a results folder, not in this lake, which is
neither run nor counted as missing), attempts, host, time and last error. Only the driver writes
it, atomically, after every change, so a killed driver leaves a readable manifest. ``--resume`` reruns the tasks whose run is not ``completed``
in its own run.json (the lake, not the manifest, decides what is done).

The lake is passed through as a string (a path, or an ``s3://`` URL: ``pipelines.storage``);
workers write to it directly, the driver only writes the manifest.

Fault injection (tests, chaos runs): ``KARMIC_SWEEP_FAIL="baseline-g10-s2:1,matchmaker-g10-s1:9"``
makes the first N attempts of the named tasks raise after their first PPO update (after the
first checkpoint when ``checkpoint_every=1``). The driver reads it and passes it to the tasks, so
it works on any backend.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from karmic.training.device import device_type, sweep_slots
from pipelines.storage import resolve

ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
FAIL_ENV = "KARMIC_SWEEP_FAIL"
MANIFEST_VERSION = 1
# TrainConfig fields a sweep sets per task; `--set` may not override them
TASK_FIELDS = ("mode", "grid_size", "seed", "run_id")


# --- tasks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    mode: str
    grid_size: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.mode}-g{self.grid_size}-s{self.seed}"

    def run_id(self, sweep_id: str) -> str:
        return f"{sweep_id}-{self.key}"


def plan(modes: Iterable[str], grid_sizes: Iterable[int], seeds: Iterable[int]) -> list[Task]:
    """Every (mode, grid size, seed), in that nesting order, without duplicates."""
    out: list[Task] = []
    for m, g, s in itertools.product(modes, grid_sizes, seeds):
        t = Task(m, int(g), int(s))
        if t not in out:
            out.append(t)
    return out


def new_sweep_id() -> str:
    return f"sweep-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def parse_fail_spec(spec: str | None) -> dict[str, int]:
    """``"key:n,key2"`` -> {key: n, key2: 1} (see the module docstring)."""
    out: dict[str, int] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, n = item.partition(":")
        try:
            out[key] = int(n) if n else 1
        except ValueError:
            raise ValueError(f"{FAIL_ENV}: expected KEY[:N], got {item!r}") from None
    return out


# --- the lake: paths or URLs --------------------------------------------------------------------
def is_url(lake: str) -> bool:
    return "://" in str(lake)


def _read_text(path) -> str | None:
    return path.read_text() if path.is_file() else None


def manifest_path(lake: str, sweep_id: str):
    return resolve(lake) / "sweeps" / f"sweep_id={sweep_id}" / "sweep.json"


def read_manifest(lake: str, sweep_id: str) -> dict[str, Any]:
    if not ID_RE.fullmatch(sweep_id):
        raise ValueError(f"invalid sweep id {sweep_id!r}: use letters, digits, '_', '-', '.'")
    path = manifest_path(lake, sweep_id)
    text = _read_text(path)
    if text is None:
        raise ValueError(f"no sweep {sweep_id} in {lake} (no {path})")
    try:
        m = json.loads(text)
        if not isinstance(m, dict) or not isinstance(m.get("tasks"), list):
            raise ValueError("not a sweep manifest")
    except ValueError as exc:
        raise ValueError(f"unreadable sweep manifest {path}: {exc}") from None
    return m


def write_manifest(lake: str, manifest: dict[str, Any]) -> None:
    """Atomically (pipelines.writer.write_json_atomic: rename locally, one PUT on object storage)."""
    from pipelines.writer import write_json_atomic

    manifest["updated_at"] = now_iso()
    write_json_atomic(manifest, manifest_path(lake, manifest["sweep_id"]))


def run_status(lake: str, run_id: str) -> str | None:
    """The ``status`` in the run's run.json, None when the run has none."""
    text = _read_text(resolve(lake) / "runs" / f"run_id={run_id}" / "run.json")
    if text is None:
        return None
    try:
        return json.loads(text).get("status")
    except (ValueError, AttributeError):
        return None


def new_manifest(sweep_id: str, tasks: list[Task], train: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``train``: the TrainConfig fields every task shares; ``settings``: how it was asked for."""
    entries = []
    seeds = list(dict.fromkeys(t.seed for t in tasks))
    for t in tasks:
        e = {"key": t.key, "run_id": t.run_id(sweep_id), "mode": t.mode, "grid_size": t.grid_size,
             "seed": t.seed, "status": "pending", "attempts": 0}
        partner = yoke_of(t.mode)
        if partner is not None:
            p = Task(partner, t.grid_size, yoke_seed(t.seed, seeds, t.mode))
            if p not in tasks:
                raise ValueError(f"{t.mode} is yoked to {partner}: add {partner} to the sweep's conditions")
            e["yoke"] = p.key
        entries.append(e)
    return {
        "manifest_version": MANIFEST_VERSION,
        "sweep_id": sweep_id,
        "status": "pending",
        "created_at": now_iso(),
        "train": train,
        **settings,
        "tasks": entries,
    }


def yoke_seed(seed: int, seeds: list[int], mode: str) -> int:
    """The seed of a yoked cell's partner: the next of ``seeds`` (the last takes the first's).
    Not its own: with the same seed a yoked run draws what its partner drew, so it makes the
    partner's transports itself and repeats the partner's run step for step (a test checks it)."""
    if len(seeds) < 2:
        raise ValueError(f"{mode} needs two seeds or more: a yoked cell replays its partner's run of the next seed")
    return seeds[(seeds.index(seed) + 1) % len(seeds)]


def yoke_of(mode: str) -> str | None:
    """The partner condition of a yoked condition (karmic.conditions), else None."""
    from karmic.conditions import get_condition, yoke_partner

    try:
        cond = get_condition(mode)
    except ValueError:
        return None
    return yoke_partner(mode).name if cond.yoke is not None else None


def yoke_state(entry: dict[str, Any], by_key: dict[str, dict[str, Any]], lake: str) -> tuple[str, str | None]:
    """Whether a task may start: ("ready", the partner's run id or None), ("wait", None) while
    its partner (``yoke``: a yoked condition's, whose logged transports it replays) has not
    finished in this lake, or ("error", one line) when the partner cannot finish here."""
    key = entry.get("yoke")
    if key is None:
        return "ready", None
    p = by_key.get(key)
    if p is None:
        return "error", f"its partner {key} is not in this sweep"
    if p["status"] == "pending":  # not started (unfinished() marked those a dead driver finished)
        return "wait", None
    if is_done(lake, p["run_id"]):
        return "ready", p["run_id"]
    if p["status"] == CARRIED:
        return "error", f"its partner {key} was carried from a results folder: its transports are not in {lake}"
    if p["status"] == "failed":
        return "error", f"its partner {key} failed"
    return "wait", None


def task_config(manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig (as a dict) of one manifest task: shared fields + the task's own (a study's
    task carries its whole config in ``config``)."""
    if "config" in entry:
        return {**entry["config"], "run_id": entry["run_id"], "threads": 1}
    return {**manifest["train"], "mode": entry["mode"], "grid_size": int(entry["grid_size"]),
            "seed": int(entry["seed"]), "run_id": entry["run_id"], "threads": 1}


# a run that ended ends `completed` (simulations too); `finished`: a simulation of a lake written before one vocabulary
DONE_STATUSES = ("completed", "finished")
# a manifest task whose completed run lives in a results folder (pipelines.study.mark_carried)
CARRIED = "carried"
TASK_DONE = ("completed", CARRIED)


def is_done(lake: str, run_id: str) -> bool:
    return run_status(lake, run_id) in DONE_STATUSES


# --- one task (runs in a worker) ----------------------------------------------------------------
class InjectedFailure(RuntimeError):
    pass


def _limit_threads() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the driver dies (even by SIGKILL), so a restarted
    driver never finds an orphan still writing the run it is about to resume."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass


def _worker_init() -> None:
    _die_with_parent()
    _limit_threads()


def cell_run_id(run_id: str) -> str:
    """The run id of a cell's first attempt: a retried simulation runs as ``<that id>-rN``."""
    return re.sub(r"-r\d+$", "", run_id)


def run_simulate_task(payload: dict[str, Any], out: dict[str, Any]) -> None:
    """A scripted-policy cell of a study: ``karmic simulate`` with the cell's environment. A
    simulated run that was killed or failed is resumed in place (``simulate(resume=True)``:
    the episodes it lacks, none twice); one stopped with Ctrl-C (``interrupted``, a partial
    episode in the lake) is not appended to: the retry simulates again under a new run id, which
    the driver records."""
    from pipelines.simulate import simulate

    spec = payload["simulate"]
    base = cell_run_id(payload["run_id"])
    run_id, n = payload["run_id"], 1
    how = "simulated"
    while (status := run_status(payload["lake"], run_id)) is not None:
        if is_done(payload["lake"], run_id):
            out.update(status="completed", how="already completed", run_id=run_id)
            return
        if status != "interrupted":  # killed or crashed: whole episodes only, resumed in place
            how = "resumed"
            break
        n += 1
        run_id = f"{base}-r{n}"
    # the trainer's environment: make_config(preset, grid_size=G, **overrides)
    env = {"grid_size": int(payload["grid_size"]), **(spec.get("env_overrides") or {})}
    res = simulate(payload["lake"], episodes=int(spec["episodes"]), policy=spec["policy"],
                   seed=int(payload["seed"]), preset=spec.get("preset"), env_overrides=env, run_id=run_id,
                   resume=how == "resumed")
    out.update(status="completed", how=how, run_id=run_id, global_step=int(res.steps),
               mean_return=float(sum(res.returns) / max(1, len(res.returns))))


def keep_policies(trainer, lake: str, run_id: str, total_steps: int, fractions: dict[str, float] | None) -> None:
    """Save the policy named ``name`` (``pipelines.checkpoints.save_policy``) at the first update
    whose global step reaches ``fraction x total_steps``, for each of ``fractions`` (a study's
    ``{"late_start": lo}``); one the lake already has (a resumed run) is not saved again. The
    final policy is saved by :func:`run_task` when the run completes."""
    if not fractions:
        return
    from pipelines.checkpoints import list_policies, save_policy

    have = {p.name.removesuffix(".pt") for p in list_policies(lake, run_id)}
    todo = {name: float(f) * total_steps for name, f in fractions.items() if name not in have}
    chained = trainer.on_update

    def hook(info: dict[str, Any]) -> None:
        for name, step in list(todo.items()):
            if info["global_step"] >= step:
                save_policy(lake, run_id, name, trainer.checkpoint_payload())
                del todo[name]
        if chained is not None:
            chained(info)

    trainer.on_update = hook


def run_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one task to completion; never raises for a training error (returns ``failed``).

    ``payload``: ``lake``, ``config`` (TrainConfig dict with run_id), ``attempt`` (0-based),
    ``fail_attempts`` (fault injection). A run already ``completed`` in its run.json is not run
    again; a run with a checkpoint resumes from it (the trainer's resume path, exact); a run
    without one starts from scratch under the same run id (rounds already in the lake are not
    written twice).
    """
    t0 = time.perf_counter()
    lake = payload["lake"]
    if "simulate" in payload:
        out: dict[str, Any] = {"run_id": payload["run_id"], "attempt": payload.get("attempt", 0),
                               "host": socket.gethostname(), "pid": os.getpid()}
        try:
            _limit_threads()
            run_simulate_task(payload, out)
        except KeyboardInterrupt:
            _interrupted(out)
        except Exception as exc:
            out.update(status="failed", error=one_line(exc), traceback=traceback.format_exc())
        out["seconds"] = time.perf_counter() - t0
        return out
    cfg_d = payload["config"]
    run_id = cfg_d["run_id"]
    out = {"run_id": run_id, "attempt": payload.get("attempt", 0),
           "host": socket.gethostname(), "pid": os.getpid()}
    try:
        _limit_threads()
        if run_status(lake, run_id) == "completed":
            out.update(status="completed", how="already completed", seconds=0.0)
            return out
        from karmic.training.learners import config_from_dict, make_trainer, resumed_trainer
        from pipelines.checkpoints import list_checkpoints

        cfg = config_from_dict(cfg_d)  # the learner named by cfg["algo"] (ppo | drqn)
        if list_checkpoints(lake, run_id):  # on the device the driver gave this attempt
            trainer = resumed_trainer(run_id, lake, total_steps=cfg.total_steps, device=cfg_d.get("device"))
            how = f"resumed at update {trainer.update}"
        else:
            how = "restarted" if run_status(lake, run_id) is not None else "started"
            trainer = make_trainer(cfg, lake)
        keep_policies(trainer, lake, run_id, cfg.total_steps, payload.get("keep_policies"))
        if out["attempt"] < int(payload.get("fail_attempts", 0)):
            def fail_after_first_update(info: dict[str, Any]) -> None:
                raise InjectedFailure(f"injected by {FAIL_ENV} (attempt {out['attempt'] + 1})")

            trainer.on_update = fail_after_first_update
        info = trainer.run()
        if payload.get("keep_policies") is not None:
            from pipelines.checkpoints import save_policy

            save_policy(lake, run_id, "final", trainer.checkpoint_payload())
        out.update(status="completed", how=how, global_step=int(info["global_step"]),
                   mean_return=info["mean_return"], steps_per_s=info["steps_per_s"])
    except KeyboardInterrupt:  # the trainer has marked its run `interrupted`
        _interrupted(out)
    except Exception as exc:  # reported by the driver, which decides whether to retry
        out.update(status="failed", error=one_line(exc), traceback=traceback.format_exc())
    out["seconds"] = time.perf_counter() - t0
    return out


def _interrupted(out: dict[str, Any]) -> None:
    """Ctrl-C in a terminal reaches every worker, and the driver passes it on once more: the task
    returns ``interrupted`` and ignores the second signal, so the user sees the driver's one line
    (how to continue), not a traceback from every worker."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out.update(status="interrupted")


# --- backends -------------------------------------------------------------------------------------
class LocalBackend:
    """A process pool (spawn), at most one worker per core."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        cores = available_cores()
        self.workers = min(workers or cores, cores)
        self.pool = None

    def start(self, max_tasks: int | None = None) -> None:
        import multiprocessing as mp

        if max_tasks:  # no idle workers: each one costs a Python start and the imports
            self.workers = max(1, min(self.workers, max_tasks))
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init)

    def describe(self) -> str:
        return f"local process pool, {self.workers} worker(s)"

    def submit(self, payload: dict[str, Any]):
        return self.pool.submit(run_task, payload)

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, Any]]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as fwait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = fwait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        out, broken = [], False
        for f in done:
            try:
                out.append((f, f.result()))
            except BaseException as exc:  # a worker died (BrokenProcessPool) or similar
                broken |= isinstance(exc, BrokenProcessPool)
                out.append((f, exc))
        if broken:  # the pool is unusable now: a new one for the retries and the rest
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.start()
        return out

    def close(self, cancel: bool = False) -> None:
        if self.pool is None:
            return
        if cancel:
            # Ctrl-C in a terminal reaches the workers too; when only the driver got it, pass it
            # on (the trainer marks its run `interrupted`), then stop whatever is left
            import signal

            procs = list(getattr(self.pool, "_processes", {}).values())
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGINT)
            deadline = time.monotonic() + 10
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.terminate()
        # wait even when cancelling (the workers are gone by now): a manager thread left running
        # into interpreter exit races Python 3.11's atexit hook, which then prints a traceback
        self.pool.shutdown(wait=True, cancel_futures=cancel)
        self.pool = None


class RayBackend:
    """Ray core tasks; ``ray.init(address=...)``, or a local cluster when no address is given."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address = address
        self.requested = workers
        self.workers = workers or 1
        self.owns = False
        self.remote = None

    def start(self, max_tasks: int | None = None) -> None:  # noqa: ARG002 (Ray queues)
        import ray

        if not ray.is_initialized():
            kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=available_cores(), include_dashboard=False, **kw)
            self.owns = True
        # retries are the sweep's own (reported, resumed from checkpoints), not Ray's
        self.remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        self.cpus = int(ray.cluster_resources().get("CPU", 1))
        self.nodes = len([n for n in ray.nodes() if n.get("Alive")])
        self.workers = self.requested or self.cpus

    def describe(self) -> str:
        where = self.address or "local cluster"
        return f"ray ({where}: {self.nodes} node(s), {self.cpus} CPU(s)), {self.workers} task(s) in flight"

    def submit(self, payload: dict[str, Any]):
        return self.remote.remote(payload)

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, Any]]:
        import ray

        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((ref, ray.get(ref)))
            except Exception as exc:  # worker crash, node lost, cancelled
                out.append((ref, exc))
        return out

    def close(self, cancel: bool = False, handles: Iterable = ()) -> None:
        import ray

        if cancel:
            for ref in handles:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished
                    pass
        if self.owns and ray.is_initialized():
            ray.shutdown()
            self.owns = False


def make_backend(name: str, workers: int | None = None, address: str | None = None):
    if name == "local":
        if address:
            raise ValueError("--address is for the ray backend")
        return LocalBackend(workers)
    if name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ValueError("the ray backend needs Ray: pip install -e '.[ray]'")
        return RayBackend(address, workers)
    raise ValueError(f"unknown backend {name!r}; choose local or ray")


# --- the driver -----------------------------------------------------------------------------------
# where a run's last write shows: the folders of its run in a local lake
_RUN_FOLDERS = ("runs", "checkpoints", "events", "episodes", "actions", "tvt_transports", "trajectories")


def last_write(lake: str, run_id: str) -> float | None:
    """The newest modification time (epoch s) of a run's files in a local lake; None on object
    storage (no cheap mtime) or where the run wrote nothing."""
    if "://" in str(lake):
        return None
    newest = None
    for folder in _RUN_FOLDERS:
        d = os.path.join(str(lake), folder, f"run_id={run_id}")
        try:
            with os.scandir(d) as it:
                for f in it:
                    m = f.stat().st_mtime
                    newest = m if newest is None else max(newest, m)
        except OSError:
            continue
    return newest


def count_cut_attempt(lake: str, entry: dict[str, Any]) -> None:
    """An attempt that never reported back (its driver was killed or interrupted: the task still
    says ``running`` or ``interrupted``) is added to ``seconds_all`` from its start to its run's
    last write in the lake: the machine time it took, less at most what it did after its last
    write. ``attempts_timed`` counts the attempts in ``seconds_all``; one whose time cannot be
    known (object storage, no start time) is not counted, so a report can say what it misses."""
    if entry.get("status") not in ("running", "interrupted") or not entry.get("started_at"):
        return
    started = datetime.fromisoformat(entry["started_at"]).timestamp()
    last = last_write(lake, entry["run_id"]) if entry.get("run_id") else None
    if last is not None and last >= started:
        _timed(entry, last - started)


def _timed(entry: dict[str, Any], seconds: float) -> None:
    entry["seconds_all"] = float(entry.get("seconds_all") or 0.0) + seconds
    entry["attempts_timed"] = int(entry.get("attempts_timed") or 0) + 1


def unfinished(manifest: dict[str, Any], lake: str) -> list[dict[str, Any]]:
    """Tasks to run: those whose run is not ``completed`` in the lake (manifest updated), less
    the ``carried`` ones."""
    todo = []
    for e in manifest["tasks"]:
        if is_done(lake, e["run_id"]):
            count_cut_attempt(lake, e)  # finished after its driver died: never reported back
            e["status"] = "completed"
        elif e["status"] == CARRIED:
            continue
        else:
            if e["status"] == "completed":  # the lake disagrees: the lake wins
                e["status"] = "pending"
            todo.append(e)
    return todo


def run_sweep(
    manifest: dict[str, Any],
    lake: str,
    backend,
    retries: int = 1,
    on_event: Callable[[str, dict[str, Any], dict[str, Any]], None] | None = None,
    fail: dict[str, int] | None = None,
    poll: float = 0.5,
    device: str = "cpu",
    per_device: int | None = None,
) -> dict[str, Any]:
    """Run the manifest's unfinished tasks on ``backend`` (started and closed here).

    ``device``: where the trained tasks' networks run, resolved (``cpu``, ``cuda`` = every GPU
    here, ``cuda:N``); each attempt gets a device of its own in its config, at most
    ``per_device`` attempts on one GPU at a time (default: the workers spread over the GPUs;
    ``karmic.training.device.sweep_slots``). Scripted (simulated) cells take no device.

    ``on_event(kind, entry, result)``: kind is ``start``, ``retry``, ``completed`` or ``failed``
    (``entry`` is the manifest task, ``result`` what :func:`run_task` returned, or {} on start).
    Returns the manifest, written after every change; its ``status`` is ``completed`` when every
    task is (or is ``carried``), else ``failed``. KeyboardInterrupt marks the running tasks
    ``interrupted`` and propagates.
    """
    fail = fail or {}
    emit = on_event or (lambda kind, entry, res: None)
    todo = unfinished(manifest, lake)
    pending: deque[tuple[dict[str, Any], int]] = deque((e, 0) for e in todo)
    inflight: dict[Any, tuple[dict[str, Any], int]] = {}
    if not todo:
        manifest["status"] = "completed"
        write_manifest(lake, manifest)
        return manifest
    manifest["status"] = "running"
    manifest["last_run"] = {"started_at": now_iso(), "backend": backend.name, "tasks": len(todo)}
    write_manifest(lake, manifest)
    backend.start(max_tasks=len(todo))
    if isinstance(backend, RayBackend) and device_type(device) != "cpu":
        raise ValueError("the ray backend runs its tasks on the CPU; --device cuda is for the local backend")
    slots = sweep_slots(device, backend.workers, per_device)
    manifest["last_run"]["backend_description"] = backend.describe()
    manifest["last_run"]["device"] = device
    if slots.limited:
        manifest["last_run"]["device_slots"] = {d: slots.per_device for d in slots.devices}
    by_key = {e["key"]: e for e in manifest["tasks"]}

    def give_up(entry: dict[str, Any], error: str) -> None:
        entry.setdefault("errors", []).append(error)
        entry.update(status="failed", error=error, finished_at=now_iso())
        emit("failed", entry, {"status": "failed", "error": error})
        write_manifest(lake, manifest)

    def next_ready() -> tuple[int, str | None] | None:
        """(index, partner run id) of the first pending task that may start (a yoked one waits
        for its partner's run); a task whose partner cannot finish here fails, not started."""
        i = 0
        while i < len(pending):
            e, _ = pending[i]
            state, info = yoke_state(e, by_key, lake)
            if state == "ready":
                return i, info
            if state == "error":
                del pending[i]
                give_up(e, f"not started: {info}")
                continue
            i += 1
        return None

    try:
        while pending or inflight:
            while pending and len(inflight) < backend.workers:
                found = next_ready()
                if found is None:
                    if not inflight:  # nothing running can finish a partner they wait for
                        for e, _ in pending:
                            give_up(e, f"not started: its partner {e.get('yoke')} did not finish")
                        pending.clear()
                    break
                pick, partner_run = found
                entry, attempt = pending[pick]
                payload = {"lake": str(lake), "attempt": attempt, "fail_attempts": fail.get(entry["key"], 0)}
                dev = None
                if "simulate" in entry:
                    payload.update(simulate=entry["simulate"], run_id=entry["run_id"],
                                   grid_size=entry["grid_size"], seed=entry["seed"])
                else:
                    dev = slots.take()
                    if dev is None:  # every GPU has its share of cells running: wait for one
                        break
                    payload["config"] = {**task_config(manifest, entry), "device": dev}
                    if partner_run is not None:
                        payload["config"]["tvt_yoke_run"] = partner_run
                    if manifest.get("keep_policies"):  # a study's: pipelines.checkpoints.save_policy
                        payload["keep_policies"] = manifest["keep_policies"]
                del pending[pick]
                count_cut_attempt(lake, entry)
                inflight[backend.submit(payload)] = (entry, attempt, dev)
                entry.update(status="running", started_at=now_iso())
                if dev is not None:
                    entry["device"] = dev
                entry["attempts"] = int(entry.get("attempts", 0)) + 1
                write_manifest(lake, manifest)
                emit("start", entry, {})
            for handle, res in backend.wait(list(inflight), timeout=poll):
                entry, attempt, dev = inflight.pop(handle)
                if dev is not None:
                    slots.give(dev)
                if isinstance(res, BaseException):
                    res = {"status": "failed", "error": one_line(res), "attempt": attempt}
                if res.get("status") == "interrupted":  # Ctrl-C reached the worker before the driver
                    inflight[handle] = (entry, attempt, dev)
                    raise KeyboardInterrupt
                for k in ("host", "how", "seconds", "global_step", "error", "run_id"):
                    if k in res:
                        entry[k] = res[k]
                # every attempt's time, failed and retried ones too (``seconds`` is the last one's)
                _timed(entry, float(res.get("seconds") or 0.0))
                entry["finished_at"] = now_iso()
                if res.get("status") == "completed":
                    entry["status"] = "completed"
                    entry.pop("error", None)
                    emit("completed", entry, res)
                elif attempt < retries:
                    entry.setdefault("errors", []).append(res.get("error"))
                    entry["status"] = "pending"
                    pending.append((entry, attempt + 1))
                    emit("retry", entry, res)
                else:
                    entry.setdefault("errors", []).append(res.get("error"))
                    entry["status"] = "failed"
                    entry["traceback"] = res.get("traceback")
                    emit("failed", entry, res)
                write_manifest(lake, manifest)
    except BaseException:
        for entry, *_ in inflight.values():
            entry["status"] = "interrupted"
        manifest["status"] = "interrupted"
        write_manifest(lake, manifest)
        if isinstance(backend, RayBackend):
            backend.close(cancel=True, handles=list(inflight))
        else:
            backend.close(cancel=True)
        raise
    backend.close()
    done = all(e["status"] in TASK_DONE for e in manifest["tasks"])
    manifest["status"] = "completed" if done else "failed"
    manifest["last_run"]["finished_at"] = now_iso()
    write_manifest(lake, manifest)
    return manifest


__all__ = [
    "CARRIED", "FAIL_ENV", "TASK_DONE", "LocalBackend", "RayBackend", "Task", "make_backend", "manifest_path",
    "keep_policies", "new_manifest", "new_sweep_id", "parse_fail_spec", "plan", "read_manifest", "run_status", "run_sweep",
    "run_task", "task_config", "unfinished", "write_manifest", "yoke_of", "yoke_seed", "yoke_state",
]
