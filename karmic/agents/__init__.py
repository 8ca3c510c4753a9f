"""Agents: the recurrent actor-critic shared by the agents of a run, and trained policies (issue 5)."""

from karmic.agents.network import KarmicAgent, TVTUnavailable
from karmic.agents.policy import CheckpointPolicy, load_policy

__all__ = ["CheckpointPolicy", "KarmicAgent", "TVTUnavailable", "load_policy"]
