"""The training configuration: the one source of defaults for ``karmic train``, ``karmic sweep``
and studies (CleanRL's ``Args``: one docstring per field). No torch here, so the CLI can read the
defaults without loading the learner."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from karmic.conditions import get_condition, names

PRECISIONS = ("auto", "fp32", "bf16")



class _Modes(Mapping):
    """mode -> (use_tvt, matchmaker) of every trained condition, read live from the registry
    (``karmic.conditions``), so a condition registered later is a mode too."""

    def __getitem__(self, name: str) -> tuple[bool, bool]:
        try:
            c = get_condition(name, trained=True)
        except ValueError:
            raise KeyError(name) from None
        return c.use_tvt, c.rigged

    def __iter__(self) -> Iterator[str]:
        return iter(names(trained=True))

    def __len__(self) -> int:
        return len(names(trained=True))


MODES: Mapping[str, tuple[bool, bool]] = _Modes()

# fields a condition's record may set (Condition.train), with their value where it sets nothing
CONDITION_FIELDS: dict[str, Any] = {"tvt_threshold": 2.0, "tvt_read_cost": 1.0, "tvt_read_power": 1,
                                    "tvt_read_tolerance": 2.0, "tvt_transport_top_k": 3, "hit_cost": 0.0}


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in run.json and in every checkpoint."""

    mode: str = "baseline"
    """Condition: a trained condition of the registry (``karmic conditions``, karmic.conditions)."""
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
    """TVT transport of tvt / full: learned | semantic | both (other conditions fix their own)."""
    tvt_alpha: float = 0.9
    """Share of the value transported (Hung et al. 2019, Methods)."""
    tvt_threshold: float | None = None
    """Read-strength threshold of the learned transport; None: the condition's (2.0 but tvt-learned)."""
    memory_size: int = 1000
    """TVT memory rows per agent."""
    tvt_recon_cost: float = 1.0
    """Weight of TVT's reconstruction loss."""
    tvt_read_cost: float | None = None
    """Weight of TVT's read-strength cost ``mean(relu(strength - tolerance) ** power)``; None: the
    condition's (1.0 but tvt-learned)."""
    tvt_read_power: int | None = None
    """Power of the read-strength cost; None: the condition's (1; tvt-learned: key-to-door's 2)."""
    tvt_read_tolerance: float | None = None
    """Strength from which reads cost; None: the condition's (2, the threshold; tvt-learned: 1)."""
    tvt_transport_top_k: int | None = None
    """Rows each learned-transport span sends value to; None: the condition's (3; tvt-learned: 1,
    the row read most)."""
    hit_cost: float | None = None
    """Reward taken at every step where the agent's own zap hit another agent; None: the
    condition's (hit-cost: karmic.conditions.HIT_COST; 0 elsewhere, and only hit-cost may set it)."""
    env_overrides: dict[str, Any] = field(default_factory=dict)
    """HarvestConfig fields set over the preset."""
    run_id: str | None = None
    """The run's id; None: a new one (mode, grid, seed and a random suffix)."""

    def __post_init__(self) -> None:
        # the fields a condition may set (karmic.conditions): None takes the condition's value
        try:
            own = get_condition(self.mode).defaults
        except ValueError:
            own = {}  # validate() names the unknown condition
        for name, default in CONDITION_FIELDS.items():
            if getattr(self, name) is None:
                setattr(self, name, own.get(name, default))

    def validate(self) -> None:
        cond = get_condition(self.mode, trained=True)
        bad = sorted(set(cond.defaults) - set(CONDITION_FIELDS))
        if bad:
            raise ValueError(f"condition {self.mode} sets {', '.join(bad)}: a condition may set only"
                             f" {', '.join(CONDITION_FIELDS)}")
        for name in ("total_steps", "num_envs", "num_steps", "seq_len", "update_epochs",
                     "num_minibatches", "hidden", "latent", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_steps % self.seq_len:
            raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of seq_len ({self.seq_len})")
        if self.tvt_mode not in ("learned", "semantic", "both"):
            raise ValueError(f"unknown tvt_mode {self.tvt_mode!r}; choose learned, semantic or both")
        if self.tvt_mode != "both" and cond.transport != "both":
            raise ValueError(f"tvt_mode is a choice of tvt and full; {self.mode} fixes its transport"
                             f" ({cond.transport})")
        if self.hit_cost < 0 or (self.hit_cost and cond.shaping != "hit-cost"):
            raise ValueError(f"hit_cost ({self.hit_cost}) is the hit-cost condition's (>= 0), not {self.mode}'s")
        if cond.shaping == "hit-cost" and not self.hit_cost:
            raise ValueError(f"{self.mode} needs hit_cost > 0")
        if self.tvt_read_power < 1 or self.tvt_transport_top_k < 1:
            raise ValueError("tvt_read_power and tvt_transport_top_k must be >= 1")
        if self.memory_size < 1:
            raise ValueError(f"memory_size must be >= 1, got {self.memory_size}")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError("gamma must be in (0, 1] and gae_lambda in [0, 1]")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {"precision": "fp32", **d}  # runs recorded before precision was a field ran fp32
        return cls(**{k: v for k, v in d.items() if k in names})



__all__ = ["CONDITION_FIELDS", "MODES", "PRECISIONS", "TrainConfig"]
