"""TVT's share of a training run (``tvt``, ``full``, ``memory``): the one seam the trainer calls.

The trainer's loop is the same for every condition; where an agent has a TVT memory, it hands
these four moments to a :class:`TVTRun`:

- **acting** (:meth:`TVTRun.acting_memory`): the memory the agent reads at the next step, the
  last ``memory_size`` words of each agent stream (:class:`karmic.tvt.harvest.MemoryRing`);
- **each rollout step** (:meth:`TVTRun.record_step`): what the step read (strength, the top rows
  and their stream times), the word it writes, the previous action and reward, and the role tags
  from the step's events, into the shard's ``extra`` columns;
- **each update** (:meth:`TVTRun.learn`): the kept earlier shards (each read back from the lake
  once), the transports into this shard's rewards (``karmic.tvt.transport_rewards``, logged to
  the lake's ``tvt_transports``), the memory bank the learner reads (rebuilt from the words the
  shards stored, so the reads it trains are the rollout's), the trainer's learner on the new
  rewards, and one replay pass over each earlier shard that received value. ``memory`` (Hung et
  al. 2019's RMA) keeps the environment's rewards;
- **each minibatch** (:class:`LearnerMemory`): the rows each sequence may read, and the memory's
  reconstruction and read-strength losses added to the learner's loss.

Resume refills the ring from the shards the lake kept (:meth:`TVTRun.restore`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from karmic.conditions import get_condition
from karmic.training.config import TrainConfig
from karmic.tvt.harvest import (
    MemoryRing,
    extra_shapes,
    memory_bank,
    role_tags,
    stream_times,
    transport_rewards,
)
from karmic.tvt.memory import Candidates, Selection, window_valid
from pipelines.trajectories import load_bank, read_shard, shard_update, transports_table

TOP_ROWS_KEPT = 3  # rows of each read stored per step (the learned transport's candidates)


def stored_selection(off: np.ndarray, taus: np.ndarray, bank_times: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the rollout's reads selected, as rows of the learner's bank: ``off`` (rows, L, H,
    k) int16, how many stream steps before the reading step each row was written (0: no row);
    ``taus`` (rows, L) the steps' stream times; ``bank_times`` (n,) the bank's. Returns (bank
    row (rows, L, H, k) int64, ok bool): a row the bank does not hold is not read."""
    want = taus[:, :, None, None].astype(np.int64) - off
    pos = np.clip(np.searchsorted(bank_times, want), 0, max(len(bank_times) - 1, 0))
    ok = (off > 0) & (bank_times[pos] == want) if len(bank_times) else np.zeros(off.shape, bool)
    return torch.from_numpy(np.where(ok, pos, 0).astype(np.int64)), torch.from_numpy(ok)


