"""Helpers shared by the command modules: user errors and where the lake is."""

from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer

DEFAULT_LAKE = "data_lake"
WRITE_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)
EXIT_USAGE = 2


class KarmicError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2, no traceback."""


def fail(message: str, code: int = EXIT_USAGE) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def in_user_words(msg: str) -> str:
    """An environment config error names the flag the user typed, not the internal field:
    'invalid HarvestConfig.max_steps: ...' -> '--max-steps: ...' where the command has that flag,
    else '--set max_steps=...' where it has --set, else 'environment field max_steps'."""
    import re

    try:  # typer >= 0.2x carries its own click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover
        from click import get_current_context

    m = re.match(r"invalid HarvestConfig\.(\w+): (.*)", msg)
    if not m:
        return msg
    key, why = m.groups()
    ctx = get_current_context(silent=True)
    opts = {o for p in (ctx.command.params if ctx else []) for o in getattr(p, "opts", [])}
    flag = "--" + key.replace("_", "-")
    if flag in opts:
        return f"{flag}: {why}"
    if "--set" in opts:
        given = next((s for s in reversed(ctx.params.get("overrides") or []) if s.split("=", 1)[0] == key), None)
        return f"--set {given or key}: {why}"
    return f"environment field {key}: {why}"


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
        fail(in_user_words(msg))
    except OSError as exc:
        # a read-only lake or --out folder (or a full disk): the first write fails, before any
        # part of the run is in the lake (run.json, parts and reports are written by atomic rename)
        if exc.errno not in WRITE_ERRNOS:
            raise
        where = exc.filename or "the lake"
        fail(f"cannot write {where}: {exc.strerror or 'read-only'} (a read-only lake or --out folder?)")


def lake_path(lake: str | None) -> Path:
    """--lake, else $KARMIC_LAKE, else ./data_lake: a directory (Path), or an ``s3://bucket/prefix``
    (a ``pipelines.storage.ObjectPath``; s3fs is imported only then)."""
    from pipelines.storage import resolve

    return resolve(lake or os.environ.get("KARMIC_LAKE") or DEFAULT_LAKE)


def check_writable(path) -> None:
    """Before a command starts a run: the lake folder (or, while it does not exist, the nearest
    folder above it) takes a file, or one line and exit 2 (user_errors). Leaves nothing behind:
    the probe is an anonymous temporary file. An s3:// lake is checked by its writes."""
    import tempfile

    if not isinstance(path, Path):
        return
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None


LAKE_OPTION = typer.Option(
    None, "--lake", help="Lake directory or s3://bucket/prefix.", show_default="$KARMIC_LAKE or ./data_lake")


COMPACT_OPTION = typer.Option(
    False, "--compact", help="When every run has completed, compact the lake's finished runs into a few large "
    "files (`karmic lake compact`: queries bind in a fraction of the time).")


def compact_after(lake: str, what: str) -> None:
    """``--compact`` of ``study run`` / ``sweep``: ``karmic lake compact`` over the whole lake, one line."""
    from pipelines.compact import CompactError, compact

    try:
        results, runs = compact(lake)
    except CompactError as exc:
        fail(str(exc))
    rows, files = sum(r.rows for r in results), sum(r.files for r in results)
    print(f"{what}: lake compacted: {rows:,} row(s) of finished runs into {files} file(s), {runs} run(s) "
          "into the compacted runs table", file=sys.stderr)


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
