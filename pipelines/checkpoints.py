"""Model checkpoints: ``<lake>/checkpoints/run_id=<id>/ckpt-<update:06d>.pt``.

A checkpoint is a ``torch.save`` dict: ``agent_config`` (KarmicAgent kwargs), ``model`` (state
dict), and for training ``optimizer``, ``train_config``, ``update``, ``round``, ``global_step``,
RNG states and ``resumable`` (taken at an episode boundary, where the run can continue exactly).
Written like every lake file (``pipelines.storage``): temporary name, fsync, atomic rename, or
one PUT on an ``s3://`` lake. ``keep`` bounds how many are kept per run (the newest ones).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pipelines import storage
from pipelines.storage import LakePath

TABLE = "checkpoints"


def checkpoint_dir(lake: Path | str, run_id: str) -> LakePath:
    return storage.resolve(lake) / TABLE / f"run_id={run_id}"


def save_checkpoint(
    lake: Path | str, run_id: str, update: int, payload: dict[str, Any], keep: int = 3
) -> LakePath:
    path = checkpoint_dir(lake, run_id) / f"ckpt-{update:06d}.pt"
    storage.write_atomic(path, lambda f: torch.save(payload, f))
    if keep > 0:
        for old in list_checkpoints(lake, run_id)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(lake: Path | str, run_id: str) -> list[LakePath]:
    d = checkpoint_dir(lake, run_id)
    return sorted(d.glob("ckpt-*.pt")) if storage.is_remote(d) or d.is_dir() else []


def load_checkpoint(path: LakePath | str) -> dict[str, Any]:
    path = storage.resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        src = io.BytesIO(path.read_bytes()) if storage.is_remote(path) else path
        return torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:  # torn or foreign file: one clear line for the user
        raise ValueError(f"{path}: not a readable karmic checkpoint ({type(exc).__name__})") from exc


def latest_checkpoint(lake: Path | str, run_id: str) -> LakePath:
    ckpts = list_checkpoints(lake, run_id)
    if not ckpts:
        raise FileNotFoundError(f"run {run_id} has no checkpoint under {checkpoint_dir(lake, run_id)}")
    return ckpts[-1]


# --- kept policies: weights only, fp16 -----------------------------------------------------------
# ``<lake>/policies/run_id=<id>/<name>.pt``: what acting needs and nothing else (no optimizer, no
# generators, no replay state), the float tensors in fp16: ~0.7 MB for the default network
# (hidden 256) against ~4 MB for a checkpoint. A study keeps ``final`` and ``late_start`` (the
# policy at the start of its late window) of every trained run; ``karmic study report`` copies
# them to ``results/<study>/policies/`` and ``karmic evaluate`` / ``karmic simulate --policy``
# load them like checkpoints (``karmic.agents.policy.load_policy``).
POLICY_TABLE = "policies"
POLICY_FORMAT = "karmic-policy-1"


def compact_policy(ck: dict[str, Any], name: str = "final") -> dict[str, Any]:
    """The weights-only form of a checkpoint payload (``Trainer.checkpoint_payload()`` or a file)."""
    tc = ck.get("train_config") or {}
    model = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).clone()
             for k, v in ck["model"].items()}
    return {
        "format": POLICY_FORMAT, "name": name, "run_id": ck.get("run_id"),
        "agent_config": ck["agent_config"], "model": model,
        "algo": ck.get("algo") or tc.get("algo") or "ppo", "condition": tc.get("mode"),
        "update": ck.get("update"), "global_step": ck.get("global_step"),
        # the environment the policy was trained in: karmic evaluate rebuilds it from these
        "train_config": {k: tc.get(k) for k in ("mode", "algo", "grid_size", "preset", "env_overrides",
                                                "seed", "total_steps", "agent_id") if k in tc},
    }


def policy_dir(lake: Path | str, run_id: str) -> LakePath:
    return storage.resolve(lake) / POLICY_TABLE / f"run_id={run_id}"


def save_policy(lake: Path | str, run_id: str, name: str, ck: dict[str, Any]) -> LakePath:
    """Write ``name``.pt (atomically; a later save of the same name replaces it whole)."""
    path = policy_dir(lake, run_id) / f"{name}.pt"
    payload = compact_policy(ck, name)
    storage.write_atomic(path, lambda f: torch.save(payload, f))
    return path


def list_policies(lake: Path | str, run_id: str) -> list[LakePath]:
    d = policy_dir(lake, run_id)
    return sorted(d.glob("*.pt")) if storage.is_remote(d) or d.is_dir() else []
