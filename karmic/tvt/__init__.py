"""Temporal Value Transport (Hung et al. 2019) for Karmic-RL.

- :mod:`karmic.tvt.transport`: the transport rules as pure functions (learned transport from read
  strengths and weights; semantic role matching from who hit whom).
- :mod:`karmic.tvt.memory`: the memory words, read heads and the reconstruction / read-strength
  losses (:class:`~karmic.tvt.memory.TVTMemory`).
- :mod:`karmic.tvt.harvest`: the trainer's side (memory ring, role tags, ``transport_rewards``,
  the ``tvt_transports`` lake table).
- :mod:`karmic.tvt.key_to_door` and :mod:`karmic.tvt.verify_key_to_door`: ``karmic verify tvt``.
"""

from __future__ import annotations


def make_tvt_module(agent):
    from karmic.tvt.harvest import make_tvt_module as make

    return make(agent)


def transport_rewards(shard, history, agent, cfg):
    from karmic.tvt.harvest import transport_rewards as tr

    return tr(shard, history, agent, cfg)