class LearnerMemory:
    """The learner's view of the memory bank for one shard: per minibatch of its rows, what each
    step may read (rows written before it, within ``memory_size``) and the memory's losses."""

    def __init__(self, cfg: TrainConfig, bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor], shard) -> None:
        self.cfg = cfg
        self.words, self.unit, self.times = bank  # (S, R, word), normalised, (R,): one per update
        dev = self.words.device  # the run's device: the bank is on it
        self.taus = torch.from_numpy(stream_times(shard)).to(dev)
        self.prev_a = torch.from_numpy(shard.extra["tvt_prev_action"].astype(np.int64)).to(dev)
        self.prev_r = torch.from_numpy(shard.extra["tvt_prev_reward"]).to(dev)
        self.slots = torch.from_numpy(shard.rows["slot"].astype(np.int64)).to(dev)
        self.sel = None
        self._obs_flat: tuple[torch.Tensor, torch.Tensor] | None = None  # (obs, its reconstruction target)
        if cfg.tvt_select == "rollout":  # the acting read's rows, as rows of this bank
            rows, ok = stored_selection(shard.extra["tvt_sel_off"], stream_times(shard), self.times.cpu().numpy())
            # laid out time-major (L, rows, H, k) once, so a minibatch's (L, mb, H, k) is one
            # gather, not a gather and a transposed copy (issue 33; the same values)
            self.sel = (rows.transpose(0, 1).contiguous().to(dev), ok.transpose(0, 1).contiguous().to(dev))

    def memory(self, idx: torch.Tensor) -> tuple:
        if self.sel is not None:  # (whole bank, -, its unit rows, the rows each step reads)
            rows, ok = self.sel
            return self.words, None, self.unit, Selection(rows.index_select(1, idx), ok.index_select(1, idx),
                                                          self.slots[idx])
        valid = window_valid(self.times[None].expand(len(idx), -1), self.taus[idx].T, self.cfg.memory_size)
        slots = self.slots[idx]
        return self.words.index_select(0, slots), valid, self.unit.index_select(0, slots)

    def obs_flat(self, obs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The reconstruction's target: the minibatch's observations (``obs`` (rows, L, ...) uint8,
        the whole shard's), (L, mb, V*V*C) in [0, 1]. Converted once per shard and gathered per
        minibatch (issue 33: the conversion of a transposed uint8 gather took ~5 ms a minibatch),
        time-major so that the gather is the minibatch's layout: the same values, laid out as
        before (contiguous), so the loss sums in the same order."""
        if self._obs_flat is None or self._obs_flat[0] is not obs:  # time-major (L, rows, V*V*C)
            self._obs_flat = (obs, obs.transpose(0, 1).reshape(obs.shape[1], obs.shape[0], -1).float() / 255.0)
        return self._obs_flat[1][:, idx]  # (index_select on dim 1 of a float tensor: ~40x slower on CPU)

    def add_losses(self, loss: torch.Tensor, agent, idx: torch.Tensor, z: torch.Tensor,
                   obs: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the weighted reconstruction and read-strength losses of the minibatch
        ``idx`` (``obs`` the shard's (rows, L, ...) uint8 observations, ``z`` the latents the
        forward pass made)."""
        cfg, tvt = self.cfg, agent.tvt
        pa_, pr_ = self.prev_a[idx].T, self.prev_r[idx].T
        words = tvt.write(z, pa_, pr_)
        obs_flat = self.obs_flat(obs, idx)
        aux = tvt.losses(words, obs_flat, pa_, pr_, agent.last_read.strength, power=cfg.tvt_read_power,
                         tolerance=cfg.tvt_read_tolerance)
        return loss + cfg.tvt_recon_cost * aux["recon"] + cfg.tvt_read_cost * aux["read_reg"]


class TVTRun:
    """The memory, the shard columns and the learner's inputs of one run's TVT agent."""

    def __init__(self, cfg: TrainConfig, slots: int, tvt_module) -> None:
        self.cfg = cfg
        self.S = slots
        self.word = tvt_module.word
        self.device = next(tvt_module.parameters()).device  # the run's: the ring lives there
        self.ring = MemoryRing(slots, cfg.memory_size, tvt_module.word, device=self.device)
        self.k = min(TOP_ROWS_KEPT, tvt_module.top_k)
        self.shapes = extra_shapes(tvt_module.heads, self.k, tvt_module.word)
        if cfg.tvt_select == "rollout":  # the acting read's rows, for the learner (docs/tvt-speed.md)
            self.shapes["tvt_sel_off"] = (np.dtype(np.int16), (tvt_module.heads, min(tvt_module.top_k, cfg.memory_size)))
        self.lagged = cfg.tvt_learn == "lagged" and get_condition(cfg.mode).transport_for(cfg.tvt_mode) != "none"
        # earlier shards whose words cover the memory: the learner's bank and the resume refill
        self.shards_needed = math.ceil(cfg.memory_size / cfg.num_steps)
        self.prev_a = torch.full((slots,), -1, dtype=torch.long, device=self.device)
        self.prev_r = torch.zeros(slots, device=self.device)
        self.shard_cache: dict[int, Any] = {}  # update -> the kept shards as read back once
        self.bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # words, unit, times
        self.transported = 0.0  # |value| moved by the last update's transports
        # none (memory), learned, semantic, both or sham: the condition's (karmic.conditions)
        self.transport = get_condition(cfg.mode).transport_for(cfg.tvt_mode)
        # tvt_learn = lagged: the shards rolled out and not learned yet -> their rewards with the
        # value transported into them so far (oldest first; saved in checkpoints)
        self.pending: dict[int, np.ndarray] = {}
        # earlier shards an update needs: the memory of the shard it learns, which is tvt_lag old
        self.lag = self.shards_needed if cfg.tvt_lag is None else cfg.tvt_lag
        self.history_needed = self.shards_needed + (self.lag if self.lagged else 0)
        # tvt_read_refresh K > 1: the acting read's last full selection (ring rows (S, H, k),
        # their stream times, which of them were read, the stream time of that read); saved in
        # checkpoints, so a resume between two refreshes reads what the uninterrupted run reads
        self.refresh = cfg.tvt_read_refresh
        self.read_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None
        # a yoked condition: its partner's semantic transports, update -> [(slot, Transports)]
        # (karmic.training.lakeio.read_yoke, loaded by the trainer)
        self.yoke: dict[int, list] = {}

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps beyond the lake: the lagged queue and the acting read's last
        full selection (empty for the method of old)."""
        out: dict[str, Any] = {}
        if self.lagged:
            out["pending"] = {int(u): r.copy() for u, r in self.pending.items()}
        if self.refresh > 1 and self.read_cache is not None:
            rows, times, ok, tau = self.read_cache
            out["read_cache"] = {"rows": rows.cpu().numpy(), "times": times.cpu().numpy(),
                                 "ok": ok.cpu().numpy(), "tau": int(tau)}
        return out

    def load_state(self, state: dict[str, Any] | None) -> None:
        self.pending = {int(u): np.asarray(r, np.float32) for u, r in (state or {}).get("pending", {}).items()}
        c = (state or {}).get("read_cache")
        self.read_cache = None if c is None else (
            torch.as_tensor(c["rows"], device=self.device), torch.as_tensor(c["times"], device=self.device),
            torch.as_tensor(c["ok"], device=self.device), int(c["tau"]))

    def restore(self, lake: Path | str, run_id: str, update: int) -> None:
        """Refill the ring from the words of the shards the lake kept before ``update``."""
        words, times = load_bank(lake, run_id, update, self.shards_needed, self.S, self.word)
        self.ring.load(words, times)

    def buffers(self, num_steps: int) -> dict[str, np.ndarray]:
        """The shard's ``extra`` columns, preallocated time-major (T, S, ...)."""
        return {name: np.zeros((num_steps, self.S, *shape), dt) for name, (dt, shape) in self.shapes.items()}

    def refreshes(self, tau: int) -> bool:
        """Whether the acting read at stream time ``tau`` scores the whole ring: every step at
        ``tvt_read_refresh = 1``; else the steps at multiples of K, and any step without a
        selection to reuse (a run's first, a resume from a checkpoint that saved none). Keyed
        to the stream time, not the rollout's step, so a resume keeps the cycle."""
        return self.refresh == 1 or tau % self.refresh == 0 or self.read_cache is None

    def acting_memory(self, tau: int | None = None) -> tuple:
        """The memory the read at stream time ``tau`` sees: the ring (words, valid, unit rows),
        and between two refreshes (``tvt_read_refresh`` > 1) the rows it may select from: the
        last full selection's rows the ring still holds and the rows written since."""
        view = self.ring.view()
        if tau is None or self.refreshes(tau):
            return view
        rows, times, ok, tau_r = self.read_cache
        ring = self.ring
        S, H, k = rows.shape
        # a selected row overwritten since (the ring wrapped) is gone; its slot's new row is
        # among the rows written since
        held = ok & (ring.time.gather(1, rows.view(S, -1)).view(S, H, k) == times)
        new_t = torch.arange(tau_r, tau, device=self.device)[-ring.size:]  # written at tau_r .. tau - 1
        new = (new_t % ring.size).expand(S, H, -1)
        new_ok = (ring.time[:, new_t % ring.size] == new_t)[:, None, :].expand(S, H, -1)
        return (*view, None, Candidates(torch.cat([rows, new], -1), torch.cat([held, new_ok], -1)))

    def keep_selection(self, read, tau: int) -> None:
        """After the acting read at stream time ``tau`` and before the step's write: where that
        read scored the whole ring (``refreshes``), keep its selection for the reads until the
        next refresh (``tvt_read_refresh`` > 1)."""
        if self.refresh > 1 and self.refreshes(tau) and read.index is not None:
            rows = read.index[0]
            times = self.ring.time.gather(1, rows.reshape(rows.shape[0], -1)).view(rows.shape)
            self.read_cache = (rows.clone(), times, read.ok[0].clone(), tau)

    def record_step(self, x: dict[str, np.ndarray], t: int, agent, z: torch.Tensor, action: torch.Tensor,
                    rew: np.ndarray, events, starts: np.ndarray, tau: int, reset_events,
                    B: int, N: int) -> None:
        """Record step t's read into ``x``, write the step's word into the memory at stream time
        ``tau``, tag it from the events (``reset_events``: the episode's reset, whose rigged
        spawns tag its first step, given only there)."""
        ring, read = self.ring, agent.last_read
        st = torch.from_numpy(starts.astype(bool)).to(self.device)
        prev_a = torch.where(st, -1, self.prev_a)
        prev_r = torch.where(st, 0.0, self.prev_r)
        x["tvt_strength"][t] = read.strength[0].cpu().numpy()
        if read.weights.shape[-1]:
            w, rows = read.weights[0].topk(self.k, dim=-1)  # (S, H, k)
            if read.index is not None:  # a sparse read: weights over the rows it selected
                rows = read.index[0].gather(-1, rows)
            x["tvt_top_w"][t] = w.cpu().numpy()
            x["tvt_top_tau"][t] = torch.gather(ring.time[:, None, :].expand(-1, rows.shape[1], -1), 2, rows).cpu().numpy()
        else:
            x["tvt_top_w"][t] = 0.0
            x["tvt_top_tau"][t] = -1
        if "tvt_sel_off" in x:  # before the write: the rows' stream times as the read saw them
            if read.index is not None and read.index.shape[-1]:
                sel_tau = torch.gather(ring.time[:, None, :].expand(-1, read.index.shape[2], -1), 2, read.index[0])
                x["tvt_sel_off"][t] = torch.where(read.ok[0], tau - sel_tau, 0).cpu().numpy()
                self.keep_selection(read, tau)
            else:
                x["tvt_sel_off"][t] = 0
        word = agent.tvt.write(z, prev_a, prev_r)
        ring.write(word, tau)
        x["tvt_word"][t] = word.cpu().numpy()
        x["tvt_prev_action"][t] = prev_a.cpu().numpy()
        x["tvt_prev_reward"][t] = prev_r.cpu().numpy()
        for k, v in role_tags(events, B, N).items():
            x[k][t] = v
        if reset_events is not None:
            x["partner"][t] = role_tags(reset_events, B, N)["partner"]
        self.prev_a, self.prev_r = action.long(), torch.from_numpy(rew.astype(np.float32)).to(self.device)

    def learn(self, trainer, replay, history: list) -> dict[str, float]:
        """One update's learning (see the module docstring); ``trainer`` supplies the learner
        (``learn(shard, rewards)``, ``learn_replay(shard, added)``), the agent and the lake."""
        cfg = self.cfg
        hist = self._kept_shards(history, replay)
        bank_shards = hist[-self.shards_needed:] + [replay]
        if self.transport == "none":
            self.bank = self._bank(bank_shards)
            return trainer.learn(replay, np.asarray(replay.reward, np.float32))
        res = transport_rewards(replay, hist, trainer.agent, cfg, self.transport, self.yoke.get(replay.update))
        log = transports_table(replay, res.parts, trainer.max_steps) if res.parts else None
        if log is not None:  # once per update, however often a resume re-runs it
            trainer.io.write_transports(replay.update, log)
        if self.lagged:
            self.transported = float(np.abs(log.column("amount").to_numpy()).sum()) if log is not None else 0.0
            return self._learn_lagged(trainer, replay, hist, res)
        self.bank = self._bank(bank_shards)
        losses = trainer.learn(replay, res.rewards)
        for sh in hist:
            if sh.update in res.replay:
                losses["replay_pg_loss"] = trainer.learn_replay(sh, res.replay[sh.update])
        self.transported = float(np.abs(log.column("amount").to_numpy()).sum()) if log is not None else 0.0
        return losses

    def _learn_lagged(self, trainer, replay, hist: list, res) -> dict[str, float]:
        """``tvt_learn = lagged``: the new shard joins the queue with its rewards (the env's and
        the transports into itself); the transports into queued shards are added to theirs; the
        shard ``tvt_lag`` updates old leaves the queue and is learned once, off-policy
        (``Trainer.learn(..., off_policy=True)``).
        Value transported into a shard already learned is not learned: its share of this
        update's transported value is reported as ``tvt_late_share``."""
        by_update = {sh.update: sh for sh in hist}
        self.pending[replay.update] = np.asarray(res.rewards, np.float32).copy()
        late = 0.0
        for u, added in res.replay.items():  # time-major (T, S) value added to earlier shard u
            if u in self.pending:
                self.pending[u] += by_update[u].from_time_major(added.astype(np.float32))
            else:
                late += float(np.abs(added).sum())
        out: dict[str, float] = {"tvt_late_share": late / self.transported if self.transported > 0 else 0.0}
        due = replay.update - self.lag
        stale = [u for u in self.pending if u < due]
        if stale:  # cannot happen in a run of one lag; a queue that skipped a shard is a bug
            raise RuntimeError(f"lagged TVT queue holds shards {stale} older than the one due ({due})")
        if due not in self.pending:  # the queue is still filling (the run's first tvt_lag updates)
            return out
        shard = replay if due == replay.update else by_update[due]
        before = [sh for sh in hist if sh.update < due][-self.shards_needed:]
        self.bank = self._bank(before + [shard])
        losses = trainer.learn(shard, self.pending.pop(due), off_policy=True)
        return {**losses, **out, "learned_update": float(due)}

    def _bank(self, shards: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The update's memory bank, normalised once for the learner and every replay pass."""
        words, times = memory_bank(shards, self.S, self.word)
        w = torch.from_numpy(words).to(self.device)
        # contiguous once here: np.concatenate of the shards' (S, T, word) views lays the bank out
        # time-major, and every learner read made a contiguous copy of the whole bank (words and
        # unit rows, ~11 MB each at 1,100 rows) in every minibatch (issue 33; the same values)
        return (w.contiguous(), nn.functional.normalize(w, dim=-1).contiguous(),
                torch.from_numpy(times).to(self.device))

    def learner_memory(self, shard) -> LearnerMemory:
        return LearnerMemory(self.cfg, self.bank, shard)

    def _kept_shards(self, history: list, replay) -> list:
        """The kept earlier shards, each read back from the lake once (when it was written, or
        at resume) and held until retention drops it: an update reads only its new shard."""
        ups = [shard_update(p) for p in history]
        hist = [self.shard_cache[u] if u in self.shard_cache else read_shard(p)
                for u, p in zip(ups, history, strict=True)]
        self.shard_cache = {u: sh for u, sh in zip(ups, hist, strict=True)}
        self.shard_cache[replay.update] = replay
        return hist


__all__ = ["TOP_ROWS_KEPT", "LearnerMemory", "TVTRun"]
