"""``karmic sweep``: an ablation study, every (condition, grid size, seed) as its own task.

``karmic sweep --modes all|baseline,tvt,... --grid-sizes 10,30 --seeds 1,2,3 --total-steps N
[--backend local|ray] [--workers K] [--address ADDR] [--retries R] [--lake PATH_OR_URL]
[--set key=value ...] [--sweep-id ID]`` and ``karmic sweep --resume SWEEP_ID``.

Each task is one ``karmic train`` run (``karmic.training.ppo``) with the run id
``<sweep_id>-<mode>-g<G>-s<S>``; ``--set`` sets a ``TrainConfig`` field (``num_envs``,
``hidden``, ``checkpoint_every`` ...) when one has that name, else an environment config field
(as ``karmic train --set``). The engine, the backends and the manifest are ``pipelines.sweep``.
One progress display on stderr for the whole sweep; at the end the tasks and the ``ablation``
query's table on stdout. Exit 1 when a task finally failed, 2 on bad input, 130 on Ctrl-C.
"""

from __future__ import annotations

import os
import sys

import typer

from karmic.commands._common import (
    COMPACT_OPTION,
    LAKE_OPTION,
    KarmicError,
    compact_after,
    fail,
    lake_arg,
    parse_overrides,
    user_errors,
)
from karmic.commands.train import ALL_MODES
from karmic.conditions import names
from karmic.training.config import TrainConfig

DEFAULT_STEPS = TrainConfig.total_steps
DEVICE_OPTION = typer.Option("cpu", "--device", help="cpu | auto (cuda where torch sees a GPU) | cuda (every GPU here) | cuda:N: where each task's network runs; tasks keep their own num_envs. The CPU by default: on a 16-core H200 machine 16 cells side by side ran 8,800 env-steps/s on the CPU and 7,000 with their networks sharing the GPU (docs/devices.md).")
PER_DEVICE_OPTION = typer.Option(None, "--workers-per-device", help="Tasks at once on one GPU [default: the workers spread over the GPUs]; each is one CPU process.")


def sweep_device(device: str, backend: str, per_device: int | None) -> str:
    """--device resolved for a sweep or a study (said once when auto), checked with the backend."""
    from karmic.training.device import resolve_device

    if per_device is not None and per_device < 1:
        raise KarmicError(f"--workers-per-device must be >= 1, got {per_device}")
    dev = resolve_device(device)
    if backend == "ray" and dev != "cpu":
        raise KarmicError(f"--device {device}: the ray backend runs its tasks on the CPU; use --backend local")
    return dev


def _int_list(flag: str, text: str, minimum: int | None = None) -> list[int]:
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise KarmicError(f"{flag} must be a comma-separated list of integers, got {text!r}")
    try:
        out = [int(s) for s in items]
    except ValueError:
        raise KarmicError(f"{flag} must be a comma-separated list of integers, got {text!r}") from None
    if minimum is not None and min(out) < minimum:
        raise KarmicError(f"{flag}: every value must be >= {minimum}, got {min(out)}")
    return list(dict.fromkeys(out))


