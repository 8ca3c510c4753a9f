"""The ``karmic`` command: a thin typer app that parses and delegates.

Each command lives in ``karmic/commands/<name>.py`` and registers itself with ``register(app)``.
Command modules import only typer at module level; torch, the environment, DuckDB and the lake
are imported inside the command bodies so ``karmic --help`` stays fast. A bare count
(``karmic sql "select count(*) from events"``) is answered from the lake's commit log before any
of this is imported (``karmic.commands._fast``, whose ``main`` is the console script).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python -m karmic.cli: the count needs neither typer nor DuckDB
    from karmic.commands._fast import run as _run_fast

    if _run_fast(sys.argv[1:]):
        raise SystemExit(0)

import importlib  # noqa: E402
import inspect  # noqa: E402
import re  # noqa: E402

import typer  # noqa: E402
from typer.models import ParameterInfo  # noqa: E402

app = typer.Typer(
    name="karmic",
    help="Karmic-RL: event-sourced Harvest with TVT, a conspiring matchmaker and a DuckDB lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _version(value: bool) -> None:
    if value:
        from karmic import __version__

        print(f"karmic {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Karmic-RL: event-sourced Harvest with TVT, a conspiring matchmaker and a DuckDB lake."""


# Order is the order shown by `karmic --help`.
COMMAND_MODULES = (
    "simulate",
    "train",
    "conditions",
    "query",
    "sql",
    "runs",
    "ledger",
    "plot",
    "report",
    "verify",
    "replay",
    "evaluate",
    "sweep",
    "study",
    "lake",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"karmic.commands.{_name}").register(app)


_DEFAULT_IN_HELP = re.compile(r"\s*\[default: ([^\]]*)\]")
# "(default: X)" and "(...; default: X)" written in a help text: shown as typer shows a default
_DEFAULT_IN_PARENS = re.compile(r"\s*\(default:? ([^)]*)\)")
_DEFAULT_AFTER_SEMI = re.compile(r";\s*default:? ([^)]*)\)")


def _fix_help(info) -> None:
    """Help texts are rich markup: a ``[default: ...]`` or any ``[...]`` written in one would be
    eaten as a tag (issue 36: `--lr  Learning rate .`). A written default becomes the option's
    shown default (typer renders it); every other ``[`` is escaped."""
    text = getattr(info, "help", None)
    if not text:
        return
    for pattern, keep in ((_DEFAULT_IN_HELP, ""), (_DEFAULT_IN_PARENS, ""), (_DEFAULT_AFTER_SEMI, ")")):
        m = pattern.search(text)
        if m and getattr(info, "show_default", True) in (True, None):
            info.show_default = m.group(1).strip()
            text = pattern.sub(keep, text, count=1)
            break
    info.help = re.sub(r"(?<!\\)\[", r"\\[", text)


def _fix_all_help(typer_app: typer.Typer) -> None:
    for cmd in typer_app.registered_commands:
        for p in inspect.signature(cmd.callback).parameters.values():
            if isinstance(p.default, ParameterInfo):
                _fix_help(p.default)
    for group in typer_app.registered_groups:
        _fix_all_help(group.typer_instance)


_fix_all_help(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
