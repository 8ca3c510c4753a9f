"""The ``karmic`` command: a thin typer app that parses and delegates.

Each command lives in ``karmic/commands/<name>.py`` and registers itself with ``register(app)``.
Command modules import only typer at module level; torch, the environment, DuckDB and the lake
are imported inside the command bodies so ``karmic --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="karmic",
    help="Karmic-RL: event-sourced Harvest with TVT, a conspiring matchmaker and a DuckDB lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order is the order shown by `karmic --help`.
COMMAND_MODULES = (
    "simulate",
    "train",
    "query",
    "sql",
    "ledger",
    "plot",
    "report",
    "verify",
    "replay",
    "sweep",
    "study",
    "lake",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"karmic.commands.{_name}").register(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
