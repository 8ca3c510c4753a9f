"""Helpers shared by the command modules: user errors and where the lake is."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer

DEFAULT_LAKE = "data_lake"
EXIT_USAGE = 2


class KarmicError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2, no traceback."""


def fail(message: str, code: int = EXIT_USAGE) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


@contextmanager
def user_errors():
    """Turn KarmicError / ValueError / FileNotFoundError into one line on stderr and exit 2."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except (KarmicError, ValueError, FileNotFoundError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(msg)


def lake_path(lake: str | None) -> Path:
    """--lake, else $KARMIC_LAKE, else ./data_lake: a directory (Path), or an ``s3://bucket/prefix``
    (a ``pipelines.storage.ObjectPath``; s3fs is imported only then)."""
    from pipelines.storage import resolve

    return resolve(lake or os.environ.get("KARMIC_LAKE") or DEFAULT_LAKE)


LAKE_OPTION = typer.Option(
    None, "--lake", help="Lake directory or s3://bucket/prefix (default: $KARMIC_LAKE or ./data_lake).")


def lake_arg(lake: str | None) -> str:
    """The lake as a string: a URL is passed through untouched, a path as given."""
    raw = lake or os.environ.get("KARMIC_LAKE") or DEFAULT_LAKE
    return raw if "://" in raw else str(lake_path(raw))


def parse_overrides(items: list[str] | None) -> dict:
    """--set KEY=VALUE (repeatable): ints, floats, true/false, else the string."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise KarmicError(f"--set expects KEY=VALUE, got {item!r}")
        for conv in (int, float):
            try:
                out[key] = conv(raw)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(raw.lower(), raw)
    return out
