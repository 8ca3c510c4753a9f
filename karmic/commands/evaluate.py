"""``karmic evaluate``: solo competence and cross-play of trained policies (pipelines.evaluate)."""

from __future__ import annotations

import typer

from karmic.commands._common import LAKE_OPTION, fail, lake_path, user_errors

# the table's columns (--json prints every column of queries/eval_summary.sql)
TABLE_COLUMNS = ("scenario", "focal", "background", "role", "policy", "agents", "episodes", "apples_per_agent_step",
                 "hits_given_per_agent_episode", "hits_taken_per_agent_episode", "predation_per_agent_episode",
                 "predation_per_encounter")


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_command(
        policies: list[str] = typer.Argument(
            ..., help="Policy files (final.pt, ckpt-*.pt), folders holding one, run ids of the lake, or random | greedy."),
        scenario: list[str] = typer.Option(
            None, "--scenario", help="solo | solo-frozen | cross-play (repeatable; default: all that apply)."),
        episodes: int = typer.Option(4, "--episodes", help="Episodes per scenario."),
        seed: int = typer.Option(0, "--seed"),
        focal: int = typer.Option(1, "--focal", help="Cross-play: how many agents play the focal policy."),
        preset: str = typer.Option(None, "--preset", help="Environment preset (default: the first policy's own)."),
        grid_size: int = typer.Option(None, "--grid-size", help="Board side (default: the first policy's own)."),
        max_steps: int = typer.Option(None, "--max-steps", help="Episode length (default: the environment's)."),
        references: bool = typer.Option(True, "--references/--no-references",
                                        help="Also run the solo scenarios for the random and greedy policies."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary rows as JSON."),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Solo competence (alone, and among frozen agents) and cross-play; results are eval runs in the lake."""
        if episodes < 1:
            fail(f"--episodes must be >= 1, got {episodes}")
        if max_steps is not None and max_steps < 1:
            fail(f"--max-steps must be >= 1, got {max_steps}")
        with user_errors():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            from karmic.commands._output import print_rows
            from pipelines.evaluate import SCENARIOS, evaluate

            wanted = list(scenario) if scenario else [s for s in SCENARIOS if s != "cross-play" or len(policies) > 1]
            with Progress(TextColumn("[bold]evaluate"), BarColumn(), TextColumn("{task.completed}/{task.total} episodes"),
                          TimeRemainingColumn(), console=Console(stderr=True), transient=True) as prog:
                task = prog.add_task("eval", total=None)
                try:
                    cols, rows, run_ids = evaluate(
                        lake_path(lake), list(policies), wanted, episodes=episodes, seed=seed, n_focal=focal,
                        preset=preset, grid_size=grid_size, max_steps=max_steps, references=references,
                        on_start=lambda n: prog.update(task, total=n),
                        on_episode=lambda: prog.advance(task))
                except KeyboardInterrupt:
                    fail("interrupted: the episodes played so far are in the lake (run marked interrupted)", 130)
            if json_out:
                print_rows(cols, rows, "json")
                return
            idx = [cols.index(c) for c in TABLE_COLUMNS]
            print_rows(list(TABLE_COLUMNS), [tuple(r[i] for i in idx) for r in rows], "table",
                       title=f"evaluate ({len(run_ids)} eval runs; SQL: karmic query eval_summary)")
