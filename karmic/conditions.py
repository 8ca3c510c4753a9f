"""The conditions of a study, as declared records: the one place a condition is defined.

Every part of Karmic-RL that needs to know what a condition *is* reads it here: the trainer and
DRQN (which agent, which spawns, which transport, which reward shaping), ``karmic train`` /
``karmic sweep`` / studies (the names they accept), the figures (one colour, line style and
marker per condition) and SQL (``karmic.lake.connect`` registers :func:`table_rows` as the
table ``conditions`` that queries join for their order). Melting Pot's
``configs/substrates/__init__.py`` has the same shape: a registry plus a ``get_config(name)``
that validates.

Adding a condition (docs/conditions.md): one :class:`Condition` in ``_RECORDS`` (or
:func:`register` at run time), plus, if it needs one, its transport rule
(``karmic.tvt.harvest.transport_rewards``) or shaping (``karmic.rl.shaped_rewards``), plus a
golden digest (``tests/golden.py``). Nothing else lists conditions.

Pure data: no torch, no lake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AGENTS = ("plain", "memory", "tvt", "scripted")
"""plain: CNN + LSTM; memory: plus the TVT memory (reads, reconstruction and read losses) and no
value transport (Hung et al.'s RMA); tvt: the memory plus value transport and its replay passes;
scripted: a hand-written policy (``karmic.policies``), simulated, not trained."""
SPAWNS = ("random", "rigged")
"""random: the env's own spawns; rigged: the conspiring matchmaker pairs debtor and creditor."""
TRANSPORTS = ("none", "learned", "semantic", "both", "sham", "yoked")
"""none; learned: read-strength spans (Hung et al.); semantic: role matching from the event tags;
both; sham: the learned transport as in ``both``, and each semantic transport's amount moved to a
random earlier step of the same stream (same count, total and lag distribution); yoked: the
learned transport as in ``both``, and in place of its own semantic transports, those a partner
run (``Condition.yoke``) logged for the same update, replayed onto the same streams and steps
(the partner's dose, delivered where nothing this run did chose it)."""
SHAPINGS = ("none", "hit-cost")
"""none; hit-cost: ``hit_cost`` taken from the reward of every step at which the agent's own zap
hit another agent (``karmic.rl.shaped_rewards``)."""

# The cost per landed hit that matches what semantic matching charged a tvt agent per hit it
# landed: sum |semantic transport amount| / ZAP_HIT events over the ablation's 10 tvt runs
# (results/ablation/metrics.parquet: 4,097.1 / 36,409 = 0.1125; 10x10 alone 0.085, 30x30 0.195).
# docs/conditions.md gives the query.
HIT_COST = 0.11

# tvt-learned: key-to-door's read cost (0.001 * relu(strength - 1)^2) and top-row transport, and a
# threshold Harvest's strengths reach: they start at softplus(0) = 0.69 and in a 24,000-step
# 10x10 run never passed 0.81 (none reached 2, so the default threshold moved nothing);
# docs/conditions.md has the runs and the firing rates.
TVT_LEARNED_SETTINGS = (("tvt_threshold", 0.75), ("tvt_read_cost", 0.001), ("tvt_read_power", 2),
                        ("tvt_read_tolerance", 1.0), ("tvt_transport_top_k", 1))


@dataclass(frozen=True)
class Condition:
    """One condition: what the agent is, how it spawns, what moves value, how it is drawn."""

    name: str
    """The name every command, run id, lake row and query uses."""
    agent: str
    """plain | memory | tvt | scripted (AGENTS)."""
    spawns: str = "random"
    """random | rigged (SPAWNS)."""
    transport: str = "none"
    """none | learned | semantic | both | sham (TRANSPORTS); tvt and full take ``--tvt-mode``."""
    shaping: str = "none"
    """none | hit-cost (SHAPINGS)."""
    policy: str | None = None
    """The scripted policy (``karmic.policies.POLICIES``) of a scripted condition."""
    order: int = 100
    """Display order in tables and figures (ascending)."""
    color: str = "#555555"
    """Line and marker colour (Okabe-Ito where there is one left)."""
    linestyle: str = "-"
    """Matplotlib line style; with the colour it tells conditions apart in greyscale too."""
    marker: str = "o"
    """Matplotlib marker."""
    claim: str = ""
    """One line: what the condition is."""
    controls_for: str = ""
    """One line: what comparing against it rules out."""
    ablation: bool = False
    """One of the four conditions of the original ablation (``karmic train --mode all``)."""
    yoke: str | None = None
    """A yoked condition's partner: the condition whose run's semantic transports it receives
    (a study pairs the cell with the partner's cell of the same level, grid and seed; ``karmic
    train`` takes the partner's run id as ``--tvt-yoke-run``)."""
    train: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    """TrainConfig defaults of the condition (a run may still set them), as (field, value) pairs."""

    def __post_init__(self) -> None:
        for attr, allowed in (("agent", AGENTS), ("spawns", SPAWNS), ("transport", TRANSPORTS),
                              ("shaping", SHAPINGS)):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"condition {self.name!r}: {attr} must be one of {', '.join(allowed)}")
        if (self.agent == "tvt") != (self.transport != "none"):
            raise ValueError(f"condition {self.name!r}: a tvt agent has a transport, other agents none")
        if (self.agent == "scripted") != (self.policy is not None):
            raise ValueError(f"condition {self.name!r}: a scripted condition (and only one) names a policy")
        if (self.transport == "yoked") != (self.yoke is not None):
            raise ValueError(f"condition {self.name!r}: a yoked transport (and only one) names its partner (yoke)")

    @property
    def trained(self) -> bool:
        return self.agent != "scripted"

    @property
    def use_tvt(self) -> bool:
        """The agent has the TVT memory (reads, reconstruction and read-strength losses)."""
        return self.agent in ("memory", "tvt")

    @property
    def rigged(self) -> bool:
        return self.spawns == "rigged"

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.train)

    def transport_for(self, tvt_mode: str) -> str:
        """The transport a run makes: tvt and full (transport ``both``) take the run's
        ``tvt_mode``; every other condition fixes its own."""
        return tvt_mode if self.transport == "both" else self.transport