def _modes(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if items == ["all"]:
        return list(ALL_MODES)
    trained = names(trained=True)
    for m in items:
        if m not in trained:
            raise KarmicError(
                f"unknown mode {m!r} in --modes; use all or a comma-separated list of {', '.join(trained)}"
            )
    if not items:
        raise KarmicError("--modes is empty")
    return list(dict.fromkeys(items))


def _split_overrides(items: list[str] | None) -> tuple[dict, dict]:
    """--set KEY=VALUE: TrainConfig fields, then environment config fields."""
    import dataclasses

    from karmic.training.learners import ALGOS, config_class
    from pipelines.sweep import TASK_FIELDS

    # every learner's fields (`--set algo=drqn --set replay_shards=4`)
    train_fields = {f.name for a in ALGOS for f in dataclasses.fields(config_class(a))} - {"env_overrides"}
    train, env = {}, {}
    for key, value in parse_overrides(items).items():
        if key in TASK_FIELDS:
            raise KarmicError(f"--set {key}=...: a sweep sets {key} per task (use --modes, --grid-sizes, --seeds)")
        (train if key in train_fields else env)[key] = value
    return train, env


def _check_configs(train: dict, modes: list[str], grids: list[int]) -> None:
    """Every task's TrainConfig and env config are valid before anything starts."""
    from karmic.envs.config import make_config
    from karmic.training.learners import config_from_dict
    from pipelines.sweep import yoke_of

    for g in grids:
        for m in modes:
            # a yoked task's partner run is named when it starts (pipelines.sweep.yoke_state)
            yoke = {"tvt_yoke_run": "its-partner"} if yoke_of(m) else {}
            cfg = config_from_dict({**train, "mode": m, "grid_size": g, "seed": 0, **yoke})
            cfg.validate()
        env = make_config(cfg.preset, grid_size=g, **cfg.env_overrides)
        ms, ns = env.episode_length, cfg.num_steps
        if ms % ns and ns % ms:
            raise KarmicError(f"num_steps ({ns}) must divide the episode length ({ms}) or be a multiple of it")


class SweepDisplay:
    """One rich progress bar for the sweep (stderr) and one line per finished or failed task."""

    def __init__(self, label: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.counts = {"completed": 0, "failed": 0, "running": 0, "retried": 0}
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True, soft_wrap=True),
        )
        self.task = self.progress.add_task(label, total=total, counts=self._text())

    def _text(self) -> str:
        c = self.counts
        return f"done {c['completed']}  failed {c['failed']}  running {c['running']}  retried {c['retried']}"

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_event(self, kind: str, entry: dict, res: dict) -> None:
        say = self.progress.console.print
        key = entry["key"]
        if kind == "start":
            self.counts["running"] += 1
        else:
            self.counts["running"] -= 1
        if kind == "completed":
            self.counts["completed"] += 1
            say(f"done    {key}: {res.get('how', '')} on {res.get('host', '?')}, "
                f"{res.get('seconds', 0):.1f} s, attempt {entry['attempts']}", markup=False, highlight=False)
        elif kind == "retry":
            self.counts["retried"] += 1
            say(f"retry   {key}: attempt {entry['attempts']} failed: {res.get('error')}", markup=False, highlight=False)
        elif kind == "failed":
            self.counts["failed"] += 1
            say(f"FAILED  {key} after {entry['attempts']} attempt(s): {res.get('error')}", markup=False, highlight=False)
        done = self.counts["completed"] + self.counts["failed"]
        self.progress.update(self.task, completed=done, counts=self._text())


def _print_results(manifest: dict, lake: str) -> None:
    from karmic.commands._output import print_rows
    from karmic.lake import LakeError, run_query

    rows = [
        (e["run_id"], e["mode"], e["grid_size"], e["seed"], e["status"], e.get("attempts", 0),
         e.get("host"), None if e.get("seconds") is None else round(float(e["seconds"]), 1),
         e.get("how") if e["status"] == "completed" else e.get("error"))
        for e in manifest["tasks"]
    ]
    print_rows(["run_id", "condition", "grid_size", "seed", "status", "attempts", "host", "seconds", "note"],
               rows, title=f"sweep {manifest['sweep_id']}")
    sys.stdout.flush()
    try:
        cols, arows = run_query("ablation", lake)
    except LakeError as exc:
        print(f"ablation: {exc}", file=sys.stderr)
        return
    print_rows(cols, arows, title="ablation (every run in the lake)")


