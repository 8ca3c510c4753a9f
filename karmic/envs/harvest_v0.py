"""KarmicHarvest-v0: the Harvest commons game (Perolat et al. 2017; Leibo et al. 2017) as a
PettingZoo ParallelEnv. This docstring is the environment's spec; tests/test_docs.py checks that
it names every preset and every option.

Making one
    ``karmic.make(preset=None, render_mode=None, **options)``, the same as
    ``pettingzoo.make("parallel", "KarmicHarvest-v0", ...)`` (registered on ``import karmic``) or
    ``parallel_env(...)``; ``env(...)`` is the AEC form. ``HarvestVecEnv(make_config(...),
    num_envs=B)`` (karmic/envs/core.py) steps B environments at once; this class wraps one.
Agents
    ``agent_0`` … ``agent_{N-1}`` (N = ``n_agents``, default 5).
Actions (Discrete(8), moves relative to facing)
    0 no-op · 1 forward · 2 backward · 3 step left · 4 step right · 5 turn left · 6 turn right ·
    7 zap (a beam ``beam_length`` = 5 cells ahead, ``beam_width`` 1 or 3 lanes; a lane stops at the
    first wall or the first agent it hits).
Observation (Box(0, 1, (V, V, C), uint8), V = ``view_size`` = 11, C = 3)
    An egocentric window rotated so the agent faces up (the agent sits at the centre), channels:
    apple, wall (cells outside the board count as wall), other agent. A removed agent sees zeros.
    With ``identity = "onehot"`` (presets ``karmic-small-id``, ``karmic-big-id``) the shape is
    (V, V, 3 + N): channel 3 + k marks agent k's cell, the observer's own included.
Rewards
    +``apple_reward`` (1) for an eaten apple; ``hit_penalty`` (-0.5) for being hit; ``fire_cost``
    (0) per shot. A hit agent leaves the board for ``removal_steps`` (25) steps, then respawns on a
    random free cell (0 = not removed, as in SSD).
Dynamics per step (in this order, all from the seed given to ``reset``)
    1. zaps, all against the positions before moving (two agents may hit each other);
    2. moves and turns in a uniformly random priority order: an agent takes its target cell if it is
       free at its turn (fair random tie-breaks; no swaps: a move into a cell whose occupant has not
       moved yet is blocked);
    3. eating: an agent on an apple eats it;
    4. regrowth: an empty, unoccupied apple cell regrows with probability
       ``regrowth_probs[min(n, 3)]`` = [0, 0.005, 0.02, 0.05], n = apples in the neighbourhood
       kernel (disk of radius ``neighbour_radius`` = 2; ``neighbourhood="ssd"`` is SSD's 3x3
       check), counted on the board before this step's growth;
    5. removal timers; respawns.
    The ``ssd`` preset follows SSD's harvest instead (each rule a config field, off by default):
    agents spawn only on the map's 'P' cells (``spawn_on_points``); moves, eating, then zaps from
    the new positions, then regrowth (``zap_after_moves``); a side lane starts on the cell beside
    the shooter and ends one cell short of the centre lane (``beam_sides_beside``); moves are
    resolved together, so chains and cycles move and swaps fail (``simultaneous_moves``).
Events (``infos[agent]["social_events"]``, docs/DESIGN.md's events schema, in this order)
    SPAWN at reset (spawn_cause reset / rigged) and at respawn; ZAP_FIRED per shot; ZAP_HIT per
    victim with apple_context (an apple within radius 2 of the victim); APPLE_EATEN (with
    ``zap_after_moves``, APPLE_EATEN comes before the shots).
Rigged spawns
    ``reset(seed, options={"pairs": [(debtor, creditor), ...]})`` spawns each pair on two adjacent
    free cells facing each other (SPAWN spawn_cause rigged, the partner as target); if no such cells
    exist the pair spawns at random (spawn_cause reset). ``pairs`` is the only reset option.
Episodes
    ``max_steps`` (None: 1000, or 500 at ``grid_size`` <= 10); all agents are truncated together,
    never terminated.
Options (``HarvestConfig`` fields, karmic/envs/config.py; a bad value raises ValueError naming it)
    board: ``grid_size`` (20; interior cells per side), ``layout`` ("patches" | "ssd": SSD's
    36x14 map, grid_size ignored), ``n_patches`` (None: max(2, round(grid_size² / 50))),
    ``patch_radius`` (2), ``layout_seed`` (0: the apple layout is fixed per config);
    agents: ``n_agents`` (5), ``view_size`` (11, odd), ``max_steps``, ``identity`` ("none" |
    "onehot");
    apples: ``regrowth_probs``, ``neighbourhood`` ("disk" | "ssd"), ``neighbour_radius`` (2);
    zaps: ``beam_length`` (5), ``beam_width`` (1 | 3), ``removal_steps`` (25);
    SSD's rules: ``spawn_on_points``, ``zap_after_moves``, ``beam_sides_beside``,
    ``simultaneous_moves`` (all False);
    rewards: ``apple_reward`` (1), ``hit_penalty`` (-0.5), ``fire_cost`` (0);
    the matchmaker's ledger: ``ledger_decay`` (0.95 per episode);
    observations: ``identity`` ("none" | "onehot": 3 + N channels, channel 3 + k agent k's cell).
    ``render_mode``: "rgb_array", "ansi" or "human".
Presets (``preset=NAME``; options given beside a preset override its fields)
    ``small``: 10x10, 500 steps. ``medium``: 20x20. ``big``: 30x30.
    ``karmic-small``: the calibrated small world (studies/ecology.toml's choice at 10x10): 10x10,
    regrowth at half SSD's rates, a 50-step removal and no victim penalty.
    ``karmic-big``: the calibrated big city (its choice at 30x30): 30x30 with 2 apple patches,
    the apple cells per agent of the 10x10 board.
    ``karmic-small-id``, ``karmic-big-id``: the two above with ``identity="onehot"``.
    ``ssd``: SSD's harvest (its map and 'P' spawn points, the rules above, 3-wide beam, -50 when
    hit, no removal, -1 to fire, 3x3 regrowth check, 15x15 view, 1000 steps).
    ``seed``: the original Karmic rules (10x10, 500 steps, beam 5 wide 1, removal 25).
    ``karmic-small-id``, ``karmic-big-id``: ``karmic-small`` / ``karmic-big`` with identity on.
Version history (the id stays v0 while the defaults and the presets small, medium, big and seed
keep their episodes bit for bit: tests/test_env_ssd.py pins a digest of each)
    v0, 2026-11-24: first release (presets small, medium, big, ssd, seed).
    v0, 2026-12-01: SSD's rules as the four fields above, set only by ``ssd``; the ssd map's row
    13 as in SSD's maps.py (``ssd`` episodes changed; every other preset's did not). The spawn
    mask is recomputed from the walls at each reset.
    v0, 2026-12-01: presets ``karmic-small`` and ``karmic-big`` (the calibration's ecologies).
    v0, 2026-12-04: ``identity`` (default "none"; presets ``karmic-small-id``, ``karmic-big-id``
    turn it on) and the per-agent ``encounters`` count of ``episode_stats``; episodes of every
    other setting unchanged.
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from karmic.envs.config import make_config
from karmic.envs.core import N_ACTIONS, HarvestVecEnv
from karmic.events import agent_name


class raw_env(ParallelEnv):  # noqa: N801 - PettingZoo naming
    metadata = {"name": "KarmicHarvest-v0", "render_modes": ["rgb_array", "ansi", "human"],
                "render_fps": 10, "is_parallelizable": True}

    def __init__(self, preset: str | None = None, render_mode: str | None = None, **config):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"invalid render_mode: {render_mode!r}")
        self.config = make_config(preset, **config)
        self.render_mode = render_mode
        self.core = HarvestVecEnv(self.config, num_envs=1)
        self.possible_agents = [agent_name(i) for i in range(self.config.n_agents)]
        self.agents: list[str] = []
        self._obs_space = spaces.Box(0, 1, self.core.obs_shape, np.uint8)
        self._act_space = spaces.Discrete(N_ACTIONS)
        self._obs_spaces = {a: self._obs_space for a in self.possible_agents}
        self._act_spaces = {a: spaces.Discrete(N_ACTIONS) for a in self.possible_agents}
        self._actions = np.zeros((1, self.config.n_agents), dtype=np.int64)
        self._fig = None

    @functools.cache  # noqa: B019 - the same object on every call
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_spaces[agent]

    def _obs_dict(self, obs):
        return {a: obs[0, i].copy() for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        pairs = (options or {}).get("pairs")
        obs = self.core.reset(seed=seed, pairs=[list(pairs)] if pairs is not None else None)
        self.agents = list(self.possible_agents)
        events = self.core.reset_events.to_dicts()
        infos = {a: {"social_events": events} for a in self.agents}
        return self._obs_dict(obs), infos

    def step(self, actions: dict):
        if not self.agents:
            raise RuntimeError("step() after the episode ended: call reset()")
        acts = self._actions
        acts[:] = 0
        for i, a in enumerate(self.possible_agents):
            if a in actions:
                acts[0, i] = actions[a]
        obs, rew, dones, events = self.core.step(acts)
        done = bool(dones[0])
        ev = events.to_dicts() if len(events) else []
        names = self.agents
        observations = self._obs_dict(obs)
        rewards = {a: float(rew[0, i]) for i, a in enumerate(names)}
        terminations = dict.fromkeys(names, False)
        truncations = dict.fromkeys(names, done)
        infos = {a: {"social_events": ev} for a in names}
        if done:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def render_frame(self) -> np.ndarray:
        return self.core.render_rgb(0)

    def render(self):
        if self.render_mode is None:
            return None
        if self.render_mode == "ansi":
            from karmic.envs.render import board_ansi

            return board_ansi(self.core, 0)
        frame = self.render_frame()
        if self.render_mode == "rgb_array":
            return frame
        import matplotlib.pyplot as plt  # human

        if self._fig is None:
            self._fig, ax = plt.subplots()
            self._im = ax.imshow(frame)
            ax.axis("off")
        else:
            self._im.set_data(frame)
        plt.pause(1 / self.metadata["render_fps"])
        return None

    def close(self):
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
            self._fig = None

    def state(self) -> np.ndarray:
        return self.render_frame()


def parallel_env(**config) -> raw_env:
    return raw_env(**config)


def env(**config):
    """The AEC form (PettingZoo's parallel_to_aec)."""
    return parallel_to_aec(raw_env(**config))
