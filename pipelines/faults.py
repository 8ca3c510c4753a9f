"""Injected crashes, for the tests that kill a run at a chosen moment and resume it.

The writers and the training loop call :func:`point(name)` at the moments a crash matters
(``rollout.step``, ``learn.minibatch``, ``update.after_shard``, ``write.<table>`` inside an atomic
write, after the bytes and before the rename ...). Nothing happens unless a crash is armed:

- ``KARMIC_CRASH_AT=<name>:<n>`` in the environment: the ``n``-th time (0-based) the process
  reaches ``name`` it sends itself SIGKILL (a real kill -9: no ``finally``, no flush). With
  ``KARMIC_CRASH_ONCE=<path>`` only the first process to get there dies (it creates ``path``
  first): a study's retry of the killed cell then runs through;
- :func:`arm(name, n)` in-process: the ``n``-th hit raises :class:`InjectedCrash`, a
  ``BaseException`` that no ``except Exception`` catches (the fast tests' stand-in for kill -9).

A call costs one dict lookup when nothing is armed.
"""

from __future__ import annotations

import os
import signal

ENV = "KARMIC_CRASH_AT"
ONCE_ENV = "KARMIC_CRASH_ONCE"


class InjectedCrash(BaseException):
    """Raised at an armed point (in-process stand-in for SIGKILL)."""


_armed: dict[str, int] = {}  # point -> hits left before the crash
_hits: dict[str, int] = {}  # point -> times reached (counted only while something is armed)
_kill = False
_env_spec = os.environ.get(ENV)  # read once: the process is started with it


def _from_env() -> None:
    global _kill, _env_spec
    spec, _env_spec = _env_spec, None  # fires once per process
    name, _, n = spec.rpartition(":")
    _armed[name] = int(n)
    _kill = True


def arm(name: str, n: int = 0) -> None:
    """Raise InjectedCrash the ``n``-th time (0-based) ``name`` is reached from now on."""
    global _kill
    _armed.clear()
    _hits.clear()
    _armed[name] = int(n)
    _kill = False


def disarm() -> None:
    _armed.clear()
    _hits.clear()


def hits(name: str) -> int:
    return _hits.get(name, 0)


def point(name: str) -> None:
    """A moment where a crash may be injected (see the module docstring)."""
    if not _armed:
        if _env_spec is None:
            return
        _from_env()
    n = _hits.get(name, 0)
    _hits[name] = n + 1
    if _armed.get(name) == n:
        if _kill:
            once = os.environ.get(ONCE_ENV)
            if once:
                try:
                    os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:  # another process died here already
                    _armed.clear()
                    return
            os.kill(os.getpid(), signal.SIGKILL)
        _armed.clear()
        raise InjectedCrash(f"injected crash at {name} (hit {n})")
