"""The data flow around the lake: writers, readers, ledger rebuild, trajectory replay, reports.

Pipelines call the domain (``karmic.envs``, ``karmic.ledger``, ``karmic.agents``); the domain
never imports pipelines.
"""
