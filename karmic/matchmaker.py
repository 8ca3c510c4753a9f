"""The Conspiring Matchmaker: a debt ledger of who zapped whom, and rigged spawns at reset.

``KarmicMatchmaker(env)`` wraps a ``KarmicHarvest-v0`` ParallelEnv (the original API)::

    env = KarmicMatchmaker(pettingzoo.make("parallel", "KarmicHarvest-v0"))

Every step it folds the step's ZAP_HIT events into a :class:`karmic.ledger.Ledger`; at the end
of an episode the debts decay; at each reset it pairs the largest debts greedily (each agent in
at most one pair, debtor with creditor) and the environment spawns each pair on adjacent free
cells facing each other (``SPAWN`` with ``spawn_cause = 'rigged'``, the partner as ``target``);
the other agents spawn at random. Where no adjacent free cells exist the pair spawns at random
(``spawn_cause = 'reset'``) — never two agents on one cell. The batched core takes the same
pairs (``HarvestVecEnv.reset(pairs=...)``, with :class:`karmic.ledger.VecLedger`) for training.
"""

from __future__ import annotations

from karmic.ledger import DEFAULT_DECAY, Ledger


class KarmicMatchmaker:
    """A ParallelEnv wrapper: same API as the wrapped env, plus ``ledger``."""

    def __init__(self, env, decay: float | None = None, ledger: Ledger | None = None):
        self.env = env
        base = getattr(env, "unwrapped", env)
        self._core = base.core
        n = len(env.possible_agents)
        if decay is None:
            decay = float(getattr(base.config, "ledger_decay", DEFAULT_DECAY))
        self.ledger = ledger if ledger is not None else Ledger(n, decay)
        self._in_episode = False

    def __getattr__(self, name):  # agents, possible_agents, spaces, render, close, metadata ...
        return getattr(self.env, name)

    def reset(self, seed: int | None = None, options: dict | None = None):
        if self._in_episode:  # an episode cut short still counts as an episode for the decay
            self.ledger.end_episode()
        options = dict(options or {})
        options["pairs"] = self.ledger.pairs()
        out = self.env.reset(seed=seed, options=options)
        self._in_episode = True
        return out

    def step(self, actions):
        obs, rew, term, trunc, infos = self.env.step(actions)
        self.ledger.observe(self._core.last_events)
        if not self.env.agents:  # the episode ended
            self.ledger.end_episode()
            self._in_episode = False
        return obs, rew, term, trunc, infos

    @property
    def unwrapped(self):
        return getattr(self.env, "unwrapped", self.env)
