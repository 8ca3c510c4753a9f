"""Harvest environments: ``harvest_v0`` (PettingZoo) over the batched core ``HarvestVecEnv``."""

from karmic.envs.config import PRESETS, HarvestConfig, make_config

__all__ = ["HarvestConfig", "PRESETS", "make_config", "HarvestVecEnv"]


def __getattr__(name: str):
    # the core imports numba; keep `import karmic.envs` light until it is needed
    if name == "HarvestVecEnv":
        from karmic.envs.core import HarvestVecEnv

        return HarvestVecEnv
    if name == "harvest_v0":
        import importlib

        return importlib.import_module("karmic.envs.harvest_v0")
    raise AttributeError(name)
