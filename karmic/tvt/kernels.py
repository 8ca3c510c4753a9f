"""numba kernels of the memory's sparse read: the top-k selection and the gathered products.

A read attends to the ``top_k`` best of about a thousand rows, for every step, agent and head of a
learner minibatch (25 x 80 x 2 queries over 1,100 rows). ``torch.topk`` on that shape runs at
14-17 us a query on one core of an AMD EPYC, and gathering the k rows of every query into one
(T, B, H, k, word) tensor before the products writes 25 MB per minibatch. These kernels select
with one pass over each query's logits and a short one over its candidates (the k-th largest of
16-row block maxima bounds the k-th largest logit and leaves about 90 of 1,100 rows), and take the
products from the bank in place (``benchmarks/tvt_read.py``: the selection 2-3.5x ``torch.topk``).

- ``topk_valid(logits, valid, idx, val, k)``: per query, the rows of the k largest valid logits
  (the same set as ``torch.topk`` where the values differ; of tied values, the lower rows), in
  ascending row order, with their logits; a query with fewer than k valid rows fills the rest
  with value -inf and row 0.
- ``topk_rows(x, table, cand, cand_ok, idx, val, k)``: the same selection among a few candidate
  rows per query, scored here (the acting read between two refreshes, ``tvt_read_refresh``).
- ``gather_dot(x, idx, out, table)``: ``out[q, j] = x[q] . table[b(q), idx[q, j]]``.
- ``gather_sum(w, idx, out, table)``: ``out[q] = sum_j w[q, j] * table[b(q), idx[q, j]]``.
  Each is the other's gradient, so the two make the read's autograd (``karmic.tvt.memory``).

Queries are laid out (T, B, H) as the read's tensors are; ``b(q)`` is the query's B index. The
kernels run on the calling thread: split over two threads they measured no faster in training,
where torch's own OpenMP threads still hold the other core after each op.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 16  # rows per block of the selection's bound


@njit(cache=True)
def _kth_largest(vals, n, k):  # pragma: no cover - compiled
    """The k-th largest (1-based, 1 <= k <= n) of the finite ``vals[:n]``, by bisection on the
    value: each step is one count over ``vals`` (which vectorises), and it stops once exactly k
    values lie at or above the cut, or the cut cannot move (then the k-th largest is tied)."""
    lo, hi = vals[0], vals[0]
    for i in range(1, n):
        lo = min(lo, vals[i])
        hi = max(hi, vals[i])
    if n == k:
        return lo
    # invariant: at least k values >= lo, fewer than k values >= hi (or hi is the maximum)
    while True:
        mid = lo + (hi - lo) * np.float32(0.5)
        if mid <= lo or mid >= hi:
            break
        c = 0
        for i in range(n):
            c += vals[i] >= mid
        if c >= k:
            lo = mid
            if c == k:
                break
        else:
            hi = mid
    # the k-th largest is the least value at or above lo
    best = np.float32(np.inf)
    for i in range(n):
        if vals[i] >= lo and vals[i] < best:
            best = vals[i]
    return best


@njit(cache=True, inline="always")
def _emit_top(vals, rows, n, k, out_v, out_i):  # pragma: no cover - compiled
    """Of the ``n`` candidates ``vals[:n]`` (rows ``rows[:n]``, ascending), the k largest into
    ``out_v`` / ``out_i`` in row order: the rows above the k-th largest value, then its ties from
    the lowest row; fewer than k: the rest value -inf and row 0."""
    neg = np.float32(-np.inf)
    tau, ties = neg, 0
    if n > k:
        tau = _kth_largest(vals, n, k)
        ties = k
        for c in range(n):
            ties -= vals[c] > tau
    o = 0
    for c in range(n):
        v = vals[c]
        if v > tau or (v == tau and ties > 0):
            if v == tau:
                ties -= 1
            out_v[o] = v
            out_i[o] = rows[c]
            o += 1
    for c in range(o, k):
        out_v[c] = neg
        out_i[c] = 0


@njit(cache=True)
def topk_valid(logits, valid, idx, val, k):  # pragma: no cover - compiled
    T, B, H, R = logits.shape
    nb = (R + BLOCK - 1) // BLOCK
    bmax = np.empty(nb, np.float32)
    live = np.empty(nb, np.float32)
    cand_v = np.empty(R, np.float32)
    cand_i = np.empty(R, np.int64)
    neg = np.float32(-np.inf)
    for t in range(T):
        for b in range(B):
            ok = valid[t, b]
            for h in range(H):
                row = logits[t, b, h]
                out_i = idx[t, b, h]
                out_v = val[t, b, h]
                # a bound on the k-th largest: the k-th largest of the block maxima (k blocks
                # have a row at least that large); fewer than k blocks with a valid row: no bound
                nbv = 0
                for blk in range(nb):
                    m = neg
                    for j in range(blk * BLOCK, min(R, (blk + 1) * BLOCK)):
                        m = max(m, row[j] if ok[j] else neg)
                    bmax[blk] = m
                    live[nbv] = m
                    nbv += m > neg
                theta = _kth_largest(live, nbv, k) if nbv >= k else neg
                n = 0
                for blk in range(nb):
                    if bmax[blk] >= theta and bmax[blk] > neg:
                        for j in range(blk * BLOCK, min(R, (blk + 1) * BLOCK)):
                            cand_v[n] = row[j]
                            cand_i[n] = j
                            n += ok[j] and row[j] >= theta
                _emit_top(cand_v, cand_i, n, k, out_v, out_i)


@njit(cache=True, fastmath={"reassoc", "contract"})
def topk_rows(x, table, cand, cand_ok, idx, val, k):  # pragma: no cover - compiled
    """The acting read between two refreshes (``tvt_read_refresh``): per query (t, b, h), the
    dots of ``x[t, b, h]`` with the candidate rows ``table[b, cand[b, h, c]]`` where
    ``cand_ok[b, h, c]``, and of those the rows of the k largest, laid out as ``topk_valid``
    lays its own (ascending row, of tied values the lower rows, fewer than k: the rest value
    -inf and row 0). Candidates are few (k plus the rows written since the refresh), so the
    rows are sorted by insertion and the k-th largest found by ``_kth_largest``; one call in
    place of the torch ops' ten (their per-op overhead was most of the read's time)."""
    T, B, H, D = x.shape
    C = cand.shape[-1]
    rows = np.empty(C, np.int64)
    vals = np.empty(C, np.float32)
    for t in range(T):
        for b in range(B):
            for h in range(H):
                xv = x[t, b, h]
                n = 0
                for c in range(C):
                    if cand_ok[b, h, c]:
                        r = cand[b, h, c]
                        s = np.float32(0.0)
                        for d in range(D):
                            s += xv[d] * table[b, r, d]
                        # insertion by row, so the rows come out ascending
                        i = n
                        while i > 0 and rows[i - 1] > r:
                            rows[i] = rows[i - 1]
                            vals[i] = vals[i - 1]
                            i -= 1
                        rows[i] = r
                        vals[i] = s
                        n += 1
                _emit_top(vals, rows, n, k, val[t, b, h], idx[t, b, h])


@njit(cache=True, fastmath={"reassoc", "contract"})
def gather_dot(x, idx, out, table):  # pragma: no cover - compiled
    T, B, H, K = idx.shape
    D = x.shape[-1]
    for t in range(T):
        for b in range(B):
            tb = table[b]
            for h in range(H):
                xv = x[t, b, h]
                iv = idx[t, b, h]
                ov = out[t, b, h]
                for i in range(K):
                    r = tb[iv[i]]
                    s = np.float32(0.0)
                    for d in range(D):
                        s += xv[d] * r[d]
                    ov[i] = s


@njit(cache=True, fastmath={"reassoc", "contract"})
def gather_sum(w, idx, out, table):  # pragma: no cover - compiled
    """``out[t, b, h] = sum_i w[t, b, h, i] * table[b, idx[t, b, h, i]]``: per element of ``out``
    the products added in the order of i, as ``gather_sum_v0``; indexed in full rather than
    through per-query views, which LLVM vectorises over the word (2-2.5x faster, the same bits:
    tests/test_tvt_kernels.py)."""
    T, B, H, K = idx.shape
    D = table.shape[-1]
    for t in range(T):
        for b in range(B):
            for h in range(H):
                for d in range(D):
                    out[t, b, h, d] = 0.0
                for i in range(K):
                    c = w[t, b, h, i]
                    if c != 0.0:
                        j = idx[t, b, h, i]
                        for d in range(D):
                            out[t, b, h, d] += c * table[b, j, d]


@njit(cache=True, fastmath={"reassoc", "contract"})
def gather_dot_at(x, idx, out, table, slots):  # pragma: no cover - compiled
    """``gather_dot`` with query b's rows in ``table[slots[b]]``: the learner's whole bank
    (S, R, word) read in place, without a per-minibatch copy of each sequence's rows."""
    T, B, H, K = idx.shape
    D = x.shape[-1]
    for t in range(T):
        for b in range(B):
            tb = table[slots[b]]
            for h in range(H):
                xv = x[t, b, h]
                iv = idx[t, b, h]
                ov = out[t, b, h]
                for i in range(K):
                    r = tb[iv[i]]
                    s = np.float32(0.0)
                    for d in range(D):
                        s += xv[d] * r[d]
                    ov[i] = s


