"""``karmic query NAME``: run ``queries/NAME.sql`` over the lake; ``--list`` shows them all."""

from __future__ import annotations

import typer

from karmic.commands._common import LAKE_OPTION, KarmicError, fail, lake_path, user_errors

# what a query's parameters must parse as (SQL's try_cast would turn a malformed one into NULL,
# which the query reads as "unset": the default, silently)
PARAM_TYPES = {"n_bins": int, "min_hits": int, "small_grid": int, "big_grid": int,
               "late_fraction": float, "by": ("episode",)}


def check_params(name: str, params: dict[str, str], by_given: bool) -> None:
    """A parameter the query does not read, or one that does not parse: one line, exit 2."""
    from karmic.lake import query_variables

    reads = query_variables(name)
    for k, v in params.items():
        opt = "--by" if k == "by" and by_given else f"--param {k}={v}"
        if k not in reads:
            said = ", ".join(sorted(reads)) or "none"
            raise KarmicError(f"{opt}: query {name} does not read {k} (it reads: {said})")
        want = PARAM_TYPES.get(k)
        if isinstance(want, tuple):
            if v not in want:
                raise KarmicError(f"{opt}: must be one of {', '.join(want)}")
        elif want is not None:
            try:
                want(v)
            except ValueError:
                raise KarmicError(f"{opt}: must be {'an integer' if want is int else 'a number'}") from None


def register(app: typer.Typer) -> None:
    @app.command("query")
    def query_command(
        name: str = typer.Argument(None, help="Query name (queries/NAME.sql)."),
        list_: bool = typer.Option(False, "--list", help="List the queries and what they return."),
        run: str = typer.Option(None, "--run", help="Restrict the views to one run."),
        by: str = typer.Option(None, "--by", help="Grouping for queries that take one (e.g. episode)."),
        param: list[str] = typer.Option(None, "--param", help="key=value, read in SQL as getvariable('key')."),
        fmt: str = typer.Option("table", "--format", help="table | csv | json"),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Run a named metric query (queries/NAME.sql) over the lake."""
        from karmic.commands._output import FORMATS, print_rows
        from karmic.lake import LakeError, list_queries, run_query

        if fmt not in FORMATS:
            fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        with user_errors():
            try:
                if list_:
                    print_rows(["query", "description"], [tuple(q) for q in list_queries()], fmt)
                    return
                if not name:
                    fail("give a query NAME, or --list to see them")
                params: dict[str, str] = {}
                for p in param or []:
                    if "=" not in p:
                        fail(f"--param takes key=value, got {p!r}")
                    k, v = p.split("=", 1)
                    params[k.strip()] = v
                if by is not None:
                    params["by"] = by
                check_params(name, params, by is not None)
                cols, rows = run_query(name, lake_path(lake), run=run, params=params)
            except LakeError as exc:
                fail(str(exc))
            print_rows(cols, rows, fmt, title=name if fmt == "table" else None)
