"""A short run of every condition writes the same events, episodes, transports and model as the
recorded golden digests (tests/golden.py): refactors keep behaviour (discrete outputs exactly,
floats to 1e-4)."""

from __future__ import annotations

import json

from golden import GOLDEN, digests, mismatches


def test_every_condition_matches_its_golden_digests(tmp_path):
    want = json.loads(GOLDEN.read_text())
    got = digests(tmp_path)
    assert mismatches(got, want) == []


def test_the_comparison_catches_a_changed_parameter_and_a_changed_event():
    want = {"m": {"events": "abc", "model": {"w": [1.0, 2.0, 3.0]}}}
    assert mismatches({"m": {"events": "abc", "model": {"w": [1.0 + 1e-9, 2.0, 3.0]}}}, want) == []
    assert mismatches({"m": {"events": "abc", "model": {"w": [1.01, 2.0, 3.0]}}}, want)
    assert mismatches({"m": {"events": "abd", "model": {"w": [1.0, 2.0, 3.0]}}}, want)
    assert mismatches({"m": {"events": "abc", "model": {}}}, want)
