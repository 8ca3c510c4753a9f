"""A short run of every condition writes the same events, episodes, transports and model as the
recorded golden digests (tests/golden.py): refactors keep behaviour bit for bit."""

from __future__ import annotations

import json

from golden import GOLDEN, digests


def test_every_condition_matches_its_golden_digests(tmp_path):
    want = json.loads(GOLDEN.read_text())
    got = digests(tmp_path)
    assert got == want
