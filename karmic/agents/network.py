"""KarmicAgent: a small CNN over the egocentric window, an LSTM, policy and value heads.

Spec:
- ``KarmicAgent(obs_shape, n_actions=8, use_tvt=False, hidden=256)``; ``obs_shape`` is the
  egocentric window ``(V, V, C)`` (uint8, channels apple / wall / other agent). The network's
  size depends only on ``V``, ``C``, ``hidden`` and ``n_actions``, never on the grid size.
- One network is shared by all agents of a run. ``n_agents > 0`` adds the agent's identity
  (a one-hot) to the LSTM input; ``n_agents = 0`` (default) leaves it out.
- ``forward(obs, state, starts, agent_ids=None) -> (logits, value, new_state, z)`` over a
  sequence: ``obs (T, B, V, V, C)``, ``starts (T, B)`` bool marks the first step of an episode
  (the LSTM state is zeroed before that step), ``state = (h, c)`` each ``(1, B, hidden)``.
  ``z (T, B, latent)`` is the LSTM input (the encoded observation, identity excluded): the
  latent that TVT stores in its memory.
- When no episode starts inside the sequence (``starts[1:]`` all false, the common case, since
  sequences are aligned with episodes), the whole sequence goes through one fused ``nn.LSTM``
  call; otherwise it runs step by step with the state masked at each start.
- ``use_tvt=True`` builds ``self.tvt = karmic.tvt.make_tvt_module(agent)`` (a
  :class:`karmic.tvt.memory.TVTMemory`): the policy and value heads then read
  ``[h_t, memory reads_t]``. ``forward(..., memory=(rows, valid))`` passes the memory
  (``rows (B, R, word)``, ``valid (T, B, R)``); without it the reads are empty (zeros). The last
  read (weights, strengths) is kept in ``agent.last_read`` for the transport.
- Mixed precision: under ``torch.autocast(<the inputs' device type>, dtype=torch.bfloat16)``
  the encoder and the LSTM run in bf16; the returned logits, values, state and ``z``, and the memory reads, are fp32.

Domain code: no file I/O.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from karmic.envs.kernels import N_ACTIONS


def _init(layer: nn.Module, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def _conv_out(v: int) -> int:
    v = (v - 3) // 2 + 1  # 3x3, stride 2 (first, so the big activations stay small)
    return v - 2  # 3x3, stride 1


class KarmicAgent(nn.Module):
    """Recurrent actor-critic shared by the agents of a run (see the module docstring)."""

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        n_actions: int = N_ACTIONS,
        use_tvt: bool = False,
        hidden: int = 256,
        latent: int = 64,
        n_agents: int = 0,
        memory_size: int = 1000,
    ) -> None:
        super().__init__()
        v, v2, c = (int(s) for s in obs_shape)
        if v != v2 or v < 5:
            raise ValueError(f"obs_shape must be (V, V, C) with V >= 5, got {tuple(obs_shape)}")
        self.obs_shape = (v, v, c)
        self.n_actions = int(n_actions)
        self.hidden = int(hidden)
        self.latent = int(latent)
        self.n_agents = int(n_agents)
        self.use_tvt = bool(use_tvt)
        self.memory_size = int(memory_size)
        s = _conv_out(v)
        self.encoder = nn.Sequential(
            _init(nn.Conv2d(c, 16, 3, stride=2)),
            nn.ReLU(),
            _init(nn.Conv2d(16, 32, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
            _init(nn.Linear(32 * s * s, self.latent)),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(self.latent + self.n_agents, self.hidden)
        for name, p in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(p, 0)
            elif "weight" in name:
                nn.init.orthogonal_(p, 1.0)
        if self.use_tvt:
            from karmic.tvt import make_tvt_module

            self.tvt = make_tvt_module(self)
        else:
            self.tvt = None
        self.last_read = None
        head_in = self.hidden + (self.tvt.read_dim if self.tvt is not None else 0)
        self.actor = _init(nn.Linear(head_in, self.n_actions), std=0.01)
        self.critic = _init(nn.Linear(head_in, 1), std=1.0)

    # -- helpers -----------------------------------------------------------------------------
    def config(self) -> dict:
        """Constructor arguments, stored with checkpoints so load_policy can rebuild the net."""
        return {
            "obs_shape": list(self.obs_shape),
            "n_actions": self.n_actions,
            "use_tvt": self.use_tvt,
            "hidden": self.hidden,
            "latent": self.latent,
            "n_agents": self.n_agents,
            "memory_size": self.memory_size,
        }

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(1, batch, self.hidden, device=self.actor.weight.device)
        return z, z.clone()

    def prepare_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (..., V, V, C) uint8 -> what ``encode`` / ``forward`` take as a ready input.

        Under bf16 autocast: the encoder's input, bf16 ``(..., C, V, V)``, so a learner converts a
        shard's observations once per update and each minibatch only gathers its rows (1.4 ms once
        against 0.7 ms per minibatch, 16 minibatches). In fp32 the uint8 observations are returned
        as they are (``encode`` converts them on the fly, as before)."""
        if not torch.is_autocast_enabled(obs.device.type):
            return obs
        v, _, c = self.obs_shape
        return self._encoder_input(obs.reshape(-1, *self.obs_shape)).reshape(*obs.shape[:-3], c, v, v)

    def _encoder_input(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, V, V, C) uint8 -> (N, C, V, V) in the encoder's dtype."""
        x = obs.permute(0, 3, 1, 2)
        if torch.is_autocast_enabled(obs.device.type):
            # straight to bf16 (exact for uint8) in plain NCHW: oneDNN's bf16 convolutions and
            # their backward run about 1.3x faster on it than on the channels-last view of the
            # (V, V, C) observations. Only the order of the weight gradients' sums can differ
            # (measured: baseline runs identical, tvt parameters within 1e-5 relative after a
            # few updates). fp32 keeps the view, so its golden runs are untouched.
            return x.contiguous().to(torch.bfloat16)
        return x.float()

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (..., V, V, C) uint8, or ``prepare_obs``'s (..., C, V, V) -> z (..., latent)."""
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:])
        if obs.dtype == torch.uint8:
            x = self._encoder_input(x)
        return self.encoder(x).reshape(*lead, self.latent)

    def forward(
        self,
        obs: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        starts: torch.Tensor,
        agent_ids: torch.Tensor | None = None,
        memory: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        z = self.encode(obs)  # (T, B, latent)
        x = z
        if self.n_agents:
            if agent_ids is None:
                raise ValueError("this agent takes its identity as input: pass agent_ids (B,)")
            one_hot = nn.functional.one_hot(agent_ids.long(), self.n_agents).to(z.dtype)
            x = torch.cat([z, one_hot.expand(z.shape[0], -1, -1)], dim=-1)
        h, c = state
        keep0 = (~starts[0]).to(h.dtype).view(1, -1, 1)
        h, c = h * keep0, c * keep0
        amp = torch.is_autocast_enabled(x.device.type)
        if x.shape[0] == 1:  # acting: one step, cheaper as two matmuls than the fused layer
            h1, c1 = self._lstm_step(x[0], h[0], c[0])
            out, h, c = h1[None], h1[None], c1[None]
        elif not bool(starts[1:].any()):
            out, (h, c) = self.lstm(x, (h, c))
        else:
            outs = []
            for t in range(x.shape[0]):
                keep = (~starts[t]).to(h.dtype).view(1, -1, 1)
                o, (h, c) = self.lstm(x[t : t + 1], (h * keep, c * keep))
                outs.append(o)
            out = torch.cat(outs, 0)
        if not amp:
            logits, value = self._heads(out, memory)
            return logits, value, (h, c), z
        # mixed precision: the encoder and the LSTM ran in bf16; the recurrent state, z, the
        # memory reads (read strengths are compared with the transport threshold) and the heads
        # (logits and values feed the losses and the value targets) stay fp32
        out, h, c = out.float(), h.float(), c.float()
        with torch.autocast(out.device.type, enabled=False):
            logits, value = self._heads(out, memory)
        return logits, value, (h, c), z.float()

    def _heads(self, out: torch.Tensor, memory):
        if self.tvt is not None:
            if memory is None:  # no memory given: nothing to read
                memory = (out.new_zeros(out.shape[1], 0, self.tvt.word),
                          torch.zeros(out.shape[0], out.shape[1], 0, dtype=torch.bool, device=out.device))
            self.last_read = self.tvt.read(out, *memory)
            out = torch.cat([out, self.last_read.vec], -1)
        return self.actor(out), self.critic(out).squeeze(-1)

    def _lstm_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        lstm = self.lstm
        if torch.is_autocast_enabled(x.device.type):
            # bf16 matmuls, fp32 gates and cell state (an in-place addmm_ cannot mix the two).
            # linear, not mm(x, w.t()): autocast casts the weight itself, a leaf, which it can
            # cache across the steps of a rollout (Trainer.acting_scope); a transposed view it
            # would cast anew, and slowly, at every step.
            linear = nn.functional.linear
            gates = (linear(x, lstm.weight_ih_l0).float() + linear(h, lstm.weight_hh_l0).float()
                     + (lstm.bias_ih_l0 + lstm.bias_hh_l0))
        else:
            gates = torch.addmm(lstm.bias_ih_l0 + lstm.bias_hh_l0, x, lstm.weight_ih_l0.t())
            gates = gates.addmm_(h, lstm.weight_hh_l0.t()) if not torch.is_grad_enabled() else (
                gates + h @ lstm.weight_hh_l0.t()
            )
        # PyTorch's gate order i, f, g, o. One sigmoid over all four blocks (the g block's is not
        # used) and tanh on a contiguous copy of g: fewer, faster calls than one per chunk view
        # (torch's fp32 tanh takes 80 us on a strided 80 x 256 view, 40-55 us contiguous). Both
        # are elementwise: with hidden a multiple of the vector width (16 floats) the bits are
        # those of the per-chunk calls (tested); otherwise a row's tail may round differently.
        n = self.hidden
        act = torch.sigmoid(gates)
        g = torch.tanh(gates[:, 2 * n : 3 * n].contiguous())
        c = act[:, n : 2 * n] * c + act[:, :n] * g
        return act[:, 3 * n :] * torch.tanh(c), c

    def flops_per_step(self) -> int:
        """Multiply-adds x 2 of one forward step for one agent (conv, linear, LSTM, heads)."""
        v, _, c = self.obs_shape
        s1 = (v - 3) // 2 + 1
        s2 = _conv_out(v)
        macs = s1 * s1 * 16 * c * 9 + s2 * s2 * 32 * 16 * 9 + 32 * s2 * s2 * self.latent
        macs += 4 * self.hidden * (self.latent + self.n_agents + self.hidden)
        head_in = self.hidden + (self.tvt.read_dim if self.tvt is not None else 0)
        macs += head_in * (self.n_actions + 1)
        return 2 * macs
