"""Trained policies for acting outside training (``karmic simulate --policy PATH``).

``load_policy(path_or_checkpoint, seed=0, greedy=False) -> CheckpointPolicy``. The path is a
checkpoint file (``ckpt-*.pt``) or a run's checkpoint directory (the newest file is used).
``CheckpointPolicy`` keeps the LSTM state of every (env, agent) slot:

- ``reset(num_envs, n_agents)``: zero the state (call at every episode start);
- ``act(obs) -> actions``: ``obs (B, N, V, V, C)`` uint8 -> ``(B, N)`` int64, sampled from the
  policy with a generator seeded by ``seed`` (or the arg-max if ``greedy``);
- ``__call__(obs)`` = ``act(obs)``.

File reading is delegated to ``torch.load`` on the given path; the rest is pure computation.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from karmic.agents.network import KarmicAgent


class CheckpointPolicy:
    def __init__(self, agent: KarmicAgent, seed: int = 0, greedy: bool = False) -> None:
        self.agent = agent.eval()
        self.greedy = greedy
        self.gen = torch.Generator().manual_seed(int(seed))
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.starts: torch.Tensor | None = None
        self.shape: tuple[int, int] | None = None

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return self.agent.obs_shape

    def reset(self, num_envs: int, n_agents: int) -> None:
        self.shape = (int(num_envs), int(n_agents))
        s = num_envs * n_agents
        self.state = self.agent.initial_state(s)
        self.starts = torch.ones(1, s, dtype=torch.bool)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.ndim == 4:  # a single env (N, V, V, C)
            return self.act(obs[None])[0]
        B, N = obs.shape[:2]
        if tuple(obs.shape[2:]) != tuple(self.agent.obs_shape):
            raise ValueError(
                f"policy expects observations {tuple(self.agent.obs_shape)}, got {tuple(obs.shape[2:])}"
            )
        if self.shape != (B, N):
            self.reset(B, N)
        ids = torch.arange(B * N) % N if self.agent.n_agents else None
        if self.agent.n_agents and N != self.agent.n_agents:
            raise ValueError(f"policy was trained with {self.agent.n_agents} agents, env has {N}")
        x = torch.from_numpy(np.ascontiguousarray(obs).reshape(1, B * N, *obs.shape[2:]))
        logits, _, self.state, _ = self.agent(x, self.state, self.starts, ids)
        self.starts = torch.zeros_like(self.starts)
        if self.greedy:
            a = logits[0].argmax(-1)
        else:
            a = torch.multinomial(torch.softmax(logits[0], -1), 1, generator=self.gen)[:, 0]
        return a.numpy().reshape(B, N).astype(np.int64)

    __call__ = act


def agent_from_checkpoint(ck: dict[str, Any]) -> KarmicAgent:
    """The network of a checkpoint or kept policy, in fp32 (a kept policy's fp16 weights widened).

    Built on the meta device and given the file's tensors, so the random initialisation the
    weights replace (orthogonal: a QR per layer, most of a load's time) is never computed; the
    weights are the same bits as ``load_state_dict`` into a built network would give."""
    cfg = dict(ck["agent_config"])
    cfg["obs_shape"] = tuple(cfg["obs_shape"])
    with torch.device("meta"):
        agent = KarmicAgent(**cfg)
    agent.load_state_dict(ck["model"], assign=True)
    agent = agent.float()
    if any(t.is_meta for t in (*agent.parameters(), *agent.buffers())):  # something not in the file
        agent = KarmicAgent(**cfg)
        agent.load_state_dict(ck["model"])
    return agent


def load_policy(path, seed: int = 0, greedy: bool = False) -> CheckpointPolicy:
    """A policy from a checkpoint file or a run's checkpoint directory.

    ``path``: a str / Path, or any object with pathlib's ``is_dir``, ``glob``, ``is_file`` and
    ``read_bytes`` (the object-store paths of ``pipelines.storage``; this module opens nothing else)."""
    p = Path(path) if isinstance(path, str) else path
    if p.is_dir():
        ckpts = sorted(p.glob("ckpt-*.pt"))
        if not ckpts:
            raise FileNotFoundError(f"no checkpoint (ckpt-*.pt) in {p}")
        p = ckpts[-1]
    if not p.is_file():
        raise FileNotFoundError(f"no policy checkpoint at {p}")
    try:
        ck = torch.load(io.BytesIO(p.read_bytes()), map_location="cpu", weights_only=False)
        agent = agent_from_checkpoint(ck)
    except Exception as exc:  # foreign or torn file: one clear line
        raise ValueError(f"{p}: not a karmic policy checkpoint ({type(exc).__name__})") from exc
    # a Q-learner's head holds Q values, not logits: its policy is the arg-max
    return CheckpointPolicy(agent, seed=seed, greedy=greedy or ck.get("algo") == "drqn")
