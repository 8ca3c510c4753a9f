"""Agents: the recurrent actor-critic shared by the agents of a run, and trained policies."""

from karmic.agents.network import KarmicAgent
from karmic.agents.policy import CheckpointPolicy, load_policy

__all__ = ["CheckpointPolicy", "KarmicAgent", "load_policy"]
