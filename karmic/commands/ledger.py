"""``karmic ledger``: rebuild who owes whom from the lake; ``--check`` compares with the SQL."""

from __future__ import annotations

import json
import sys

import typer

from karmic.commands._common import LAKE_OPTION, fail, lake_path, user_errors


def register(app: typer.Typer) -> None:
    @app.command("ledger")
    def ledger_command(
        run: str = typer.Option(None, "--run", help="Run id (default: the latest run)."),
        fmt: str = typer.Option("table", "--format", help="table | json"),
        check: bool = typer.Option(False, "--check", help="Compare with queries/ledger_debt.sql; exit 1 on a difference."),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Rebuild a run's debt ledger from its events and print who owes whom."""
        if fmt not in ("table", "json"):
            fail(f"--format must be table or json, got {fmt!r}")
        with user_errors():
            from karmic.lake import LakeError
            from pipelines import ledger_rebuild as pl

            try:
                root = lake_path(lake)
                run_id = run or pl.latest_run(root)
                if check:
                    diffs = pl.check(root, run_id)
                    if diffs:
                        print(f"ledger check failed for {run_id}: {len(diffs)} difference(s); first: {diffs[0]}",
                              file=sys.stderr)
                        raise typer.Exit(1)
                    print(f"ledger check passed for {run_id}: the Python rebuild and ledger_debt.sql agree")
                    return
                rebuilt = pl.rebuild(root, run_id)
            except LakeError as exc:
                fail(str(exc))
            rows = rebuilt.entries()
            if fmt == "json":
                print(json.dumps(rows))
                return
            from karmic.commands._output import print_rows

            cols = (["env"] if rebuilt.num_envs > 1 else []) + ["debtor", "creditor", "debt"]
            print_rows(cols, [tuple(r[c] for c in cols) for r in rows], "table",
                       title=f"ledger of {run_id} after {rebuilt.n_episodes} episodes "
                             f"(total debt {rebuilt.total_debt:.3f})")
