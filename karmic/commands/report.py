"""`karmic report`: one self-contained HTML page (and a Markdown twin) of the ablation."""

from __future__ import annotations

from pathlib import Path

import typer

from karmic.commands._common import LAKE_OPTION, lake_path, user_errors


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        out: Path = typer.Option(
            Path("reports/latest"), "--out", help="Report directory (index.html, report.md, PNGs)."
        ),
        run: list[str] = typer.Option(None, "--run", help="Only these runs (repeatable)."),
        late_fraction: float = typer.Option(
            0.1, "--late-fraction", help="Late training = this last fraction of each run's steps."
        ),
        bins: int = typer.Option(20, "--bins", help="Bins of global_step per curve."),
        title: str = typer.Option(None, "--title", help="Report title."),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Plots, ablation table, runs' configs and the SQL behind each figure; prints the path."""
        with user_errors():
            from pipelines.report import make_report

            index = make_report(
                lake_path(lake),
                out,
                runs=run or None,
                late_fraction=late_fraction,
                n_bins=bins,
                title=title,
            )
            print(index)
