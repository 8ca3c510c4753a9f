"""``karmic lake check``: find what a crash or a bug left wrong in a lake (pipelines.lake_check)."""

from __future__ import annotations

import typer

from karmic.commands._common import LAKE_OPTION, fail, lake_path, user_errors


def register(app: typer.Typer) -> None:
    lake_app = typer.Typer(help="Inspect the lake itself.", no_args_is_help=True)
    app.add_typer(lake_app, name="lake")

    @lake_app.command("check")
    def check_command(lake: str = LAKE_OPTION) -> None:
        """Duplicates, orphans, rows of uncommitted rounds, missing episodes and torn files: one line
        per problem and exit 1, or one OK line and exit 0."""
        with user_errors():
            from karmic.lake import LakeError
            from pipelines.lake_check import check_lake

            root = lake_path(lake)
            try:
                problems = check_lake(root)
            except LakeError as exc:
                fail(str(exc))
            for p in problems:
                print(p)
            if problems:
                raise typer.Exit(1)
            print(f"OK: {root}: no duplicates, orphans, uncommitted rows, missing episodes or torn files")

    @lake_app.command("migrate")
    def migrate_command(lake: str = LAKE_OPTION) -> None:
        """Give a lake written before the commit log its log (pipelines.commits): every part of
        every table committed, once. Readers then bind from the log instead of every footer.
        Safe to repeat or interrupt; the first run writing to an old lake does the same."""
        with user_errors():
            from pipelines.commits import migrate
            from pipelines.lake_check import TABLES

            root = lake_path(lake)
            if not root.is_dir():
                fail(f"lake not found: {root}")
            for table in TABLES:
                print(f"{table}: {migrate(root, table)} part(s) committed")