_RECORDS = (
    Condition("baseline", "plain", order=0, color="#D55E00", linestyle="-", marker="o", ablation=True,
              claim="recurrent agent, env rewards, random spawns",
              controls_for="the reference every difference is measured from"),
    Condition("tvt", "tvt", transport="both", order=1, color="#0072B2", linestyle="--", marker="s",
              ablation=True,
              claim="TVT memory + learned and semantic value transport, with replay passes",
              controls_for="(the treatment) value moved back to the steps that caused a punishment"),
    Condition("matchmaker", "plain", spawns="rigged", order=2, color="#E69F00", linestyle="-.", marker="^",
              ablation=True, claim="baseline agent, debtor spawned next to its creditor",
              controls_for="(the treatment) retribution made likely by the environment"),
    Condition("full", "tvt", spawns="rigged", transport="both", order=3, color="#009E73", linestyle=":",
              marker="D", ablation=True, claim="tvt with the matchmaker's rigged spawns",
              controls_for="(the treatment) transport and the matchmaker together"),
    Condition("memory", "memory", order=4, color="#CC79A7", linestyle="-", marker="v",
              claim="the TVT agent (memory, reads, losses) with no value transport (RMA)",
              controls_for="an effect of having a memory rather than of moving value"),
    Condition("sham", "tvt", transport="sham", order=5, color="#56B4E9", linestyle="--", marker="P",
              claim="tvt, but each semantic transport lands on a random earlier step (same lags, count, total)",
              controls_for="value landing on the right steps vs any extra negative reward plus replay passes"),
    Condition("hit-cost", "plain", shaping="hit-cost", order=6, color="#000000", linestyle="-.", marker="X",
              claim=f"baseline agent paying {HIT_COST} on every hit it lands",
              controls_for="a plain cost on zapping others (TVT as 'just punish hitting')",
              train=(("hit_cost", HIT_COST),)),
    Condition("tvt-learned", "tvt", transport="learned", order=7, color="#0072B2", linestyle=":", marker="*",
              claim="TVT with the learned transport only (no event tags), key-to-door read settings",
              controls_for="credit found by the agent's own reads vs handed over by event tags",
              train=TVT_LEARNED_SETTINGS),
    Condition("yoked", "tvt", transport="yoked", yoke="tvt", order=8, color="#56B4E9", linestyle=":",
              marker="h",
              claim="tvt, but its semantic transports are a paired tvt run's, replayed update by update onto the same steps",
              controls_for="where the value lands vs how much value moves (tvt's own dose, not its own crimes)"),
    Condition("random", "scripted", policy="random", order=20, color="#7F7F7F", linestyle=":", marker=".",
              claim="uniformly random actions (simulated)", controls_for="the floor a learner must beat"),
    Condition("greedy", "scripted", policy="greedy", order=21, color="#7F7F7F", linestyle="--", marker="x",
              claim="walks to the nearest apple, never zaps (simulated)",
              controls_for="harvesting with no aggression at all"),
)

