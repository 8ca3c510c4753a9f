"""Karmic-RL: the Harvest social dilemma, event-sourced, with TVT and a conspiring matchmaker.

Importing ``karmic`` registers the environment id ``KarmicHarvest-v0`` with PettingZoo. It does
not import torch.
"""

from __future__ import annotations

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


_register()


def __getattr__(name: str):
    # Public names of the original API, imported lazily so `import karmic` stays light.
    if name == "KarmicMatchmaker":
        from karmic.matchmaker import KarmicMatchmaker

        return KarmicMatchmaker
    if name == "KarmicAgent":
        from karmic.agents import KarmicAgent

        return KarmicAgent
    raise AttributeError(name)
