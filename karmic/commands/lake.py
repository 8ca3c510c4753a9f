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

    @lake_app.command("compact")
    def compact_command(
        lake: str = LAKE_OPTION,
        table: list[str] = typer.Option(None, "--table", help="Only this table (repeatable); default: every "
                                        "table and the runs' metadata."),
        target_rows: int = typer.Option(4_000_000, "--target-rows", help="About this many rows per compacted file."),
    ) -> None:
        """Rewrite the committed parts of finished runs into a few large Parquet files, recorded in
        the commit log, so readers open a handful of files instead of one per run and round. The
        parts stay; running or killed runs are left alone. Safe to interrupt and to repeat."""
        with user_errors():
            from pipelines.compact import CompactError, compact

            root = lake_path(lake)
            try:
                results, runs = compact(root, table or None, target_rows)
            except CompactError as exc:
                fail(str(exc))
            for r in results:
                if r.no_log:
                    print(f"{r.table}: no commit log (run `karmic lake migrate` first), skipped")
                    continue
                extra = f"; finished {r.finished} interrupted compaction(s)" if r.finished else ""
                print(f"{r.table}: {r.parts} part(s), {r.rows} row(s) into {r.files} file(s){extra}")
            if not table:
                print(f"runs: {runs} finished run(s) into the compacted runs table")

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
