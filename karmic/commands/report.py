"""`karmic report`: one self-contained HTML page (and a Markdown twin) of the ablation."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from karmic.commands._common import LAKE_OPTION, fail, lake_path, user_errors
from karmic.definitions import LATE_FRACTION, MIN_HITS


@contextmanager
def duckdb_errors():
    """A query that fails on this lake (torn file, foreign schema): one line, exit 2."""
    try:
        yield
    except Exception as exc:
        import duckdb

        if not isinstance(exc, duckdb.Error):
            raise
        lines = str(exc).strip().splitlines()
        fail(f"query failed on this lake: {lines[0] if lines else type(exc).__name__}")


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        out: Path = typer.Option(
            Path("reports/latest"), "--out", help="Report directory (index.html, report.md, PNGs)."
        ),
        run: list[str] = typer.Option(None, "--run", help="Only these runs (repeatable)."),
        late_fraction: float = typer.Option(
            LATE_FRACTION, "--late-fraction",
            help="Late training = this last fraction of each run's env steps (the one definition "
            "in karmic/definitions.py, shared with `karmic study report`).",
        ),
        bins: int = typer.Option(20, "--bins", help="Bins of global_step per curve."),
        min_hits: int = typer.Option(
            MIN_HITS, "--min-hits", help="Draw a retribution ratio only from at least this many hits."
        ),
        title: str = typer.Option(None, "--title", help="Report title."),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Plots, ablation table, runs' configs and the SQL behind each figure; prints the path."""
        with user_errors(), duckdb_errors():
            from pipelines.report import make_report

            index = make_report(
                lake_path(lake),
                out,
                runs=run or None,
                late_fraction=late_fraction,
                n_bins=bins,
                title=title,
                min_hits=min_hits,
            )
            print(index)
