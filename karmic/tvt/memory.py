"""The TVT memory: what an agent writes each step, how it reads, and the losses that shape it.

Hung et al. 2019 (Methods, "Reconstructive memory agent"): each step the agent writes a latent
``z`` (detached) into an external memory and reads it back with content-based read heads.
Here, per agent stream:

- **write**: ``m_t = tanh(W [z_t, onehot(a_{t-1}), r_{t-1}])``, stored detached in row t.
- **read** (before the write of step t, so over rows < t): head i forms a key ``k_i(h_t)`` and
  a strength ``beta_i = softplus(.)``; ``logit_ij = beta_i * cos(k_i, m_j)``; the softmax runs
  over the ``top_k`` best rows only (the rest get weight 0); the read is ``sum_j w_ij m_j``.
  Reads feed the policy and value heads (``features = [h_t, reads_t]``); they do not feed back
  into the LSTM, so a sequence still runs through one fused LSTM call (a simplification of the
  reference, which feeds the reads into the next step's core input).
- **reconstruction**: ``m_t`` is decoded back to the observation, the last action and the last
  reward (MSE, cross-entropy, MSE), so the memory carries *what happened*.
- **read-strength regulariser**: ``mean(relu(beta - tolerance) ** p)`` (Harvest: p = 1,
  tolerance 2 = the transport threshold, cost 1.0; key-to-door: p = 2, tolerance 1, cost 0.001),
  so strengths only pass the transport threshold where reading sharply pays.

Role tags (aggressor / victim / partner / apple context) are not learned: the trainer stores them
beside each row from the events, for semantic role matching (``karmic.tvt.transport``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from karmic.tvt import kernels

READ_HEADS = 2
READ_TOP_K = 50  # rows a read attends to (softmax over the best 50; the rest get 0)
TOP_K = READ_TOP_K
MEMORY_SIZE = 1000  # rows per agent
READ_STRENGTH_TOLERANCE = 2.0  # Harvest: = the transport threshold, strengths above it cost
READ_STRENGTH_COST = 1.0  # linear cost of strength above tolerance (Harvest; key-to-door: see verify.py)
RECON_COST = 1.0


@dataclass
class Read:
    vec: torch.Tensor  # (T, B, H * D) concatenated head reads
    weights: torch.Tensor  # (T, B, H, R) attention over the memory rows (0 outside the top-k)
    strength: torch.Tensor  # (T, B, H)
    index: torch.Tensor | None = None  # sparse reads: (T, B, H, k) rows that ``weights`` covers
    ok: torch.Tensor | None = None  # sparse reads: (T, B, H, k) which of ``index`` are valid rows


@dataclass
class Selection:
    """Rows chosen before the read (``tvt_select = rollout``: the acting read's choice, stored in
    the shard): query (t, b, h) attends to rows ``idx[t, b, h]`` of ``table[slots[b]]`` where
    ``ok``; the read then skips the selection and reads only these rows."""

    idx: torch.Tensor  # (T, B, H, k) int64 rows of the bank
    ok: torch.Tensor  # (T, B, H, k) bool
    slots: torch.Tensor  # (B,) int64: the bank's stream of each sequence


@dataclass
class Candidates:
    """Rows an acting read may select from (``tvt_read_refresh`` K > 1, between two refreshes:
    the rows the last full selection chose plus the rows written since): query (b, h) scores
    rows ``idx[b, h]`` of ``mem[b]`` where ``ok`` and reads the top-k of them."""

    idx: torch.Tensor  # (B, H, C) int64 rows of the ring
    ok: torch.Tensor  # (B, H, C) bool


class TVTMemory(nn.Module):
    """Write embedding, read heads and decoders. Stateless: the memory rows live with the caller."""

    def __init__(self, hidden: int, latent: int, n_actions: int, obs_dim: int,
                 word: int = 32, heads: int = READ_HEADS, top_k: int = TOP_K,
                 memory_size: int = MEMORY_SIZE) -> None:
        super().__init__()
        self.hidden, self.latent, self.n_actions, self.obs_dim = hidden, latent, n_actions, obs_dim
        self.word, self.heads, self.top_k, self.memory_size = word, heads, top_k, memory_size
        self.embed = nn.Linear(latent + n_actions + 1, word)
        self.keys = nn.Linear(hidden, heads * word)
        self.strengths = nn.Linear(hidden, heads)
        nn.init.constant_(self.strengths.bias, 0.0)  # softplus(0) = 0.69: starts below threshold
        self.dec_obs = nn.Linear(word, obs_dim)
        self.dec_act = nn.Linear(word, n_actions)
        self.dec_rew = nn.Linear(word, 1)

    @property
    def read_dim(self) -> int:
        return self.heads * self.word

    def config(self) -> dict:
        return {"word": self.word, "heads": self.heads, "top_k": self.top_k,
                "memory_size": self.memory_size}

    def write(self, z: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor) -> torch.Tensor:
        """z (..., latent), prev_action (...) int, prev_reward (...) -> memory word (..., word)."""
        a = F.one_hot(prev_action.long().clamp(min=0), self.n_actions).to(z.dtype)
        a = a * (prev_action >= 0).to(z.dtype)[..., None]  # -1: no previous action
        return torch.tanh(self.embed(torch.cat([z, a, prev_reward.to(z.dtype)[..., None]], -1)))

    def read(self, h: torch.Tensor, mem: torch.Tensor, valid: torch.Tensor | None,
             unit: torch.Tensor | None = None, selection: Selection | None = None,
             candidates: Candidates | None = None) -> Read:
        """h (T, B, hidden); mem (B, R, word); valid (T, B, R) bool: row j readable at step t;
        ``unit``: ``F.normalize(mem, dim=-1)`` where the caller keeps it (the trainer's ring).

        With ``unit`` given (the trainer's rollout and learner) the same read is computed
        sparsely: the top-k rows are selected without a graph over all R rows, then only those k
        rows are read (``weights`` then holds (T, B, H, k) over the rows in ``index``).
        Otherwise ``weights`` is dense (T, B, H, R). With a ``selection`` (rows chosen before,
        ``mem`` and ``unit`` then the whole bank (S, R, word), ``valid`` unused) only those rows
        are scored and read. With ``candidates`` (an acting read between two refreshes, T = 1;
        ``unit`` given) the top-k is selected among those rows only."""
        T, B, _ = h.shape
        R = mem.shape[1]
        keys = F.normalize(self.keys(h).view(T, B, self.heads, self.word), dim=-1)
        strength = F.softplus(self.strengths(h))  # (T, B, H)
        if R == 0:
            z = h.new_zeros(T, B, self.heads, 0)
            return Read(h.new_zeros(T, B, self.read_dim), z, strength)
        if selection is not None:
            return self._read_selected(keys, strength, mem, unit, selection)
        if candidates is not None:
            return self._read_candidates(keys, strength, mem, unit, candidates)
        if unit is not None:
            return self._read_sparse(keys, strength, mem, valid, unit)
        cos = torch.einsum("tbhd,brd->tbhr", keys, F.normalize(mem, dim=-1))
        logits = (strength[..., None] * cos).masked_fill(~valid[:, :, None, :], float("-inf"))
        k = min(self.top_k, R)
        top, idx = logits.topk(k, dim=-1)
        any_valid = valid.any(-1)[:, :, None, None]  # (T, B, 1, 1)
        w_top = torch.softmax(top.masked_fill(~any_valid, 0.0), -1)
        w_top = torch.where(torch.isfinite(top) & any_valid, w_top, torch.zeros_like(w_top))
        w_top = w_top / w_top.sum(-1, keepdim=True).clamp(min=1e-12)  # renormalise if < k valid
        weights = torch.zeros_like(logits).scatter(-1, idx, w_top)
        vec = torch.einsum("tbhr,brd->tbhd", weights, mem).reshape(T, B, self.read_dim)
        return Read(vec, weights, strength)

    def _read_sparse(self, keys, strength, mem, valid, unit) -> Read:
        """The dense read's value and gradient, without autograd tensors of size R: the rows a
        read attends to get no gradient through their selection, so the selection (the dense
        cosines and their top-k) runs without a graph; the graph covers the k rows read, whose
        products are taken from the bank in place (``karmic.tvt.kernels``). A head's strength is
        positive, so its top-k logits are its top-k cosines. The products sum in another order
        than the dense einsum (equal to ~1e-7)."""
        T, B, H, _ = keys.shape
        k = min(self.top_k, mem.shape[1])
        keys, strength = keys.float(), strength.float()
        unit, mem = unit.float().contiguous(), mem.float().contiguous()
        numba = numba_read(keys)
        gathered = _Gathered.apply if numba else _gathered_torch
        with torch.no_grad():
            cos = torch.einsum("tbhd,brd->tbhr", keys, unit).contiguous()
            if numba:
                idx = torch.empty(T, B, H, k, dtype=torch.int64)
                top_cos = torch.empty(T, B, H, k)
                kernels.topk_valid(cos.numpy(), valid.contiguous().numpy(), idx.numpy(), top_cos.numpy(), k)
            else:  # another device: torch's topk over the valid rows (ties in another order)
                top_cos, idx = cos.masked_fill_(~valid[:, :, None, :], float("-inf")).topk(k, dim=-1)
            del cos
            ok = torch.isfinite(top_cos)  # a valid row (fewer than k valid: the rest weigh 0)
        return self._read_rows(keys, strength, mem, unit, idx, ok, gathered)

    def _read_candidates(self, keys, strength, mem, unit, cand: Candidates) -> Read:
        """``_read_sparse`` with the selection over ``cand``'s rows instead of the whole ring:
        their cosines (``C`` = k plus the rows written since the last refresh, not R), the top-k
        of those, laid out as ``topk_valid`` lays its rows (ascending row, the unread last with
        row 0), so that a read whose candidates hold the full read's top-k is that read, bit for
        bit. On the CPU one numba kernel (``kernels.topk_rows``); on another device torch's ops."""
        T, B, H, _ = keys.shape
        k = min(self.top_k, mem.shape[1])
        keys, strength = keys.float(), strength.float()
        unit, mem = unit.float().contiguous(), mem.float().contiguous()
        numba = numba_read(keys)
        gathered = _Gathered.apply if numba else _gathered_torch
        if numba:  # one kernel: the candidates' cosines and their top-k, in topk_valid's layout
            with torch.no_grad():
                idx = torch.empty(T, B, H, k, dtype=torch.int64)
                top_cos = torch.empty(T, B, H, k)
                kernels.topk_rows(keys.detach().contiguous().numpy(), unit.numpy(), cand.idx.contiguous().numpy(),
                                  cand.ok.contiguous().numpy(), idx.numpy(), top_cos.numpy(), k)
            return self._read_rows(keys, strength, mem, unit, idx, torch.isfinite(top_cos), gathered)
        with torch.no_grad():  # another device: torch's ops (ties in another order)
            cidx = cand.idx.expand(T, *cand.idx.shape).contiguous()  # (T, B, H, C)
            cos = gathered(keys, unit, cidx, "dot").masked_fill_(~cand.ok, float("-inf"))
            top_cos, pos = cos.topk(min(k, cos.shape[-1]), dim=-1)
            idx = cidx.gather(-1, pos)
            ok = torch.isfinite(top_cos)
            if idx.shape[-1] < k:  # fewer candidates than k (cannot happen past the first refresh)
                pad = (*idx.shape[:-1], k - idx.shape[-1])
                idx = torch.cat([idx, idx.new_zeros(pad)], -1)
                ok = torch.cat([ok, ok.new_zeros(pad)], -1)
            order = torch.where(ok, idx, mem.shape[1]).argsort(dim=-1, stable=True)
            ok = ok.gather(-1, order)
            idx = torch.where(ok, idx.gather(-1, order), 0)
        return self._read_rows(keys, strength, mem, unit, idx, ok, gathered)

    def _read_rows(self, keys, strength, mem, unit, idx, ok, gathered) -> Read:
        """The read of the selected rows ``idx`` (``ok``: a row to read): the softmax of their
        logits with the current keys and strengths, and the weighted sum of their words."""
        T, B = keys.shape[:2]
        top = strength[..., None] * gathered(keys, unit, idx, "dot")
        w_top = torch.softmax(top.masked_fill(~ok, float("-inf")).masked_fill(~ok.any(-1, keepdim=True), 0.0), -1)
        w_top = torch.where(ok, w_top, torch.zeros_like(w_top))
        w_top = w_top / w_top.sum(-1, keepdim=True).clamp(min=1e-12)
        vec = gathered(w_top, mem, idx, "sum").reshape(T, B, self.read_dim)
        return Read(vec, w_top, strength, idx, ok)

    def _read_selected(self, keys, strength, mem, unit, sel: Selection) -> Read:
        """``_read_sparse`` on rows selected beforehand: the softmax over the k rows' logits and
        the weighted sum, taken from the bank in place (``kernels.gather_*_at``)."""
        T, B, H, _ = keys.shape
        keys, strength = keys.float(), strength.float()
        unit, mem = unit.float().contiguous(), mem.float().contiguous()
        ok = sel.ok
        gathered = _GatheredAt.apply if numba_read(keys) else _gathered_at_torch
        top = strength[..., None] * gathered(keys, unit, sel.idx, sel.slots, "dot")
        w_top = torch.softmax(top.masked_fill(~ok, float("-inf")).masked_fill(~ok.any(-1, keepdim=True), 0.0), -1)
        w_top = torch.where(ok, w_top, torch.zeros_like(w_top))
        w_top = w_top / w_top.sum(-1, keepdim=True).clamp(min=1e-12)
        vec = gathered(w_top, mem, sel.idx, sel.slots, "sum").reshape(T, B, self.read_dim)
        return Read(vec, w_top, strength, sel.idx, ok)

    def losses(self, words: torch.Tensor, obs_flat: torch.Tensor, prev_action: torch.Tensor,
               prev_reward: torch.Tensor, strength: torch.Tensor, power: int = 1,
               tolerance: float = READ_STRENGTH_TOLERANCE) -> dict[str, torch.Tensor]:
        """Reconstruction of (observation, last action, last reward) and the strength regulariser
        ``mean(relu(strength - tolerance) ** power)``."""
        rec_obs = F.mse_loss(self.dec_obs(words), obs_flat)
        has_a = prev_action >= 0
        logits = self.dec_act(words)[has_a]
        rec_act = F.cross_entropy(logits, prev_action[has_a].long()) if logits.numel() else words.sum() * 0
        rec_rew = F.mse_loss(self.dec_rew(words)[..., 0], prev_reward.to(words.dtype))
        reg = (F.relu(strength - tolerance) ** power).mean()
        return {"recon": rec_obs + rec_act + rec_rew, "read_reg": reg}


class _Gathered(torch.autograd.Function):
    """The k rows' products, taken from ``table`` in place (``karmic.tvt.kernels``), with the
    gradient to ``x``: ``dot`` gives ``out[t, b, h, j] = x[t, b, h] . table[b, idx[t, b, h, j]]``,
    ``sum`` gives ``out[t, b, h] = sum_j x[t, b, h, j] * table[b, idx[t, b, h, j]]``; each one's
    gradient is the other."""

    KERNELS = {"dot": (kernels.gather_dot, kernels.gather_sum), "sum": (kernels.gather_sum, kernels.gather_dot)}

    @staticmethod
    def _run(kernel, x, table, idx):
        out = x.new_empty(idx.shape if kernel is kernels.gather_dot else (*idx.shape[:3], table.shape[-1]))
        kernel(x.detach().contiguous().numpy(), idx.numpy(), out.numpy(), table.numpy())
        return out

    @staticmethod
    def forward(ctx, x, table, idx, kind):
        ctx.save_for_backward(table, idx)
        ctx.kind = kind
        return _Gathered._run(_Gathered.KERNELS[kind][0], x, table, idx)

    @staticmethod
    def backward(ctx, g):
        table, idx = ctx.saved_tensors
        return _Gathered._run(_Gathered.KERNELS[ctx.kind][1], g, table, idx), None, None, None


def numba_read(x: torch.Tensor) -> bool:
    """The sparse read's kernels: numba's for CPU tensors, torch's for any other device (a GPU);
    ``NUMBA_ON_CPU = False`` sends CPU tensors through torch's too (the tests compare the two)."""
    return x.device.type == "cpu" and NUMBA_ON_CPU


NUMBA_ON_CPU = True


def _gathered_torch(x: torch.Tensor, table: torch.Tensor, idx: torch.Tensor, kind: str) -> torch.Tensor:
    """``_Gathered`` in torch ops (autograd's own gradient): the k rows of every query gathered
    into one (T, B, H, k, word) tensor, then the products; the memory a GPU has to spare."""
    b = torch.arange(table.shape[0], device=table.device).view(1, -1, 1, 1)
    rows = table[b, idx]  # (T, B, H, k, word)
    if kind == "dot":
        return (rows * x[..., None, :]).sum(-1)
    return (x[..., None] * rows).sum(-2)


def _gathered_at_torch(x: torch.Tensor, table: torch.Tensor, idx: torch.Tensor, slots: torch.Tensor,
                       kind: str) -> torch.Tensor:
    """``_GatheredAt`` in torch ops, for a GPU (the numba kernels take CPU arrays only)."""
    return _gathered_torch(x, table.index_select(0, slots), idx, kind)


class _GatheredAt(torch.autograd.Function):
    """``_Gathered`` over a whole bank (S, R, word): query b's rows are ``table[slots[b]]``."""

    KERNELS = {"dot": (kernels.gather_dot_at, kernels.gather_sum_at),
               "sum": (kernels.gather_sum_at, kernels.gather_dot_at)}

    @staticmethod
    def _run(kernel, x, table, idx, slots):
        out = x.new_empty(idx.shape if kernel is kernels.gather_dot_at else (*idx.shape[:3], table.shape[-1]))
        kernel(x.detach().contiguous().numpy(), idx.numpy(), out.numpy(), table.numpy(), slots.numpy())
        return out

    @staticmethod
    def forward(ctx, x, table, idx, slots, kind):
        ctx.save_for_backward(table, idx, slots)
        ctx.kind = kind
        return _GatheredAt._run(_GatheredAt.KERNELS[kind][0], x, table, idx, slots)

    @staticmethod
    def backward(ctx, g):
        table, idx, slots = ctx.saved_tensors
        return _GatheredAt._run(_GatheredAt.KERNELS[ctx.kind][1], g, table, idx, slots), None, None, None, None


def window_valid(row_time: torch.Tensor, step_time: torch.Tensor, memory_size: int) -> torch.Tensor:
    """valid[t, b, j]: row j (written at row_time[b, j], -1 = empty) is in memory at step_time[t, b].

    Memory holds the last ``memory_size`` steps before the current one (read before write)."""
    rt = row_time[None]  # (1, B, R)
    st = step_time[..., None]  # (T, B, 1)
    return (rt >= 0) & (rt < st) & (rt >= st - memory_size)
