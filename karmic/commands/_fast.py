"""``karmic sql "select count(*) from <table>"`` answered from the commit log, before typer,
DuckDB or Arrow are imported (issue 34: the count from the shell in well under a second).

:func:`run` takes the command line; where it is exactly ``sql`` with a bare count of one table
(``select count(*) [as name] from <table>``, any case, an optional ``;``) over a local lake
whose table has a commit log (``pipelines.commits``), it prints the sum of the committed parts'
row counts, as ``karmic sql`` would print DuckDB's answer (same column name, same formats), and
returns True. Anything else (another statement, ``--help``, an unknown or malformed option, an
s3:// lake, a lake written before the log, a ``--run`` with no committed part) returns False and
the command runs through typer as always, with its errors. The answer is the count DuckDB gives
over the same committed parts: the view reads exactly the parts the log names, and each record
holds its part's row count. What it does not do is open the parts: a committed part torn or
deleted afterwards is reported by ``karmic lake check``, not by this count.
"""

from __future__ import annotations

import os
import re

_COUNT = re.compile(
    r'\s*select\s+count\s*\(\s*\*\s*\)\s*(?:(?:as\s+)?(?:"([^"]+)"|([A-Za-z_][A-Za-z0-9_]*))\s+)?'
    r"from\s+([A-Za-z_][A-Za-z0-9_]*)\s*;?\s*", re.IGNORECASE)
_TABLES = ("events", "episodes", "tvt_transports", "actions", "eval_agents")  # karmic.lake.TABLE_VIEWS
_KEYWORDS = {"from", "as"}


def parse_count(sql: str) -> tuple[str, str] | None:
    """(table, column name) of a bare ``select count(*) ... from <table>``, else None."""
    m = _COUNT.fullmatch(sql)
    if not m:
        return None
    quoted, bare, table = m.groups()
    if bare is not None and bare.lower() in _KEYWORDS:
        return None
    table = table.lower()
    if table not in _TABLES:
        return None
    return table, quoted or bare or "count_star()"


def _options(args: list[str]) -> tuple[str, dict[str, str]] | None:
    """``QUERY [--format F] [--run R] [--lake L]`` (either ``--opt value`` or ``--opt=value``),
    each at most once; anything else: None."""
    positional: list[str] = []
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            if name not in ("--format", "--run", "--lake") or name in opts:
                return None
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            opts[name] = value
        else:
            positional.append(a)
        i += 1
    if len(positional) != 1:
        return None
    return positional[0], opts


def run(argv: list[str]) -> bool:
    """Answer ``argv`` (the arguments after ``karmic``) here if it is a count the log answers."""
    if len(argv) < 2 or argv[0] != "sql":
        return False
    parsed = _options(argv[1:])
    if parsed is None:
        return False
    sql, opts = parsed
    count = parse_count(sql)
    fmt = opts.get("--format", "table")
    raw = opts.get("--lake") or os.environ.get("KARMIC_LAKE") or "data_lake"
    if count is None or fmt not in ("table", "csv", "json") or "://" in raw:
        return False
    from pathlib import Path

    from pipelines import commits

    table, column = count
    lake = Path(raw)
    if not (lake / table).is_dir():
        return False
    run_id = opts.get("--run")
    n = commits.count(lake, table, run_id)
    if n is None or (run_id is not None and n == 0):  # no log; or a run to be told apart from none
        return False
    from karmic.commands._output import print_rows

    print_rows([column], [(n,)], fmt)
    return True


def main() -> None:  # pragma: no cover - the console script, run as a process in the tests
    """The ``karmic`` console script: the count from the log, else the typer app (``karmic.cli``)."""
    import sys

    if not run(sys.argv[1:]):
        from karmic.cli import app

        app()
