"""Printing result tables: rich tables, CSV or JSON (a list of row objects) on stdout."""

from __future__ import annotations

import csv
import json
import math
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

FORMATS = ("table", "csv", "json")
# columns that hold a run id or a policy's name (karmic evaluate): printed whole, like ids
NAME_COLUMNS = ("focal", "background", "policy")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    return v


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def print_rows(columns: list[str], rows: list[tuple], fmt: str = "table", title: str | None = None) -> None:
    if fmt == "json":
        out = [{c: _jsonable(v) for c, v in zip(columns, r, strict=True)} for r in rows]
        sys.stdout.write(json.dumps(out, default=str) + "\n")
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, show_lines=False)
        for i, c in enumerate(columns):
            if c == "id" or c.endswith("_id") or c in NAME_COLUMNS:
                # an id is what the user types next: never cut it (`sim-mix…`), other columns wrap
                width = max([len(c), *(len(_cell(r[i])) for r in rows)])
                t.add_column(c, no_wrap=True, min_width=width, overflow="ignore")
            else:
                t.add_column(c)
        for r in rows:
            t.add_row(*(_cell(v) for v in r))
        Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(t)
