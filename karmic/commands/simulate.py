"""``karmic simulate``: run a scripted or trained policy in Harvest and write it to the lake."""

from __future__ import annotations

import sys

import typer

from karmic.commands._common import LAKE_OPTION, check_writable, fail, lake_path, user_errors


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_command(
        grid_size: int = typer.Option(10, "--grid-size", "--grid_size", help="Board side (>= 5)."),
        episodes: int = typer.Option(10, "--episodes", help="Episodes to run."),
        policy: str = typer.Option(
            "random", "--policy", help="random | greedy | aggressor | tit-for-tat | mixed | CKPT path"
        ),
        matchmaker: bool = typer.Option(False, "--matchmaker/--no-matchmaker",
                                        help="Live debt ledger and rigged spawns."),
        seed: int = typer.Option(0, "--seed", help="Seed of the env resets and the policy's choices (same seed, same events)."),
        max_steps: int = typer.Option(None, "--max-steps", help="Episode length.", show_default="1000; 500 at 10x10"),
        preset: str = typer.Option(None, "--preset", help="small | medium | big | ssd | seed"),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Simulate episodes with a policy; every social event goes to the lake."""
        if episodes < 1:
            fail(f"--episodes must be >= 1, got {episodes}")
        if max_steps is not None and max_steps < 1:
            fail(f"--max-steps must be >= 1, got {max_steps}")
        if grid_size < 5:
            fail(f"--grid-size {grid_size} is too small (minimum 5)")
        with user_errors():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            from karmic.commands._output import print_rows
            from pipelines.simulate import resolve_policy, simulate

            resolve_policy(policy, seed)  # bad policy: one line before anything is written
            check_writable(lake_path(lake))
            err = Console(stderr=True)
            with Progress(TextColumn("[bold]simulate"), BarColumn(), TextColumn("{task.completed}/{task.total} episodes"),
                          TimeRemainingColumn(), console=err, transient=True) as prog:
                task = prog.add_task("sim", total=episodes)
                try:
                    res = simulate(lake_path(lake), grid_size=grid_size, episodes=episodes, policy=policy,
                                   matchmaker=matchmaker, seed=seed, max_steps=max_steps, preset=preset,
                                   on_episode=lambda r: prog.update(task, completed=r.episodes))
                except KeyboardInterrupt:
                    print("interrupted: flushed what was simulated; run marked interrupted", file=sys.stderr)
                    raise typer.Exit(130) from None
            cols = ["run_id", "episodes", "apples", "zaps_fired", "hits"]
            row = [res.run_id, res.episodes, res.apples, res.zaps_fired, res.hits]
            if res.ledger is not None:
                led = res.ledger
                cols += ["predatory_zaps", "retribution_ratio", "total_debt"]
                rr = led.retribution_ratio
                row += [led.n_predation, None if rr is None else round(rr, 3), round(led.total_debt, 3)]
            print_rows(cols, [tuple(row)], "table", title="simulate")