def register(app: typer.Typer) -> None:
    @app.command()
    def sweep(
        modes: str = typer.Option(None, "--modes", help="all (the four of the ablation), or a comma-separated list of trained conditions (`karmic conditions`) [default: all]."),
        grid_sizes: str = typer.Option(None, "--grid-sizes", help="Comma-separated grid sides, e.g. 10,30 [default: 10]."),
        seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 1,2,3 [default: 1]."),
        total_steps: int = typer.Option(None, "--total-steps", help=f"Env steps per task, rounded up to whole episodes [default: {DEFAULT_STEPS}]."),
        backend: str = typer.Option("local", "--backend", help="local (process pool on this machine) | ray (Ray core tasks)."),
        workers: int = typer.Option(None, "--workers", help="Tasks at once [default: local: the cores; ray: the cluster's CPUs]."),
        address: str = typer.Option(None, "--address", help="Ray cluster address (ray.init(address=...)); none: a local cluster."),
        retries: int = typer.Option(1, "--retries", help="Retries of a failed task (each resumes from its last checkpoint)."),
        lake: str = LAKE_OPTION,
        overrides: list[str] = typer.Option(None, "--set", help="KEY=VALUE for every task: a TrainConfig field (num_envs, hidden, ...) or an env config field (repeatable)."),
        sweep_id: str = typer.Option(None, "--sweep-id", help="Name of a new sweep [default: sweep-<utc time>-<hex>]."),
        resume: str = typer.Option(None, "--resume", help="Run the unfinished tasks of sweep SWEEP_ID (its own settings)."),
        device: str = DEVICE_OPTION,
        workers_per_device: int = PER_DEVICE_OPTION,
        compact: bool = COMPACT_OPTION,
    ) -> None:
        """Run an ablation sweep (conditions x grid sizes x seeds) on a process pool or a Ray cluster."""
        with user_errors():
            from pipelines import sweep as sw

            lake_s = lake_arg(lake)
            if retries < 0:
                raise KarmicError(f"--retries must be >= 0, got {retries}")
            if workers is not None and workers < 1:
                raise KarmicError(f"--workers must be >= 1, got {workers}")
            if backend not in ("local", "ray"):
                raise KarmicError(f"unknown --backend {backend!r}; choose local or ray")
            fail_spec = sw.parse_fail_spec(os.environ.get(sw.FAIL_ENV))
            device = sweep_device(device, backend, workers_per_device)
            if resume:
                given = [f for f, v in (("--modes", modes), ("--grid-sizes", grid_sizes), ("--seeds", seeds),
                                        ("--total-steps", total_steps), ("--set", overrides),
                                        ("--sweep-id", sweep_id)) if v not in (None, [], ())]
                if given:
                    raise KarmicError(f"--resume runs the sweep with its own settings; drop {', '.join(given)}")
                if not sw.is_url(lake_s) and not os.path.isdir(lake_s):
                    raise KarmicError(f"lake not found: {lake_s}")
                manifest = sw.read_manifest(lake_s, resume)
            else:
                mode_list = _modes("all" if modes is None else modes)
                grids = _int_list("--grid-sizes", "10" if grid_sizes is None else grid_sizes, minimum=5)
                seed_list = _int_list("--seeds", "1" if seeds is None else seeds)
                steps = DEFAULT_STEPS if total_steps is None else total_steps
                if steps < 1:
                    raise KarmicError(f"--total-steps must be >= 1, got {steps}")
                train_over, env_over = _split_overrides(overrides)
                train = {**train_over, "total_steps": steps, "env_overrides": env_over}
                _check_configs(train, mode_list, grids)
                sid = sweep_id or sw.new_sweep_id()
                if not sw.ID_RE.fullmatch(sid):
                    raise KarmicError(f"invalid --sweep-id {sid!r}: use letters, digits, '_', '-', '.'")
                try:
                    sw.read_manifest(lake_s, sid)
                    exists = True
                except ValueError:
                    exists = False
                if exists:
                    raise KarmicError(f"sweep {sid} already exists in {lake_s}; continue it with --resume {sid}")
                manifest = sw.new_manifest(
                    sid, sw.plan(mode_list, grids, seed_list), train,
                    {"modes": mode_list, "grid_sizes": grids, "seeds": seed_list, "total_steps": steps,
                     "set": parse_overrides(overrides)},
                )
            be = sw.make_backend(backend, workers=workers, address=address)
            manifest.setdefault("invocations", []).append(
                {"backend": backend, "workers": workers, "address": address, "retries": retries,
                 "device": device, "workers_per_device": workers_per_device})
            sid = manifest["sweep_id"]
            todo = [e for e in manifest["tasks"] if sw.run_status(lake_s, e["run_id"]) != "completed"]
            print(f"sweep {sid}: {len(manifest['tasks'])} task(s), {len(todo)} to run, "
                  f"lake {lake_s}, backend {backend}", file=sys.stderr)
            display = SweepDisplay(f"sweep {sid}", len(todo))
            try:
                with display:
                    manifest = sw.run_sweep(manifest, lake_s, be, retries=retries,
                                            on_event=display.on_event, fail=fail_spec,
                                            device=device, per_device=workers_per_device)
            except KeyboardInterrupt:
                print(f"interrupted; continue with: karmic sweep --resume {sid} --lake {lake_s}", file=sys.stderr)
                raise typer.Exit(130) from None
            print(f"ran on {manifest['last_run'].get('backend_description', backend)}", file=sys.stderr)
            _print_results(manifest, lake_s)
            failed = [e for e in manifest["tasks"] if e["status"] != "completed"]
            if failed:
                names = ", ".join(e["key"] for e in failed)
                fail(f"{len(failed)} of {len(manifest['tasks'])} task(s) failed: {names} "
                     f"(errors in {sw.manifest_path(lake_s, sid)}; continue with --resume {sid})", code=1)
            if compact:
                compact_after(lake_s, f"sweep {sid}")
