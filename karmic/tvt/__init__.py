"""Temporal Value Transport (Hung et al. 2019) for Karmic-RL.

``karmic.tvt.transport`` holds the transport rules as pure functions (learned transport from read
strengths and weights; semantic role matching from who hit whom). The trainer's hooks
(``make_tvt_module``, ``transport_rewards``) are not here yet, so ``karmic train --mode tvt|full``
still reports that TVT is unavailable.
"""
