"""TVT transport on hand-made read weights and values: spans, threshold, minimum gap, top-k,
episode boundaries and semantic role matching."""

from __future__ import annotations

import numpy as np
import pytest

from karmic.tvt.transport import (
    Transports,
    apply_transports,
    learned_transport,
    min_gap,
    semantic_transport,
    span_peaks,
    split_global,
    threshold_spans,
)


def test_spans_and_peaks():
    s = np.array([0, 3, 5, 2.5, 1, 2, 2.1, 0, 9])
    assert threshold_spans(s, 2.0) == [(1, 4), (6, 7), (8, 9)]
    assert list(span_peaks(s, 2.0)) == [2, 6, 8]
    assert threshold_spans(np.array([2.0, 2.0]), 2.0) == []  # strictly above


def test_min_gap():
    assert min_gap(0.9) == 10 and min_gap(0.99) == 100 and min_gap(1.0) == 25
    with pytest.raises(ValueError):
        min_gap(1.5)


def one_head(T=30, M=30):
    w = np.zeros((T, 1, M))
    s = np.zeros((T, 1))
    rows = np.arange(M)  # row i written at step i
    v = np.linspace(1, 2, T)
    return w, s, rows, v, np.arange(T)


def test_learned_transport_peak_topk_and_amount():
    w, s, rows, v, times = one_head()
    s[20:23, 0] = [2.5, 4.0, 3.0]  # one span, peak at 21
    w[21, 0, [2, 5, 7, 15]] = [0.5, 0.3, 0.1, 0.1]
    tr = learned_transport(w, s, rows, v, times, gamma=0.9, top_k=2)  # min gap 10
    assert list(tr.source) == [21, 21] and list(tr.target) == [2, 5]
    assert np.allclose(tr.amount, 0.9 * np.array([0.5, 0.3]) * v[21])


def test_learned_transport_threshold_and_min_gap():
    w, s, rows, v, times = one_head()
    s[20, 0] = 1.9  # below threshold: nothing
    w[20, 0, 2] = 1.0
    assert len(learned_transport(w, s, rows, v, times, gamma=0.9)) == 0
    s[20, 0] = 3.0
    w[20, 0, :] = 0
    w[20, 0, 12] = 1.0  # 8 steps back < min gap 10
    assert len(learned_transport(w, s, rows, v, times, gamma=0.9)) == 0
    w[20, 0, 10] = 2.0  # exactly 10 back: allowed
    tr = learned_transport(w, s, rows, v, times, gamma=0.9, top_k=1)
    assert list(tr.target) == [10]


def test_learned_transport_a_read_of_the_recent_past_starts_no_span():
    # the reference's read_strengths_cut: a step whose strongest weight is on a recent row
    # recalls the present, so its strength cannot open or extend a span
    w, s, rows, v, times = one_head()
    s[20:23, 0] = [3.0, 5.0, 3.0]
    w[20, 0, 2] = 1.0  # far (18 back)
    w[21, 0, [15, 3]] = [0.7, 0.3]  # strongest is 6 back (< 10): the peak step is cut
    w[22, 0, 4] = 1.0  # far
    tr = learned_transport(w, s, rows, v, times, gamma=0.9, top_k=1)
    # the cut splits the span in two; each half transports from its own peak
    assert list(tr.source) == [20, 22] and list(tr.target) == [2, 4]


def test_learned_transport_top_k_is_taken_over_far_rows_only():
    w, s, rows, v, times = one_head()
    s[25, 0] = 3.0
    w[25, 0, [1, 20, 21, 2]] = [0.4, 0.3, 0.2, 0.1]  # rows 20, 21 are recent (5, 4 back)
    tr = learned_transport(w, s, rows, v, times, gamma=0.9, top_k=2)
    assert list(tr.target) == [1, 2]  # not [1] (the top 2 of all rows, then filtered)
    assert np.allclose(tr.amount, 0.9 * np.array([0.4, 0.1]) * v[25])


def test_learned_transport_each_span_once_and_empty_rows():
    w, s, rows, v, times = one_head()
    s[15:18, 0] = 3.0  # span 1 (peak 15: first max)
    s[25, 0] = 3.0  # span 2
    w[15, 0, 1] = 1.0
    w[25, 0, 3] = 1.0
    rt = rows.copy()
    rt[3] = -1  # an empty row is never a target
    tr = learned_transport(w, s, rt, v, times, gamma=0.9, top_k=1)
    assert list(tr.source) == [15] and list(tr.target) == [1]


def test_episode_boundaries_cross_episode_targets_are_returned_for_replay():
    L = 100
    # this shard covers episode 3, t = 0..49; the memory holds a row from episode 2
    times = 3 * L + np.arange(50)
    w = np.zeros((50, 1, 2))
    s = np.zeros((50, 1))
    rt = np.array([2 * L + 90, 3 * L + 5])
    s[40, 0] = 5
    w[40, 0] = [0.6, 0.4]
    v = np.ones(50)
    tr = learned_transport(w, s, rt, v, times, gamma=0.9, top_k=2)
    assert sorted(tr.target.tolist()) == [2 * L + 90, 3 * L + 5]
    rewards, rest = apply_transports(np.zeros(50), times, tr)
    assert rewards[5] == pytest.approx(0.9 * 0.4)
    assert rewards.sum() == pytest.approx(0.9 * 0.4)
    ep, t = split_global(rest.target, L)
    assert list(ep) == [2] and list(t) == [90] and rest.amount[0] == pytest.approx(0.9 * 0.6)


def test_semantic_role_matching():
    # aggressor against agent 2 at steps 5 and 8, against agent 3 at 9; hit by 2 at 30
    tr = semantic_transport(
        hit_times=[30], hit_by=[2], aggression_times=[5, 8, 9], aggression_victims=[2, 2, 3],
        advantages=[-2.0],
    )
    assert sorted(tr.target.tolist()) == [5, 8]
    assert tr.amount.sum() == pytest.approx(0.9 * -2.0)
    assert (tr.head == -1).all()
    # no crime against the attacker: nothing moves; a crime after the hit is never a target
    assert len(semantic_transport([30], [4], [5], [2], [-1.0])) == 0
    assert len(semantic_transport([3], [2], [5], [2], [-1.0])) == 0


def test_semantic_across_episode_boundary():
    L = 50
    tr = semantic_transport([1 * L + 10], [1], [0 * L + 45], [1], [-3.0])
    ep, t = split_global(tr.target, L)
    assert list(ep) == [0] and list(t) == [45]
    rewards, rest = apply_transports(np.zeros(L), 1 * L + np.arange(L), tr)
    assert rewards.sum() == 0 and len(rest) == 1


def test_transports_concat_empty():
    assert len(Transports.concat([])) == 0
