"""``karmic sql "SELECT ..."``: read-only SQL over the views events, episodes, runs."""

from __future__ import annotations

import typer

from karmic.commands._common import LAKE_OPTION, fail, lake_path, user_errors


def register(app: typer.Typer) -> None:
    @app.command("sql")
    def sql_command(
        query: str = typer.Argument(..., help="A SELECT over the views events, episodes, runs."),
        fmt: str = typer.Option("table", "--format", help="table | csv | json"),
        run: str = typer.Option(None, "--run", help="Restrict the views to one run."),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Run read-only SQL over the lake (views: events, episodes, runs)."""
        from karmic.commands._output import FORMATS, print_rows

        if fmt not in FORMATS:
            fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        with user_errors():
            from karmic.lake import LakeError, connect, fetch

            try:
                con = connect(lake_path(lake), run=run, sql=query)
                cols, rows = fetch(con, query)
            except LakeError as exc:
                fail(str(exc))
            print_rows(cols, rows, fmt)