@njit(cache=True, fastmath={"reassoc", "contract"})
def gather_sum_at(w, idx, out, table, slots):  # pragma: no cover - compiled
    """``gather_sum`` with query b's rows in ``table[slots[b]]``."""
    T, B, H, K = idx.shape
    D = table.shape[-1]
    for t in range(T):
        for b in range(B):
            s = slots[b]
            for h in range(H):
                for d in range(D):
                    out[t, b, h, d] = 0.0
                for i in range(K):
                    c = w[t, b, h, i]
                    if c != 0.0:
                        j = idx[t, b, h, i]
                        for d in range(D):
                            out[t, b, h, d] += c * table[s, j, d]


# the loops of old (issue 33 replaced them): the benchmark's before, the tests' reference
@njit(cache=True, fastmath={"reassoc", "contract"})
def gather_sum_v0(w, idx, out, table):  # pragma: no cover - compiled
    """``gather_sum`` as first written (per-query views; not vectorised): kept for the
    before/after benchmark (benchmarks/train_throughput.py --sections tvt-speed) and the tests' bitwise check."""
    T, B, H, K = idx.shape
    D = table.shape[-1]
    for t in range(T):
        for b in range(B):
            tb = table[b]
            for h in range(H):
                wv = w[t, b, h]
                iv = idx[t, b, h]
                ov = out[t, b, h]
                for d in range(D):
                    ov[d] = 0.0
                for i in range(K):
                    c = wv[i]
                    if c != 0.0:
                        r = tb[iv[i]]
                        for d in range(D):
                            ov[d] += c * r[d]


@njit(cache=True, fastmath={"reassoc", "contract"})
def gather_sum_at_v0(w, idx, out, table, slots):  # pragma: no cover - compiled
    """``gather_sum_at`` as first written (see ``gather_sum_v0``)."""
    T, B, H, K = idx.shape
    D = table.shape[-1]
    for t in range(T):
        for b in range(B):
            tb = table[slots[b]]
            for h in range(H):
                wv = w[t, b, h]
                iv = idx[t, b, h]
                ov = out[t, b, h]
                for d in range(D):
                    ov[d] = 0.0
                for i in range(K):
                    c = wv[i]
                    if c != 0.0:
                        r = tb[iv[i]]
                        for d in range(D):
                            ov[d] += c * r[d]


__all__ = ["gather_dot", "gather_dot_at", "gather_sum", "gather_sum_at", "gather_sum_at_v0", "gather_sum_v0",
           "topk_rows", "topk_valid"]
