"""The sparse read's numba kernels against torch: the top-k set, ties, short windows, products."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from karmic.tvt import kernels


def _topk(logits: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    T, B, H, _ = logits.shape
    idx = np.full((T, B, H, k), -7, np.int64)
    val = np.full((T, B, H, k), 7.0, np.float32)
    kernels.topk_valid(logits, valid, idx, val, k)
    return idx, val


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 3), B=st.integers(1, 3), R=st.integers(1, 90), k=st.integers(1, 40),
       distinct=st.integers(1, 12), p_valid=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_topk_valid_is_the_top_k_set_with_ties_to_the_lower_rows(T, B, R, k, distinct, p_valid, seed):
    rng = np.random.default_rng(seed)
    H = 2
    # few distinct values: many ties; a continuous draw would almost never tie
    logits = rng.integers(0, distinct, (T, B, H, R)).astype(np.float32) / distinct
    if seed % 2:
        logits += rng.standard_normal(logits.shape).astype(np.float32)
    valid = rng.random((T, B, R)) < p_valid
    idx, val = _topk(logits, valid, k)
    for t in range(T):
        for b in range(B):
            rows = np.flatnonzero(valid[t, b])
            for h in range(H):
                x = logits[t, b, h]
                # the reference: by value descending, ties by row ascending (a stable sort)
                order = rows[np.argsort(-x[rows], kind="stable")][:k]
                want = np.sort(order)
                n = len(want)
                np.testing.assert_array_equal(idx[t, b, h, :n], want)
                np.testing.assert_array_equal(val[t, b, h, :n], x[want])
                assert (idx[t, b, h, n:] == 0).all() and np.isneginf(val[t, b, h, n:]).all()


def test_topk_valid_picks_the_set_torch_topk_picks_on_a_learner_sized_read():
    g = torch.Generator().manual_seed(3)
    T, B, H, R, k = 5, 7, 2, 1100, 50
    logits = torch.randn(T, B, H, R, generator=g)
    step = torch.arange(T)[:, None, None] + torch.randint(0, 100, (1, B, 1), generator=g)
    valid = (torch.arange(R) >= step) & (torch.arange(R) < step + 1000)  # a sliding window
    idx, val = _topk(logits.numpy(), valid.numpy(), k)
    ref_v, ref_i = logits.masked_fill(~valid[:, :, None], float("-inf")).topk(k, dim=-1)
    np.testing.assert_array_equal(idx, ref_i.sort(-1).values.numpy())
    np.testing.assert_array_equal(np.sort(val, -1), ref_v.sort(-1).values.numpy())


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 3), B=st.integers(1, 3), R=st.integers(1, 30), K=st.integers(1, 8),
       D=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_gathered_products_equal_their_einsum(T, B, R, K, D, seed):
    rng = np.random.default_rng(seed)
    H = 2
    x = rng.standard_normal((T, B, H, D)).astype(np.float32)
    w = rng.standard_normal((T, B, H, K)).astype(np.float32)
    w[..., 0] = 0.0  # a row of weight 0 adds nothing
    table = rng.standard_normal((B, R, D)).astype(np.float32)
    idx = rng.integers(0, R, (T, B, H, K))
    rows = table[np.arange(B)[None, :, None, None], idx]  # (T, B, H, K, D)
    dot = np.empty((T, B, H, K), np.float32)
    kernels.gather_dot(x, idx, dot, table)
    np.testing.assert_allclose(dot, np.einsum("tbhd,tbhkd->tbhk", x, rows), rtol=1e-5, atol=1e-5)
    s = np.empty((T, B, H, D), np.float32)
    kernels.gather_sum(w, idx, s, table)
    np.testing.assert_allclose(s, np.einsum("tbhk,tbhkd->tbhd", w, rows), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 4), B=st.integers(1, 5), R=st.integers(1, 60), K=st.integers(1, 60),
       D=st.integers(1, 70), p_zero=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_the_vectorised_gathered_sums_are_the_loops_of_old_bit_for_bit(T, B, R, K, D, p_zero, seed):
    """issue 33: gather_sum / gather_sum_at index in full instead of through per-query views
    (vectorised over the word); every output must be the old loops' to the last bit."""
    rng = np.random.default_rng(seed)
    H = 2
    w = rng.standard_normal((T, B, H, K)).astype(np.float32)
    w[rng.random(w.shape) < p_zero] = 0.0
    S = B + 3
    table = rng.standard_normal((S, R, D)).astype(np.float32)
    idx = rng.integers(0, R, (T, B, H, K))
    slots = rng.integers(0, S, B)
    new, old = np.full((T, B, H, D), 7.0, np.float32), np.full((T, B, H, D), -7.0, np.float32)
    kernels.gather_sum(w, idx, new, table[:B])
    kernels.gather_sum_v0(w, idx, old, table[:B])
    np.testing.assert_array_equal(new, old)
    kernels.gather_sum_at(w, idx, new, table, slots)
    kernels.gather_sum_at_v0(w, idx, old, table, slots)
    np.testing.assert_array_equal(new, old)


def test_the_vectorised_gathered_sums_are_bit_for_bit_on_a_learner_sized_read():
    rng = np.random.default_rng(33)
    T, B, H, K, S, R, D = 25, 80, 2, 50, 80, 1100, 32
    w = rng.random((T, B, H, K)).astype(np.float32)
    w[..., -7:] = 0.0
    table = rng.standard_normal((S, R, D)).astype(np.float32)
    idx = rng.integers(0, R, (T, B, H, K))
    slots = rng.permutation(S)[:B]
    new, old = np.empty((T, B, H, D), np.float32), np.empty((T, B, H, D), np.float32)
    kernels.gather_sum_at(w, idx, new, table, slots)
    kernels.gather_sum_at_v0(w, idx, old, table, slots)
    np.testing.assert_array_equal(new, old)
    kernels.gather_sum(w, idx, new, table[slots])
    kernels.gather_sum_v0(w, idx, old, table[slots])
    np.testing.assert_array_equal(new, old)
