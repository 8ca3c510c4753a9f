"""``karmic conditions``: the registry of conditions (``karmic.conditions``) as a table.

One row per condition in display order: its name, whether it is trained or scripted, the agent,
spawns, transport and reward shaping, what it is and what comparing against it controls for.
``--format csv|json`` for machines (JSON adds the colour, line style and marker of the figures).
"""

from __future__ import annotations

import typer

from karmic.commands._common import KarmicError, user_errors


def register(app: typer.Typer) -> None:
    @app.command()
    def conditions(
        fmt: str = typer.Option("table", "--format", help="table | csv | json."),
    ) -> None:
        """List the conditions (name, what it is, what it controls for) that train, sweep and study accept."""
        with user_errors():
            from karmic.commands._output import FORMATS, print_rows
            from karmic.conditions import table_rows

            if fmt not in FORMATS:
                raise KarmicError(f"unknown --format {fmt!r}; choose {', '.join(FORMATS)}")
            rows = table_rows()
            cols = ["condition", "kind", "agent", "spawns", "transport", "shaping", "claim", "controls_for"]
            if fmt == "json":
                cols += ["display_order", "policy", "color", "linestyle", "marker"]
            out = []
            for r in rows:
                r = {**r, "kind": "trained" if r["trained"] else f"scripted ({r['policy']})"}
                out.append(tuple(r[c] for c in cols))
            print_rows(cols, out, fmt, title="Conditions (karmic.conditions)")
