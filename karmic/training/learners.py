"""One place that maps a run's ``algo`` to its config class and trainer (``ppo`` | ``drqn``).

``config_from_dict(d)`` rebuilds the right config from run.json's or a checkpoint's
``train_config`` (runs written before ``algo`` existed are ``ppo``); ``make_trainer(cfg, lake)``
builds a fresh trainer; ``resumed_trainer(run_id, lake)`` continues a run from its last
checkpoint with the learner that wrote it. Imports torch only when called.
"""

from __future__ import annotations

from typing import Any

ALGOS = ("ppo", "drqn")


def config_class(algo: str):
    if algo == "ppo":
        from karmic.training.ppo import TrainConfig

        return TrainConfig
    if algo == "drqn":
        from karmic.training.drqn import DRQNConfig

        return DRQNConfig
    raise ValueError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")


def config_from_dict(d: dict[str, Any]):
    return config_class(d.get("algo") or "ppo").from_dict(d)


def make_config(algo: str = "ppo", **kw):
    """A config of ``algo`` from keyword fields; fields the learner does not have are dropped."""
    return config_from_dict({**kw, "algo": algo})


def trainer_class(algo: str):
    if algo == "drqn":
        from karmic.training.drqn import DRQNTrainer

        return DRQNTrainer
    config_class(algo)  # rejects unknown names
    from karmic.training.ppo import Trainer

    return Trainer


def make_trainer(cfg, lake, **kw):
    return trainer_class(getattr(cfg, "algo", "ppo"))(cfg, lake, **kw)


def resumed_trainer(run_id, lake, on_update=None, total_steps=None, tensorboard=False, env=None,
                    device=None):
    """``device``: None keeps the device the run recorded; another GPU of the same type may be
    named (a sweep's slot), never another type (``karmic.training.device.check_resume``)."""
    from karmic.training.device import check_resume
    from pipelines.checkpoints import latest_checkpoint, load_checkpoint

    ck = load_checkpoint(latest_checkpoint(lake, run_id))
    cfg = config_from_dict(ck["train_config"])
    if total_steps is not None:
        cfg.total_steps = total_steps
    cfg.device = check_resume(cfg.device, device)
    return make_trainer(cfg, lake, on_update=on_update, tensorboard=tensorboard, resume_from=ck, env=env)
