"""The training configuration: the one source of defaults for ``karmic train``, ``karmic sweep``
and studies (CleanRL's ``Args``: one docstring per field). No torch here, so the CLI can read the
defaults without loading the learner."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")

MODES: dict[str, tuple[bool, bool]] = {  # mode -> (use_tvt, matchmaker)
    "baseline": (False, False),
    "tvt": (True, False),
    "matchmaker": (False, True),
    "full": (True, True),
    # the TVT agent (memory, reads, reconstruction loss) with no value transport: Hung et al.'s
    # RMA, the control that tells an effect of transport from an effect of having a memory
    "memory": (True, False),
}
TRANSPORT_MODES = ("tvt", "full")
TVT_SELECTS = ("learner", "rollout")
TVT_LEARNS = ("replay", "lagged")


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in run.json and in every checkpoint."""

    mode: str = "baseline"
    """Condition: baseline | tvt | matchmaker | full | memory (MODES)."""
    algo: str = "ppo"
    """Learner: ppo | drqn (karmic.training.learners)."""
    grid_size: int = 10
    """Side of the square Harvest grid."""
    seed: int = 1
    """Seed of torch, the env resets and the minibatch order."""
    total_steps: int = 200_000
    """Env steps (B envs x steps), rounded up to whole rounds."""
    num_envs: int = 16
    """Parallel environments B."""
    num_steps: int = 100
    """Rollout length per update."""
    seq_len: int = 25
    """Recurrent sequence length for the update (divides num_steps)."""
    lr: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO's clip of the probability ratio (and of the value change, with clip_vloss)."""
    update_epochs: int = 4
    """Epochs over each rollout."""
    num_minibatches: int = 4
    """Minibatches of sequences per epoch."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    clip_vloss: bool = True
    """Clip the value loss as CleanRL's PPO does."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    hidden: int = 256
    """LSTM size."""
    latent: int = 64
    """Encoder output size (TVT's word and reconstruction use it)."""
    agent_id: bool = False
    """Identity one-hot as network input."""
    keep_shards: int = 4
    """Trajectory shards kept in the lake for replay (TVT keeps enough for its memory)."""
    keep_trajectories: bool = False
    """Keep every shard (for analysis); otherwise older shards are pruned."""
    checkpoint_every: int = 10
    """Updates between checkpoints (taken at the next round boundary)."""
    keep_checkpoints: int = 3
    """Checkpoints kept per run."""
    threads: int = 0
    """Torch threads; 0 = all cores."""
    precision: str = "auto"
    """fp32 | bf16 (autocast for the network) | auto (bf16 where it measures faster:
    ``karmic.training.ppo.choose_precision``); a run records fp32 or bf16."""
    preset: str | None = None
    """HarvestConfig preset (karmic.envs.PRESETS), or None for the defaults."""
    tvt_mode: str = "both"
    """TVT transport (tvt / full): learned | semantic | both."""
    tvt_alpha: float = 0.9
    """Share of the value transported (Hung et al. 2019, Methods)."""
    tvt_threshold: float = 2.0
    """Read-strength threshold of the learned transport."""
    memory_size: int = 1000
    """TVT memory rows per agent."""
    tvt_recon_cost: float = 1.0
    """Weight of TVT's reconstruction loss."""
    tvt_read_cost: float = 1.0
    """Weight of TVT's read-strength cost."""
    tvt_select: str = "learner"
    """Which memory rows the learner's reads attend to (docs/tvt-speed.md): ``learner`` (the
    method of old): every minibatch selects each step's top-k rows with its current keys;
    ``rollout``: the rows the acting read selected, stored in the shard, so the learner reads
    only those k rows (no selection over the whole bank). TVT_SELECTS."""
    tvt_learn: str = "replay"
    """How transported value reaches earlier shards (tvt / full; docs/tvt-speed.md): ``replay``
    (the method of old): each shard is learned when new, then one clipped policy-gradient pass
    over every earlier shard that received value; ``lagged``: each shard is learned once,
    ``tvt_lag`` updates late, with the value transported into it by then, off-policy (PPO's
    clipped ratio against the policy at the start of its learning, times the truncated
    importance weight of that policy over the behaviour policy that acted). TVT_LEARNS."""
    tvt_lag: int | None = None
    """``tvt_learn = lagged``: updates between a shard's rollout and its learning. None: the
    memory's span in shards (ceil(memory_size / num_steps)), after which no transport can reach
    it; less learns sooner and loses the value transported later (the run reports its share)."""
    env_overrides: dict[str, Any] = field(default_factory=dict)
    """HarvestConfig fields set over the preset."""
    run_id: str | None = None
    """The run's id; None: a new one (mode, grid, seed and a random suffix)."""

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}, all")
        for name in ("total_steps", "num_envs", "num_steps", "seq_len", "update_epochs",
                     "num_minibatches", "hidden", "latent", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_steps % self.seq_len:
            raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of seq_len ({self.seq_len})")
        if self.tvt_mode not in ("learned", "semantic", "both"):
            raise ValueError(f"unknown tvt_mode {self.tvt_mode!r}; choose learned, semantic or both")
        if self.memory_size < 1:
            raise ValueError(f"memory_size must be >= 1, got {self.memory_size}")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError("gamma must be in (0, 1] and gae_lambda in [0, 1]")
        if self.tvt_select not in TVT_SELECTS:
            raise ValueError(f"unknown tvt_select {self.tvt_select!r}; choose {', '.join(TVT_SELECTS)}")
        if self.tvt_learn not in TVT_LEARNS:
            raise ValueError(f"unknown tvt_learn {self.tvt_learn!r}; choose {', '.join(TVT_LEARNS)}")
        if self.tvt_lag is not None and self.tvt_lag < 0:
            raise ValueError(f"tvt_lag must be >= 0, got {self.tvt_lag}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {"precision": "fp32", **d}  # runs recorded before precision was a field ran fp32
        return cls(**{k: v for k, v in d.items() if k in names})



__all__ = ["MODES", "PRECISIONS", "TRANSPORT_MODES", "TVT_LEARNS", "TVT_SELECTS", "TrainConfig"]
