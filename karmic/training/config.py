"""The training configuration: the one source of defaults for ``karmic train``, ``karmic sweep``
and studies (CleanRL's ``Args``: one docstring per field). No torch here, so the CLI can read the
defaults without loading the learner."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from karmic.conditions import get_condition, names
from karmic.training.device import check_name

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
TVT_SELECTS = ("learner", "rollout")
TVT_LEARNS = ("replay", "lagged")

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
    precision: str = "fp32"
    """fp32 | bf16 (autocast for the network; an opt-in) | auto (measure once: bf16 where its
    matmuls are >= 1.25x fp32's; on CUDA fp32). The default is fp32 so two runs of one command
    train alike on any machine; a run records the precision it used and why (run.json), a resume
    keeps it."""
    device: str = "cpu"
    """Where the network acts and learns: cpu | cuda | cuda:N | auto (cuda where torch sees a GPU;
    ``karmic.training.device``). The env steps on the CPU whatever this says. A run records the
    device it resolved to; the CLI's default is auto, this class's cpu (library calls and tests
    stay on the CPU)."""
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
    tvt_read_refresh: int = 1
    """The acting read's selection over the memory ring (docs/tvt-speed.md): 1 (the method of
    old): every step scores every row of the ring and reads its top-k; K > 1: only the steps whose
    stream time is a multiple of K do; a step in between scores only the rows selected at the
    last such step plus the rows written since, and reads the top-k of those (softmax weights
    from its current keys, as always). Needs ``tvt_select = rollout`` (the learner then reads the
    rows the rollout chose); PPO only."""
    tvt_yoke_run: str | None = None
    """A yoked condition's partner run (same lake): its logged semantic transports are this run's,
    update by update, on the same streams and steps (docs/conditions.md). It must have finished,
    be of the condition the yoked one names, and share this run's env, envs, agents, rollout
    length, memory size and at least its updates. Only yoked conditions take it."""
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
        if self.tvt_select not in TVT_SELECTS:
            raise ValueError(f"unknown tvt_select {self.tvt_select!r}; choose {', '.join(TVT_SELECTS)}")
        if self.tvt_learn not in TVT_LEARNS:
            raise ValueError(f"unknown tvt_learn {self.tvt_learn!r}; choose {', '.join(TVT_LEARNS)}")
        if self.tvt_lag is not None and self.tvt_lag < 0:
            raise ValueError(f"tvt_lag must be >= 0, got {self.tvt_lag}")
        if self.tvt_read_refresh < 1:
            raise ValueError(f"tvt_read_refresh must be >= 1, got {self.tvt_read_refresh}")
        if self.tvt_read_refresh > 1 and self.tvt_select != "rollout":
            # the learner's own selection would not be the rows the behaviour policy read
            raise ValueError(f"tvt_read_refresh > 1 needs tvt_select = rollout, got {self.tvt_select!r}")
        if (cond.yoke is not None) != (self.tvt_yoke_run is not None):
            raise ValueError(f"{self.mode} needs tvt_yoke_run (the {cond.yoke} run it is yoked to)" if cond.yoke
                             else f"tvt_yoke_run is for yoked conditions, not {self.mode}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}")
        check_name(self.device)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {"precision": "fp32", **d}  # runs recorded before precision was a field ran fp32
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class DRQNConfig(TrainConfig):
    """TrainConfig plus the DRQN learner's fields; stored in run.json and checkpoints like PPO's."""

    algo: str = "drqn"
    """Learner name (dispatch in karmic.training.learners)."""
    lr: float = 1e-4
    """Adam learning rate (R2D2, Kapturowski et al. 2019, Table 2)."""
    adam_eps: float = 1e-3
    """Adam epsilon (R2D2, Table 2)."""
    max_grad_norm: float = 40.0
    """Global gradient-norm clip (the R2D2 configs of JORLDY; rlpyt's r2d1 uses 80)."""
    n_step: int = 5
    """Steps of reward before the bootstrap (R2D2, Table 2)."""
    burn_in: int = 10
    """Steps at a window's start that only warm the LSTM state (R2D2: 40 of an 80-step trace;
    here 10 before a 25-step trained part, the same 1:2 ratio)."""
    batch_size: int = 32
    """Windows per gradient step (R2D2 uses 64; halved for a 2-core CPU)."""
    grad_steps: int = 8
    """Gradient steps per rollout: 8 x 32 windows x 25 trained steps = 6,400 trained steps per
    8,000 new agent-steps at the default 16 envs x 5 agents x 100 steps (replay ratio ~0.8, R2D2's)."""
    target_period: int = 100
    """Gradient steps between target-network copies (R2D2: 2,500 of ~10^6 learner steps; scaled
    to a default run's ~1,000 gradient steps, ten copies)."""
    replay_shards: int = 8
    """Trajectory shards sampled from (the last K up to the current update): 64,000 agent-steps
    at the defaults."""
    huber_delta: float = 1.0
    """Huber loss threshold (DQN, Mnih et al. 2015: error clipping at 1)."""
    eps_start: float = 1.0
    """Initial epsilon of epsilon-greedy acting (CleanRL dqn_atari)."""
    eps_end: float = 0.01
    """Final epsilon (CleanRL dqn_atari)."""
    eps_fraction: float = 0.1
    """Fraction of the run's env steps over which epsilon decays linearly (CleanRL dqn_atari)."""
    mask_after_done: bool = True
    """Leave trained steps after an episode end inside a window out of the loss (R2D2; rlpyt's
    valid_from_done). The LSTM state is also reset there, so off is sound too."""
    gae_lambda: float = 0.0
    """Only for TVT's semantic matching: 0 makes it match on the one-step TD error of max Q."""

    def validate(self) -> None:
        super().validate()
        if self.algo != "drqn":
            raise ValueError(f"DRQNConfig.algo must be 'drqn', got {self.algo!r}")
        if self.tvt_read_refresh != 1:  # DRQN acts through its own reads, not TVTRun's ring
            raise ValueError(f"tvt_read_refresh is PPO's (1 for drqn), got {self.tvt_read_refresh}")
        for name in ("n_step", "batch_size", "grad_steps", "target_period", "replay_shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.burn_in < 0 or self.burn_in + self.n_step > self.seq_len:
            raise ValueError(f"burn_in + n_step ({self.burn_in} + {self.n_step}) must be <= seq_len ({self.seq_len})")
        if not 0 <= self.eps_end <= 1 or not 0 <= self.eps_start <= 1 or not 0 < self.eps_fraction <= 1:
            raise ValueError("eps_start, eps_end must be in [0, 1] and eps_fraction in (0, 1]")




def field_docs(cls) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal under it, CleanRL/tyro style), read
    from the source of ``cls`` and its bases; the CLI's help for the generated flags."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


__all__ = ["CONDITION_FIELDS", "MODES", "PRECISIONS", "TVT_LEARNS", "TVT_SELECTS", "DRQNConfig", "TrainConfig",
           "field_docs"]
