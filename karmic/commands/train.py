"""``karmic train``: recurrent PPO on the batched Harvest env, through the lake.

``karmic train --mode baseline|tvt|matchmaker|full|all --grid-size G --seed S --total-steps N
[--seeds 1,2,3] [--lake PATH] [--resume RUN_ID]``. ``all`` runs the four conditions in turn. A
rich progress bar on stderr shows env-steps/s, mean return and zaps per episode; one line per
finished run goes to stdout (run id, condition, grid, seed, env steps, mean return, zaps/episode).
"""

from __future__ import annotations

import typer

from karmic.commands._common import (
    LAKE_OPTION,
    KarmicError,
    lake_path,
    parse_overrides,
    user_errors,
)
from karmic.training.config import MODES, TrainConfig

ALL_MODES = ("baseline", "tvt", "matchmaker", "full")  # --mode all: the four conditions
MODE_CHOICES = (*MODES, "all")
_D = TrainConfig()  # the one source of the defaults below

def _parse_seeds(seed: int, seeds: str | None) -> list[int]:
    if not seeds:
        return [seed]
    try:
        out = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise KarmicError(f"--seeds must be a comma-separated list of integers, got {seeds!r}") from None
    if not out:
        raise KarmicError("--seeds is empty")
    return out


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
        TextColumn("return {task.fields[ret]:>7.2f}"),
        TextColumn("zaps/ep {task.fields[zaps]:>6.1f}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = progress.add_task(label, total=total, sps=0.0, ret=float("nan"), zaps=float("nan"))

    def on_update(info: dict) -> None:
        progress.update(
            task,
            completed=info["global_step"],
            total=info["total_steps"],
            sps=info["steps_per_s"],
            ret=info["mean_return"],
            zaps=info["zaps_per_episode"],
        )

    return progress, on_update


def _summary(info: dict, cfg) -> str:
    return (
        f"{info['run_id']}\t{cfg.mode}\tgrid={cfg.grid_size}\tseed={cfg.seed}\t"
        f"steps={info['global_step']}\tmean_return={info['mean_return']:.3f}\t"
        f"zaps_per_episode={info['zaps_per_episode']:.2f}"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        mode: str = typer.Option(_D.mode, "--mode", help="baseline | tvt | matchmaker | full | memory (TVT agent, no transport) | all (the four conditions)"),
        algo: str = typer.Option(_D.algo, "--algo", help="Learner: ppo (recurrent PPO) | drqn (recurrent Q-learning, R2D2 style)."),
        grid_size: int = typer.Option(_D.grid_size, "--grid-size", "--grid_size", help="Grid side (10, 20, 30 ...)."),
        seed: int = typer.Option(_D.seed, "--seed", help="Run seed (torch, env resets, minibatches)."),
        seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 1,2,3 (overrides --seed)."),
        total_steps: int = typer.Option(None, "--total-steps", help=f"Env steps (B envs x steps), rounded up to whole episodes [default: {_D.total_steps}; with --resume: the run's own]."),
        lake: str = LAKE_OPTION,
        resume_id: str = typer.Option(None, "--resume", help="Continue RUN_ID from its last checkpoint."),
        num_envs: int = typer.Option(_D.num_envs, "--num-envs", help="Parallel environments B."),
        num_steps: int = typer.Option(_D.num_steps, "--num-steps", help="Rollout length per update."),
        seq_len: int = typer.Option(_D.seq_len, "--seq-len", help="Recurrent sequence length in the update."),
        hidden: int = typer.Option(_D.hidden, "--hidden", help="LSTM size."),
        lr: float = typer.Option(None, "--lr", help="Learning rate [default: ppo 3e-4, drqn 1e-4]."),
        ent_coef: float = typer.Option(_D.ent_coef, "--ent-coef"),
        vf_coef: float = typer.Option(_D.vf_coef, "--vf-coef"),
        max_grad_norm: float = typer.Option(None, "--max-grad-norm", help="Gradient-norm clip [default: ppo 0.5, drqn 40]."),
        agent_id: bool = typer.Option(_D.agent_id, "--agent-id/--no-agent-id", help="Give the network the agent's identity."),
        keep_shards: int = typer.Option(_D.keep_shards, "--keep-shards", help="Trajectory shards kept for replay (K)."),
        replay_shards: int = typer.Option(None, "--replay-shards", help="drqn: shards the learner samples sequences from [default: 8]."),
        keep_trajectories: bool = typer.Option(_D.keep_trajectories, "--keep-trajectories", help="Keep every shard."),
        checkpoint_every: int = typer.Option(_D.checkpoint_every, "--checkpoint-every", help="Updates between checkpoints."),
        threads: int = typer.Option(_D.threads, "--threads", help="Torch threads (0 = all cores)."),
        precision: str = typer.Option(_D.precision, "--precision", help="fp32 | bf16 (bf16 autocast for the network) | auto: bf16 where the CPU has bf16 instructions and its bf16 matmuls measure faster."),
        preset: str = typer.Option(None, "--preset", help="Env preset (small, medium, big, ssd, seed, karmic-small, karmic-big: the calibrated ecologies)."),
        overrides: list[str] = typer.Option(None, "--set", help="Env config override KEY=VALUE (repeatable)."),
        tvt_mode: str = typer.Option(_D.tvt_mode, "--tvt-mode", help="TVT transport: learned | semantic | both (tvt, full)."),
        memory_size: int = typer.Option(_D.memory_size, "--memory-size", help="TVT memory rows per agent (tvt, full)."),
        tvt_select: str = typer.Option(_D.tvt_select, "--tvt-select", help="TVT learner's reads: learner (each minibatch selects the top-k rows; the default) | rollout (the rows the acting read selected; docs/tvt-speed.md)."),
        tvt_learn: str = typer.Option(_D.tvt_learn, "--tvt-learn", help="TVT value into earlier shards: replay (replay passes; the default) | lagged (each shard learned once, --tvt-lag updates late; docs/tvt-speed.md)."),
        tvt_lag: int = typer.Option(None, "--tvt-lag", help="--tvt-learn lagged: updates between a shard's rollout and its learning [default: the memory's span in shards]."),
        tensorboard: bool = typer.Option(False, "--tensorboard", help="Log charts/, losses/, social/ scalars (needs tensorboard)."),
    ) -> None:
        """Train recurrent PPO or DRQN agents (one network per run) from trajectories replayed from the lake."""
        with user_errors():
            from karmic.training.learners import ALGOS, make_config, make_trainer, resumed_trainer

            lake_dir = lake_path(lake)
            if tensorboard:
                import importlib.util

                if importlib.util.find_spec("tensorboard") is None:
                    raise KarmicError("--tensorboard needs the tensorboard package: pip install tensorboard")
            if resume_id:
                trainer = resumed_trainer(resume_id, lake_dir, total_steps=total_steps, tensorboard=tensorboard)
                progress, on_update = _progress(f"{trainer.cfg.mode} (resume)", trainer.n_updates)
                trainer.on_update = on_update
                with progress:
                    info = trainer.run()
                print(_summary(info, trainer.cfg))
                return

            if algo not in ALGOS:
                raise KarmicError(f"unknown --algo {algo!r}; choose one of {', '.join(ALGOS)}")
            if replay_shards is not None and algo != "drqn":
                raise KarmicError("--replay-shards is a drqn option (--algo drqn)")
            if mode not in MODE_CHOICES:
                raise KarmicError(f"unknown --mode {mode!r}; choose one of {', '.join(MODE_CHOICES)}")
            if grid_size < 5:
                raise KarmicError(f"--grid-size must be >= 5, got {grid_size}")
            modes = list(ALL_MODES) if mode == "all" else [mode]
            if precision not in ("auto", "fp32", "bf16"):
                raise KarmicError(f"unknown --precision {precision!r}; choose fp32, bf16 or auto")
            if tvt_mode not in ("learned", "semantic", "both"):
                raise KarmicError(f"unknown --tvt-mode {tvt_mode!r}; choose learned, semantic or both")
            env_overrides = parse_overrides(overrides)
            for m in modes:
                for s in _parse_seeds(seed, seeds):
                    optional = {"lr": lr, "max_grad_norm": max_grad_norm, "replay_shards": replay_shards}
                    cfg = make_config(
                        algo, mode=m, grid_size=grid_size, seed=s,
                        total_steps=_D.total_steps if total_steps is None else total_steps,
                        num_envs=num_envs, num_steps=num_steps, seq_len=seq_len, hidden=hidden,
                        ent_coef=ent_coef, vf_coef=vf_coef,
                        agent_id=agent_id, keep_shards=keep_shards,
                        keep_trajectories=keep_trajectories, checkpoint_every=checkpoint_every,
                        threads=threads, precision=precision, preset=preset, env_overrides=env_overrides,
                        tvt_mode=tvt_mode, memory_size=memory_size, tvt_select=tvt_select, tvt_learn=tvt_learn,
                        tvt_lag=tvt_lag,
                        **{k: v for k, v in optional.items() if v is not None},
                    )
                    cfg.validate()
                    trainer = make_trainer(cfg, lake_dir, tensorboard=tensorboard)
                    progress, on_update = _progress(f"{m} g{grid_size} s{s}", trainer.n_updates)
                    trainer.on_update = on_update
                    with progress:
                        info = trainer.run()
                    print(_summary(info, cfg), flush=True)
