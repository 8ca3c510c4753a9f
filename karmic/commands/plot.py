"""`karmic plot`: the five figures of the ablation (PNG, matplotlib Agg), every number from SQL."""

from __future__ import annotations

from pathlib import Path

import typer

from karmic.commands._common import LAKE_OPTION, lake_path, user_errors
from karmic.commands.report import duckdb_errors
from karmic.definitions import LATE_FRACTION, MIN_HITS


def register(app: typer.Typer) -> None:
    @app.command()
    def plot(
        run: list[str] = typer.Option(None, "--run", help="Only these runs (repeatable)."),
        out: Path = typer.Option(Path("plots"), "--out", help="Directory for the PNGs."),
        late_fraction: float = typer.Option(
            LATE_FRACTION, "--late-fraction",
            help="Late training = this last fraction of each run's env steps (karmic/definitions.py).",
        ),
        bins: int = typer.Option(20, "--bins", help="Bins of global_step per curve."),
        min_hits: int = typer.Option(
            MIN_HITS, "--min-hits", help="Draw a retribution ratio only from at least this many hits."
        ),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Aggression, debt, retribution ratio, scale comparison and social outcome plots."""
        with user_errors(), duckdb_errors():
            from pipelines.report import make_plots

            paths = make_plots(
                lake_path(lake),
                out,
                runs=run or None,
                late_fraction=late_fraction,
                n_bins=bins,
                min_hits=min_hits,
            )
            for p in paths:
                print(p)
