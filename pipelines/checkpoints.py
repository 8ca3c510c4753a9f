"""Model checkpoints: ``<lake>/checkpoints/run_id=<id>/ckpt-<update:06d>.pt``.

A checkpoint is a ``torch.save`` dict: ``agent_config`` (KarmicAgent kwargs), ``model`` (state
dict), and for training ``optimizer``, ``train_config``, ``update``, ``round``, ``global_step``,
RNG states and ``resumable`` (taken at an episode boundary, where the run can continue exactly).
Written like every lake file: temporary name, fsync, atomic rename. ``keep`` bounds how many are
kept per run (the newest ones).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

TABLE = "checkpoints"


def checkpoint_dir(lake: Path | str, run_id: str) -> Path:
    return Path(lake) / TABLE / f"run_id={run_id}"


def save_checkpoint(
    lake: Path | str, run_id: str, update: int, payload: dict[str, Any], keep: int = 3
) -> Path:
    d = checkpoint_dir(lake, run_id)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt-{update:06d}.pt"
    tmp = d / f".ckpt-{update:06d}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if keep > 0:
        for old in list_checkpoints(lake, run_id)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(lake: Path | str, run_id: str) -> list[Path]:
    d = checkpoint_dir(lake, run_id)
    return sorted(d.glob("ckpt-*.pt")) if d.is_dir() else []


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torn or foreign file: one clear line for the user
        raise ValueError(f"{path}: not a readable karmic checkpoint ({type(exc).__name__})") from exc


def latest_checkpoint(lake: Path | str, run_id: str) -> Path:
    ckpts = list_checkpoints(lake, run_id)
    if not ckpts:
        raise FileNotFoundError(f"run {run_id} has no checkpoint under {checkpoint_dir(lake, run_id)}")
    return ckpts[-1]
