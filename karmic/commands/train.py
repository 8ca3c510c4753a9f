"""``karmic train``: recurrent PPO or DRQN on the batched Harvest env, through the lake.

Every ``TrainConfig`` / ``DRQNConfig`` field is a flag, generated from the dataclasses (the field's
docstring is its help, its default is shown), so a field added to a config is a flag without an
edit here (CleanRL's ``Args``, tyro). A run is configured, from lowest to highest precedence, by
the dataclass defaults, a TOML file (``--config run.toml``: field names as keys, ``mode``,
``seeds`` and an ``[env]`` table of environment fields), the flags, and ``--set KEY=VALUE`` (a
training field or an environment field). run.json records the resulting config, the command line
and the config file's text. ``--mode NAME`` is a trained condition of the registry (``karmic conditions``); ``--mode all`` runs the four conditions of the ablation in turn. A rich progress bar
on stderr shows env-steps/s, mean return and zaps per episode; one line per finished run goes to
stdout (run id, condition, grid, seed, env steps, mean return, zaps/episode).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import shlex
import sys
import typing
from pathlib import Path
from typing import Any

import typer

from karmic.commands._common import (
    LAKE_OPTION,
    KarmicError,
    check_writable,
    lake_path,
    parse_overrides,
    user_errors,
)
from karmic.conditions import ablation_names, names
from karmic.training.config import CONDITION_FIELDS, MODES, DRQNConfig, TrainConfig, field_docs

ALL_MODES = tuple(ablation_names())  # --mode all: the four conditions of the ablation
_D = TrainConfig()  # the one source of the defaults below
_DQ = DRQNConfig()
# fields with their own flag or none: the condition (--mode, which also takes `all`), the env
# overrides (--set / [env]) and the run id (new_run_id, or --resume)
NOT_FLAGS = ("mode", "env_overrides", "run_id")
ALGOS = ("ppo", "drqn")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _config_fields() -> list[tuple[str, Any, str, bool]]:
    """(field, type, help, drqn_only) of every TrainConfig field and then DRQNConfig's own, in
    declaration order; the help is the field's docstring and, where the learners' defaults
    differ, both defaults."""
    hints = {**typing.get_type_hints(DRQNConfig), **typing.get_type_hints(TrainConfig)}
    docs = {**field_docs(DRQNConfig), **field_docs(TrainConfig)}  # a shared field: PPO's words
    base = [f.name for f in dataclasses.fields(TrainConfig)]
    extra = [f.name for f in dataclasses.fields(DRQNConfig) if f.name not in base]
    out = []
    for name in base + extra:
        if name in NOT_FLAGS:
            continue
        out.append((name, hints[name], docs.get(name, ""), name in extra))
    return out


FIELDS = _config_fields()
ENV_FIELDS = {"max_steps", "regrowth_probs"}  # filled in below from HarvestConfig (torch-free)
FIELD_NAMES = {name for name, *_ in FIELDS}


def _differs(name: str) -> bool:
    return name != "algo" and hasattr(_D, name) and getattr(_D, name) != getattr(_DQ, name)


def _option(name: str, tp: Any, doc: str, drqn_only: bool) -> tuple[Any, Any]:
    """(annotation, typer.Option) of a generated flag. Defaults are shown by typer itself
    (never written as ``[default: ...]`` in a help text, which rich markup would eat)."""
    help_ = ("drqn: " if drqn_only else "") + doc
    decls = [flag(name)] + (["--grid_size"] if name == "grid_size" else [])
    if tp is bool:
        return bool, typer.Option(getattr(_DQ if drqn_only else _D, name), f"{flag(name)}/--no-{name.replace('_', '-')}", help=help_)
    ann = tp
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        ann = next(a for a in typing.get_args(tp) if a is not type(None))
    if _differs(name):  # lr, max_grad_norm, gae_lambda ...: the learner decides
        shown = f"ppo {getattr(_D, name)}, drqn {getattr(_DQ, name)}"
        return ann, typer.Option(None, *decls, help=help_, show_default=shown)
    if name == "device":  # the library's default is the CPU; the command's is the machine's
        return ann, typer.Option("auto", *decls, help=help_)
    if name == "num_envs":
        return ann, typer.Option(None, *decls, help=help_, show_default="the device's: cpu 16, cuda 256 (docs/devices.md)")
    if name == "total_steps":
        return ann, typer.Option(_D.total_steps, *decls, help=help_ + " With --resume: the run's own unless given.")
    if name in CONDITION_FIELDS:  # None: the condition's value (karmic.conditions)
        return ann, typer.Option(None, *decls, help=help_, show_default=f"the condition's ({CONDITION_FIELDS[name]} but where it sets one)")
    default = getattr(_DQ if drqn_only else _D, name)
    if default is None:
        return ann, typer.Option(None, *decls, help=help_, show_default="none")
    return ann, typer.Option(default, *decls, help=help_)


def _parse_seeds(seed: int, seeds: str | list | None) -> list[int]:
    if seeds is None or seeds == "":
        return [seed]
    if isinstance(seeds, list):
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise KarmicError(f"seeds must be a non-empty list of integers, got {seeds!r}")
        return list(seeds)
    try:
        out = [int(s) for s in str(seeds).split(",") if s.strip()]
    except ValueError:
        raise KarmicError(f"--seeds must be a comma-separated list of integers, got {seeds!r}") from None
    if not out:
        raise KarmicError("--seeds is empty")
    return out


def _coerce(name: str, value: Any, where: str) -> Any:
    """``value`` as the type of field ``name``; a wrong one names ``where`` (the flag or file)."""
    tp = dict((n, t) for n, t, *_ in FIELDS)[name]
    opt = typing.get_origin(tp) is not None and type(None) in typing.get_args(tp)
    base = next((a for a in typing.get_args(tp) if a is not type(None)), tp) if opt else tp
    if value is None and opt:
        return None
    if base is bool:
        if isinstance(value, bool):
            return value
        raise KarmicError(f"{where}: {name} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise KarmicError(f"{where}: {name} must be an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise KarmicError(f"{where}: {name} must be a number, got {value!r}")
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise KarmicError(f"{where}: {name} must be a string, got {value!r}")
    return value


def _suggest(key: str, names) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(names), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def read_config_file(path: str) -> tuple[dict[str, Any], str]:
    """``--config run.toml`` -> (fields, the file's text). Keys: TrainConfig / DRQNConfig fields
    (``lr = 1e-4``), ``mode`` (a condition or ``all``), ``seeds`` (a list) and an ``[env]`` table of
    environment fields; anything else is one line naming the file and the key."""
    import tomllib

    where = f"--config {path}"
    p = Path(path)
    if not p.is_file():
        raise KarmicError(f"{where}: no such file")
    text = p.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KarmicError(f"{where}: not valid TOML ({exc})") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name == "env":
            if not isinstance(value, dict):
                raise KarmicError(f"{where}: [env] must be a table of environment fields")
            out["env_overrides"] = dict(value)
        elif name in ("mode", "seeds"):
            out[name] = value
        elif name in FIELD_NAMES:
            out[name] = _coerce(name, value, where)
        else:
            raise KarmicError(f"{where}: unknown key {key!r}{_suggest(name, FIELD_NAMES | {'mode', 'seeds', 'env'})}; "
                              "keys are `karmic train` flags without the dashes, and [env]")
    return out, text


def _flagify(message: str) -> str:
    """A config's validation message in the user's words: field names become their flags."""
    words = sorted(FIELD_NAMES | {"mode"}, key=len, reverse=True)
    return re.sub(r"\b(" + "|".join(words) + r")\b", lambda m: flag(m.group(1)), message)


def _env_fields() -> set[str]:
    from karmic.envs.config import HarvestConfig

    return {f.name for f in dataclasses.fields(HarvestConfig)}


def _env_check(preset: str | None, grid_size: int, env: dict[str, Any], given: dict[str, str]) -> Any:
    """The environment config, or one line naming the flag that made it invalid."""
    from karmic.envs.config import make_config as env_config

    try:
        return env_config(preset, grid_size=grid_size, **env)
    except (ValueError, TypeError) as exc:
        msg = str(exc).strip().splitlines()[0]
        m = re.match(r"invalid HarvestConfig\.(\w+): (.*)", msg)
        if m and m.group(1) == "preset":
            raise KarmicError(f"--preset: {m.group(2)}") from None
        if m:
            key = m.group(1)
            raise KarmicError(f"{given.get(key, f'--set {key}')}: {m.group(2)}") from None
        raise KarmicError(f"environment config: {msg}") from None


def _rounds(cfg, max_steps: int) -> int:
    """Rounds (of num_envs episodes) the trainer will run: its update count, as it computes it."""
    ns = cfg.num_steps
    align = math.lcm(ns, max_steps) // ns
    n_updates = max(align, math.ceil(math.ceil(cfg.total_steps / (ns * cfg.num_envs)) / align) * align)
    return n_updates * ns // max_steps


def _progress(label: str, total: int):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[sps]:>7.0f} steps/s"),
        TextColumn("{task.fields[ret]}"),
        TextColumn("{task.fields[zaps]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    waiting = "(first episodes end with the round)"
    task = progress.add_task(label, total=total, sps=0.0, ret=f"return {waiting}", zaps="")

    def on_update(info: dict) -> None:
        ret, zaps = info["mean_return"], info["zaps_per_episode"]
        progress.update(
            task,
            completed=info["global_step"],
            total=info["total_steps"],
            sps=info["steps_per_s"],
            # no episode has ended before the first round does: say so, never "nan"
            ret=f"return {ret:>7.2f}" if math.isfinite(ret) else f"return {waiting}",
            zaps=f"zaps/ep {zaps:>6.1f}" if math.isfinite(zaps) else "",
        )

    return progress, on_update


def _summary(info: dict, cfg) -> str:
    ret, zaps = info["mean_return"], info["zaps_per_episode"]
    return (
        f"{info['run_id']}\t{cfg.mode}\tgrid={cfg.grid_size}\tseed={cfg.seed}\t"
        f"steps={info['global_step']}\tmean_return={ret:.3f}\tzaps_per_episode={zaps:.2f}"
        if math.isfinite(ret) else
        f"{info['run_id']}\t{cfg.mode}\tgrid={cfg.grid_size}\tseed={cfg.seed}\t"
        f"steps={info['global_step']}\tno episode finished"
    )


def _interrupted(trainer, lake: str | None, rest: list[str], again: str) -> None:
    """Ctrl-C: what stopped and the exact command that continues it."""
    from pipelines.checkpoints import list_checkpoints

    rid = trainer.run_id
    lake_s = f" --lake {shlex.quote(str(lake))}" if lake else ""
    if list_checkpoints(trainer.lake, rid):
        print(f"interrupted: run {rid} stopped at update {trainer.update}/{trainer.n_updates}; "
              f"resume with: karmic train --resume {rid}{lake_s}", file=sys.stderr)
    else:
        print(f"interrupted: run {rid} stopped before its first checkpoint (nothing to resume); "
              f"start it again with: {again}", file=sys.stderr)
    if rest:
        print(f"not started: {', '.join(rest)}", file=sys.stderr)


def _command_line(ctx: typer.Context | None = None) -> str:
    """The command as typed, rebuilt from what click parsed (so it is exact also when the
    command was not started from a shell): the options given on the command line, in order."""
    if ctx is None:
        return "karmic " + shlex.join(sys.argv[1:])
    words = ["karmic", "train"]
    for p in ctx.command.params:
        src = ctx.get_parameter_source(p.name)
        if src is None or src.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        v = ctx.params[p.name]
        if getattr(p, "is_flag", False) or isinstance(v, bool):
            words.append(p.opts[0] if v else (p.secondary_opts or [p.opts[0]])[0])
        elif isinstance(v, (list, tuple)):
            for item in v:
                words += [p.opts[0], str(item)]
        elif v is not None:
            words += [p.opts[0], str(v)]
    return shlex.join(words)


def _train(ctx: typer.Context, kw: dict[str, Any]) -> None:
    from karmic.training.learners import make_config, make_trainer, resumed_trainer

    lake_dir = lake_path(kw["lake"])
    check_writable(lake_dir)  # a read-only lake: one line before anything else is said or written
    if kw["tensorboard"]:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise KarmicError("--tensorboard needs the tensorboard package: pip install tensorboard")

    def given(name: str) -> bool:  # typed on the command line (not the flag's default)
        src = ctx.get_parameter_source(name)
        return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")

    if kw["resume_id"]:
        others = [flag(n) for n in FIELD_NAMES | {"mode", "seeds", "config", "overrides"}
                  if n != "total_steps" and given(n)]
        if others:
            raise KarmicError(f"--resume continues a run with its recorded config; drop {', '.join(sorted(others))}")
        trainer = resumed_trainer(kw["resume_id"], lake_dir, total_steps=kw["total_steps"] if given("total_steps") else None,
                                  tensorboard=kw["tensorboard"])  # on the device the run recorded
        progress, on_update = _progress(f"{trainer.cfg.mode} (resume)", trainer.n_updates)
        trainer.on_update = on_update
        try:
            with progress:
                info = trainer.run()
        except KeyboardInterrupt:
            _interrupted(trainer, kw["lake"], [], _command_line(ctx))
            raise typer.Exit(130) from None
        print(_summary(info, trainer.cfg))
        return

    # defaults < --config file < flags < --set
    values: dict[str, Any] = {}
    config_text = None
    if kw["config"]:
        values, config_text = read_config_file(kw["config"])
    ENV_FIELDS.update(_env_fields())
    env: dict[str, Any] = dict(values.pop("env_overrides", {}))
    env_given = {k: f"--config {kw['config']} [env] {k}" for k in env}
    mode = kw["mode"] if given("mode") or "mode" not in values else values["mode"]
    seeds = _parse_seeds(kw["seed"] if given("seed") or "seed" not in values else values["seed"],
                         kw["seeds"] if given("seeds") or "seeds" not in values else values["seeds"])
    values.pop("seeds", None)
    values.pop("mode", None)
    for name in FIELD_NAMES:
        if given(name):
            values[name] = kw[name]
    for key, value in parse_overrides(kw["overrides"]).items():
        name = key.replace("-", "_")
        if name in ("mode", "seeds", "run_id", "env_overrides"):
            raise KarmicError(f"--set {key}=...: use {flag(name) if name != 'env_overrides' else '--set KEY=VALUE'}")
        if name in FIELD_NAMES:
            values[name] = _coerce(name, value, f"--set {key}={value}")
        elif key not in ENV_FIELDS:
            raise KarmicError(f"--set {key}={value}: no training or environment field {key!r}"
                              f"{_suggest(name, FIELD_NAMES | ENV_FIELDS)} (see karmic train --help)")
        else:
            env[key] = value
            env_given[key] = f"--set {key}={value}"

    algo = values.get("algo", _D.algo)
    if algo not in ALGOS:
        raise KarmicError(f"unknown --algo {algo!r}; choose one of {', '.join(ALGOS)}")
    drqn_only = sorted(n for n, _, _, d in FIELDS if d and n in values)
    if drqn_only and algo != "drqn":
        raise KarmicError(f"{', '.join(flag(n) for n in drqn_only)}: a drqn option (--algo drqn)")
    choices = [*names(trained=True), "all"]  # read live: a condition registered later is a mode
    if mode not in choices:
        raise KarmicError(f"unknown --mode {mode!r}; choose one of {', '.join(choices)}")
    grid_size = values.get("grid_size", _D.grid_size)
    if not isinstance(grid_size, int) or grid_size < 5:
        raise KarmicError(f"--grid-size must be >= 5, got {grid_size}")
    from karmic.training.device import check_name, device_defaults, resolve_device

    device = check_name(values.get("device", "auto"))
    # drqn's learner is the CPU's; ppo's device is resolved once, before the first run
    # resolved quietly here; what auto chose is said once the first run has its lake (a bad lake
    # or flag stays one line)
    values["device"] = "cpu" if algo == "drqn" and device == "auto" else resolve_device(device, say=False)
    if values.get("num_envs") is None:
        values["num_envs"] = device_defaults(values["device"])["num_envs"]
    modes = list(ALL_MODES) if mode == "all" else [mode]
    env_cfg = _env_check(values.get("preset"), grid_size, env, env_given)

    cfgs = []
    for m in modes:
        for s in seeds:
            fields = {k: v for k, v in values.items() if k != "algo"}
            cfg = make_config(algo, **{**fields, "mode": m, "seed": s, "env_overrides": env})
            try:
                cfg.validate()
            except ValueError as exc:
                raise KarmicError(_flagify(str(exc))) from None
            cfgs.append(cfg)

    # the matchmaker pairs from what the ledger saw in earlier rounds: in the first round it
    # has seen nothing, so a one-round run of matchmaker is baseline's and full is tvt's
    max_steps = env_cfg.episode_length
    rounds = _rounds(cfgs[0], max_steps)
    if rounds < 2 and any(MODES[c.mode][1] for c in cfgs):
        need = 2 * cfgs[0].num_envs * max_steps
        what = (f"--total-steps {cfgs[0].total_steps} is {rounds} round of {cfgs[0].num_envs} envs x "
                f"{max_steps} steps; the matchmaker acts from the second round")
        if mode == "all":
            raise KarmicError(f"{what}, so matchmaker would equal baseline and full tvt to the last digit; "
                              f"give --total-steps >= {need}")
        print(f"note: {what}, so this run's pairs are random (as baseline's); --total-steps >= {need} "
              "for a run where it acts", file=sys.stderr)

    launch = {"command": _command_line(ctx), "config_file": kw["config"], "config_file_text": config_text}
    todo = [f"{c.mode} seed {c.seed}" for c in cfgs]
    for i, cfg in enumerate(cfgs):
        trainer = make_trainer(cfg, lake_dir, tensorboard=kw["tensorboard"])
        if i == 0 and device == "auto" and algo != "drqn":
            resolve_device("auto")  # says what auto chose, once per process
        trainer.io.extra_meta = {"launch": launch}
        progress, on_update = _progress(f"{cfg.mode} g{cfg.grid_size} s{cfg.seed}", trainer.n_updates)
        trainer.on_update = on_update
        try:
            with progress:
                info = trainer.run()
        except KeyboardInterrupt:
            _interrupted(trainer, kw["lake"], todo[i + 1:], launch["command"])
            raise typer.Exit(130) from None
        print(_summary(info, cfg), flush=True)


def register(app: typer.Typer) -> None:
    fixed = [
        ("mode", str, typer.Option(_D.mode, "--mode", help=f"A trained condition ({' | '.join(names(trained=True))}; `karmic conditions` says what each is) | all (the four of the ablation, in turn).")),
        ("seeds", str, typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 1,2,3 (overrides --seed).", show_default="--seed")),
        ("config", str, typer.Option(None, "--config", help="A TOML file of settings: flag names without the dashes as keys (lr = 1e-4), mode, seeds, and an [env] table; flags override it. Recorded in run.json.", show_default="none")),
        ("overrides", list[str], typer.Option(None, "--set", help="KEY=VALUE (repeatable): a training field (gamma=0.9) or an environment field (max_steps=200).", show_default="none")),
        ("lake", str, LAKE_OPTION),
        ("resume_id", str, typer.Option(None, "--resume", help="Continue RUN_ID from its last checkpoint, with its recorded config (only --total-steps may change).", show_default="none")),
        ("tensorboard", bool, typer.Option(False, "--tensorboard", help="Log charts/, losses/, social/ scalars (needs tensorboard).")),
    ]
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    annotations: dict[str, Any] = {"ctx": typer.Context}
    generated = [(name, *_option(name, tp, doc, d)) for name, tp, doc, d in FIELDS]
    for name, ann, opt in fixed[:1] + generated + fixed[1:]:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
        annotations[name] = ann

    def train(ctx: typer.Context, **kw: Any) -> None:
        """Train recurrent PPO or DRQN agents (one network per run) from trajectories replayed
        from the lake. Every training field is a flag (below), a key of --config FILE, or --set."""
        with user_errors():
            _train(ctx, kw)

    train.__signature__ = inspect.Signature(params)
    train.__annotations__ = annotations
    app.command()(train)
