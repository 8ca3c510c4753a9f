"""Harvest configuration: one frozen dataclass, named presets, validation that names the field.

Every number of the dynamics is a field here. Defaults follow docs/DESIGN.md; the citations say where a
number comes from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from karmic.ledger import DEFAULT_DECAY

# SSD harvest (Leibo et al. 2017; sequential_social_dilemma_games, harvest.py): regrowth probability
# of an empty apple cell by the number of apples in its neighbourhood, capped at 3.
SSD_REGROWTH_PROBS = (0.0, 0.005, 0.02, 0.05)
# Melting Pot / docs/DESIGN.md: neighbourhood = euclidean disk of radius 2 (j^2 + k^2 <= 4).
DEFAULT_NEIGHBOUR_RADIUS = 2
# SSD's own check is `j**2 + k**2 <= APPLE_RADIUS` with APPLE_RADIUS = 2, i.e. a 3x3 square.
SSD_NEIGHBOURHOOD = "ssd"
DISK_NEIGHBOURHOOD = "disk"
APPLE_CONTEXT_RADIUS = 2  # docs/DESIGN.md: ZAP_HIT.apple_context = any apple within radius 2 of victim

# Original Karmic seed rules: beam length 5, removal for 25 steps, -0.5 for being hit.
DEFAULT_BEAM_LENGTH = 5
DEFAULT_REMOVAL_STEPS = 25
DEFAULT_HIT_PENALTY = -0.5
IDENTITIES = ("none", "onehot")

# SSD harvest map (sequential_social_dilemma_games, maps.py HARVEST_MAP): '@' wall, 'A' apple,
# 'P' agent spawn point (the only cells agents spawn on when spawn_on_points is set), ' ' empty.
SSD_HARVEST_MAP = (
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
    "@ P   P      A    P AAAAA    P  A P  @",
    "@  P     A P AA    P    AAA    A  A  @",
    "@     A AAA  AAA    A    A AA AAAA   @",
    "@ A  AAA A    A  A AAA  A  A   A A   @",
    "@AAA  A A    A  AAA A  AAA        A P@",
    "@ A A  AAA  AAA  A A    A AA   AA AA @",
    "@  A A  AAA    A A  AAA    AAA  A    @",
    "@   AAA  A      AAA  A    AAAA       @",
    "@ P  A       A  A AAA    A  A      P @",
    "@A  AAA  A  A  AAA A    AAAA     P   @",
    "@    A A   AAA  A A      A AA   A  P @",
    "@     AAA   A A  AAA      AA   AAA P @",
    "@ A    A     AAA  A  P          A    @",
    "@       P     A         P  P P     P @",
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
)


@dataclass(frozen=True)
class HarvestConfig:
    grid_size: int = 20  # interior cells per side; walls lie outside
    n_agents: int = 5
    max_steps: int | None = None  # None: 1000, or 500 at grid_size <= 10 (docs/DESIGN.md)
    view_size: int = 11  # egocentric window, odd
    layout: str = "patches"  # "patches" | "ssd" (the SSD HARVEST_MAP; grid_size is then ignored)
    n_patches: int | None = None  # None: max(2, round(grid_size**2 / 50))
    patch_radius: int = 2
    layout_seed: int = 0  # the apple layout is a fixed map per config, not per episode
    regrowth_probs: tuple[float, ...] = SSD_REGROWTH_PROBS
    neighbourhood: str = DISK_NEIGHBOURHOOD  # "disk" (radius neighbour_radius) | "ssd"
    neighbour_radius: int = DEFAULT_NEIGHBOUR_RADIUS
    beam_length: int = DEFAULT_BEAM_LENGTH
    beam_width: int = 1  # 1 or 3 (SSD's beam is 3 wide)
    removal_steps: int = DEFAULT_REMOVAL_STEPS  # 0: hit agents stay on the board (SSD)
    # SSD's rules where they differ from Karmic's; the defaults keep Karmic's, the ssd preset sets
    # them (sequential_social_dilemma_games, map_env.py and harvest.py):
    spawn_on_points: bool = False  # spawn and respawn only on the map's 'P' cells (spawn_point)
    zap_after_moves: bool = False  # step order moves, eating, zaps, regrowth (MapEnv.step)
    beam_sides_beside: bool = False  # side lanes start beside the shooter, 1 shorter (update_map_fire)
    simultaneous_moves: bool = False  # moves resolved together: chains and cycles move (update_moves)
    apple_reward: float = 1.0
    hit_penalty: float = DEFAULT_HIT_PENALTY
    fire_cost: float = 0.0
    ledger_decay: float = DEFAULT_DECAY  # the matchmaker's per-episode debt decay (docs/DESIGN.md ledger)
    # who is who (SSD and Melting Pot draw each player in its own colour): "none" (the 3 channels
    # apple / wall / other agent) or "onehot" (n_agents more channels, channel 3 + k marks agent
    # k's cell, the observer's own included, so a net can tell agents apart and knows who it is)
    identity: str = "none"

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"invalid HarvestConfig.{name}: {why}")

        if self.layout not in ("patches", "ssd"):
            bad("layout", f"{self.layout!r} is not 'patches' or 'ssd'")
        if self.layout == "patches" and not 5 <= self.grid_size <= 200:
            bad("grid_size", f"{self.grid_size} is outside [5, 200]")
        if self.n_agents < 1 or self.n_agents > 32:
            bad("n_agents", f"{self.n_agents} is outside [1, 32]")
        if self.max_steps is not None and self.max_steps < 1:
            bad("max_steps", "must be >= 1")
        if self.view_size < 3 or self.view_size % 2 == 0:
            bad("view_size", f"{self.view_size} must be odd and >= 3")
        if self.n_patches is not None and self.n_patches < 1:
            bad("n_patches", "must be >= 1")
        if self.patch_radius < 0:
            bad("patch_radius", "must be >= 0")
        if len(self.regrowth_probs) < 1:
            bad("regrowth_probs", "needs at least one entry")
        for p in self.regrowth_probs:
            if not 0.0 <= float(p) <= 1.0:
                bad("regrowth_probs", f"probability {p} is outside [0, 1]")
        if self.neighbourhood not in (DISK_NEIGHBOURHOOD, SSD_NEIGHBOURHOOD):
            bad("neighbourhood", f"{self.neighbourhood!r} is not 'disk' or 'ssd'")
        if self.neighbour_radius < 0:
            bad("neighbour_radius", "must be >= 0")
        if self.beam_length < 1:
            bad("beam_length", "must be >= 1")
        if self.beam_width not in (1, 3):
            bad("beam_width", f"{self.beam_width} is not 1 or 3")
        if self.removal_steps < 0:
            bad("removal_steps", "must be >= 0")
        if self.spawn_on_points and self.layout != "ssd":
            bad("spawn_on_points", "needs layout 'ssd' (only its map has 'P' spawn points)")
        if self.spawn_on_points and self.n_agents > self.n_spawn_points():
            bad("n_agents", f"{self.n_agents} agents for {self.n_spawn_points()} spawn points")
        if self.identity not in IDENTITIES:
            bad("identity", f"{self.identity!r} is not one of {', '.join(IDENTITIES)}")
        if not 0.0 <= self.ledger_decay <= 1.0:
            bad("ledger_decay", f"{self.ledger_decay} is outside [0, 1]")
        free = self.height * self.width - self.n_apple_cells_upper_bound()
        if self.layout == "patches" and self.n_agents + 1 > self.grid_size**2 // 2:
            bad("grid_size", f"{self.grid_size}x{self.grid_size} is too small for {self.n_agents} agents")
        if free < self.n_agents:
            bad("grid_size", "too small for its agents and apples")

    # Derived sizes -------------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return len(SSD_HARVEST_MAP) - 2 if self.layout == "ssd" else self.grid_size

    @property
    def width(self) -> int:
        return len(SSD_HARVEST_MAP[0]) - 2 if self.layout == "ssd" else self.grid_size

    @property
    def episode_length(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return 500 if self.height <= 10 and self.width <= 10 else 1000

    @property
    def patches(self) -> int:
        return self.n_patches if self.n_patches is not None else max(2, round(self.grid_size**2 / 50))

    def n_apple_cells_upper_bound(self) -> int:
        if self.layout == "ssd":
            return sum(row.count("A") for row in SSD_HARVEST_MAP)
        r = self.patch_radius
        disk = sum(1 for j in range(-r, r + 1) for k in range(-r, r + 1) if j * j + k * k <= r * r)
        return min(self.patches * disk, self.grid_size**2 // 2)

    def n_spawn_points(self) -> int:
        return sum(row.count("P") for row in SSD_HARVEST_MAP) if self.layout == "ssd" else 0

    # Serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["regrowth_probs"] = list(self.regrowth_probs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HarvestConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"invalid HarvestConfig: unknown field(s) {sorted(unknown)}")
        d = dict(d)
        if "regrowth_probs" in d:
            d["regrowth_probs"] = tuple(float(p) for p in d["regrowth_probs"])
        return cls(**d)


PRESETS: dict[str, dict] = {
    "small": {"grid_size": 10, "max_steps": 500},
    "medium": {"grid_size": 20},
    "big": {"grid_size": 30},
    # SSD harvest: its map and 'P' spawn points, a 3-wide beam whose side lanes start beside the
    # shooter, -50 for being hit and no removal, -1 to fire, its 3x3 neighbourhood, its step order
    # and simultaneous moves; 5 agents and 1000 steps as in SSD's runs; a 15x15 view (SSD's
    # HARVEST_VIEW_SIZE is 7 cells each side).
    "ssd": {
        "layout": "ssd",
        "beam_width": 3,
        "hit_penalty": -50.0,
        "removal_steps": 0,
        "fire_cost": -1.0,
        "neighbourhood": SSD_NEIGHBOURHOOD,
        "view_size": 15,
        "max_steps": 1000,
        "spawn_on_points": True,
        "zap_after_moves": True,
        "beam_sides_beside": True,
        "simultaneous_moves": True,
    },
    # The calibrated small world (studies/ecology.toml, results/ecology/decision.json): the level
    # its pre-registered rule chose at 10x10 from baseline runs alone: regrowth at half SSD's rates,
    # a 50-step removal and no victim penalty, so zapping pays only by excluding a rival from the
    # apples (Leibo et al. 2017; Perolat et al. 2017). The ablation (studies/ablation.toml) runs on it.
    "karmic-small": {
        "grid_size": 10,
        "regrowth_probs": (0.0, 0.0025, 0.01, 0.025),
        "removal_steps": 50,
        "hit_penalty": 0.0,
    },
    # The calibrated big city (studies/ecology.toml, results/ecology/decision.json): the level its
    # rule chose at 30x30: SSD regrowth on 2 apple patches (13 cells each) for 5 agents, the apple
    # cells per agent of the 10x10 board, so scale changes space and encounters, not wealth; the
    # default 18 patches make baseline agents stop zapping altogether.
    "karmic-big": {"grid_size": 30, "n_patches": 2},
    # The calibrated worlds with identity in the observations (karmic.envs.core: one channel per
    # agent), so "norm enforcement" on a known offender can be learned; the presets above stay
    # as they were, so the committed results reproduce.
    "karmic-small-id": {},  # filled in below: karmic-small + identity "onehot"
    "karmic-big-id": {},  # karmic-big + identity "onehot"
    # The original Karmic README: 10x10 small world, beam 5, removal 25 steps, -0.5 when hit.
    "seed": {"grid_size": 10, "max_steps": 500, "beam_width": 1, "removal_steps": 25},
}

PRESETS["karmic-small-id"] = {**PRESETS["karmic-small"], "identity": "onehot"}
PRESETS["karmic-big-id"] = {**PRESETS["karmic-big"], "identity": "onehot"}


def make_config(preset: str | None = None, **overrides) -> HarvestConfig:
    """A config from a preset name (or None for the defaults) with field overrides."""
    base: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"invalid HarvestConfig.preset: unknown preset {preset!r}; known: {sorted(PRESETS)}")
        base = dict(PRESETS[preset])
    known = {f.name for f in fields(HarvestConfig)}
    for k in overrides:
        if k not in known:
            raise ValueError(f"invalid HarvestConfig.{k}: no such field")
    base.update({k: v for k, v in overrides.items() if v is not None or k == "max_steps"})
    if "regrowth_probs" in base:
        base["regrowth_probs"] = tuple(float(p) for p in base["regrowth_probs"])
    return replace(HarvestConfig(), **base) if base else HarvestConfig()