_REGISTRY: dict[str, Condition] = {c.name: c for c in _RECORDS}


def register(cond: Condition) -> Condition:
    """Add (or replace) a condition; everything that reads the registry sees it from now on."""
    if not isinstance(cond, Condition):
        raise TypeError("register takes a Condition")
    _REGISTRY[cond.name] = cond
    return cond


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def all_conditions() -> list[Condition]:
    """Every condition in display order."""
    return sorted(_REGISTRY.values(), key=lambda c: (c.order, c.name))


def names(trained: bool | None = None) -> list[str]:
    """Condition names in display order; ``trained=True`` / ``False``: only trained / scripted."""
    return [c.name for c in all_conditions() if trained is None or c.trained == trained]


def ablation_names() -> list[str]:
    return [c.name for c in all_conditions() if c.ablation]


def get_condition(name: str, trained: bool | None = None) -> Condition:
    """The record of ``name``; a ValueError with one line naming the choices otherwise."""
    cond = _REGISTRY.get(name) if isinstance(name, str) else None
    if cond is None or (trained is not None and cond.trained != trained):
        kind = {True: "trained ", False: "scripted "}.get(trained, "")
        raise ValueError(f"unknown {kind}condition {name!r}; choose one of {', '.join(names(trained))}")
    return cond


def yoke_partner(name: str) -> Condition:
    """The partner of yoked condition ``name``: a registered condition that makes semantic
    transports of its own (ValueError, one line, otherwise)."""
    cond = get_condition(name)
    if cond.yoke is None:
        raise ValueError(f"condition {name} is not yoked")
    partner = _REGISTRY.get(cond.yoke)
    if partner is None or partner.transport not in ("semantic", "both"):
        raise ValueError(f"condition {name} is yoked to {cond.yoke!r}, which is not a registered condition "
                         "with semantic transports of its own")
    return partner


def table_rows() -> list[dict[str, Any]]:
    """The registry as rows (the SQL table ``conditions``)."""
    return [{"condition": c.name, "display_order": c.order, "agent": c.agent, "spawns": c.spawns,
             "transport": c.transport, "shaping": c.shaping, "policy": c.policy, "trained": c.trained,
             "color": c.color, "linestyle": c.linestyle, "marker": c.marker, "claim": c.claim,
             "controls_for": c.controls_for, "yoke": c.yoke} for c in all_conditions()]


__all__ = ["AGENTS", "HIT_COST", "SHAPINGS", "SPAWNS", "TRANSPORTS", "Condition", "ablation_names",
           "all_conditions", "get_condition", "names", "register", "table_rows", "unregister", "yoke_partner"]
