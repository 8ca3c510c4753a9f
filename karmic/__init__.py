"""Karmic-RL: the Harvest social dilemma, event-sourced, with TVT and a conspiring matchmaker.

Importing ``karmic`` registers the environment id ``KarmicHarvest-v0`` with PettingZoo: at once
where PettingZoo is already imported, else the moment it is (an import hook), so ``import karmic``
imports neither PettingZoo nor torch (``karmic sql`` starts in a fraction of the time; issue 34).
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"

ENV_ID = "KarmicHarvest-v0"


def make(env_id: str = ENV_ID, **config):
    """Shortcut for ``pettingzoo.make("parallel", env_id, **config)`` for Karmic environments."""
    if env_id != ENV_ID:
        raise ValueError(f"unknown environment id {env_id!r}; known: {ENV_ID!r}")
    from karmic.envs import harvest_v0

    return harvest_v0.parallel_env(**config)


def _register() -> None:
    try:
        import pettingzoo
    except ImportError:  # pragma: no cover - pettingzoo is a dependency
        return
    register = getattr(pettingzoo, "register", None)
    if register is None:  # pragma: no cover - pettingzoo < 1.25 has no registry
        return
    for env_type, entry in (("parallel", "parallel_env"), ("aec", "env")):
        try:
            register(env_type, ENV_ID, f"karmic.envs.harvest_v0:{entry}")
        except Exception:  # already registered in this process
            pass


class _RegisterOnImport:
    """A meta-path finder that lets PettingZoo import as usual and registers the environment once
    its package has run; it removes itself after that."""

    def find_spec(self, name, path=None, target=None):
        if name != "pettingzoo":
            return None
        import importlib.util

        self._remove()
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_register(module):
            module.__spec__.loader = module.__loader__ = loader  # the real one, from now on
            exec_module(module)
            _register()

        # the spec's own loader, with exec_module wrapped for this one import
        spec.loader = _Wrapped(loader, exec_then_register)
        return spec

    def _remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


class _Wrapped:
    def __init__(self, loader, exec_module):
        self._loader, self.exec_module = loader, exec_module

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def __getattr__(self, name):  # get_data, is_package, ... of the real loader
        return getattr(self._loader, name)


if "pettingzoo" in sys.modules:
    _register()
elif not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnImport())


def __getattr__(name: str):
    # Public names of the original API, imported lazily so `import karmic` stays light.
    if name == "KarmicMatchmaker":
        from karmic.matchmaker import KarmicMatchmaker

        return KarmicMatchmaker
    if name == "KarmicAgent":
        from karmic.agents import KarmicAgent

        return KarmicAgent
    raise AttributeError(name)
