"""The acting read refreshed every K steps (``tvt_read_refresh``, docs/tvt-speed.md): which rows a
read between two refreshes may select, that the machinery changes nothing where the selection
cannot differ, the learner reading the rollout's choice, resume between two refreshes, the option."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from karmic.training.config import DRQNConfig, TrainConfig
from karmic.training.ppo import Trainer, resumed_trainer
from karmic.training.tvt_run import TVTRun
from karmic.tvt import memory
from karmic.tvt.harvest import stream_times
from karmic.tvt.memory import TVTMemory
from pipelines.trajectories import list_shards, read_shard, write_shard

pytest.importorskip("karmic.envs.core", reason="needs the Harvest env (karmic.envs.core)")

NEW = {"tvt_select": "rollout", "tvt_learn": "lagged"}


def _cfg(mode="full", **kw) -> TrainConfig:
    base = dict(mode=mode, grid_size=10, seed=5, num_envs=2, num_steps=20, seq_len=10, hidden=32,
                latent=16, total_steps=2 * 20 * 6, checkpoint_every=4, threads=1, memory_size=60,
                tvt_threshold=0.5, gamma=0.9, env_overrides={"max_steps": 20}, precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


def _tiny(refresh: int = 4):
    """One stream, a 6-row ring, one head reading its top 2, keys = the hidden state itself."""
    mod = TVTMemory(hidden=4, latent=3, n_actions=2, obs_dim=5, word=4, heads=1, top_k=2, memory_size=6)
    with torch.no_grad():
        mod.keys.weight.copy_(torch.eye(4))
        mod.keys.bias.zero_()
        mod.strengths.weight.zero_()
        mod.strengths.bias.fill_(1.0)
    run = TVTRun(_cfg(mode="tvt", memory_size=6, tvt_select="rollout", tvt_read_refresh=refresh), 1, mod)
    return mod, run


def _e(i: int) -> torch.Tensor:
    return (0.5 * torch.eye(4)[i])[None]  # (1 stream, word)


def _read(mod, run, tau, key):
    mem = run.acting_memory(tau)
    return mem, mod.read(torch.tensor(key, dtype=torch.float32).view(1, 1, 4), *mem)


@pytest.mark.parametrize("numba", [True, False])
def test_between_refreshes_a_read_selects_among_the_last_selection_and_the_rows_written_since(numba, monkeypatch):
    """Known answer on a 6-row ring, top 2, K = 4: the read at 4 scores the whole ring; the read
    at 5 sees only its rows and the row written at 4 (the best row of the ring, row 2, is not
    read; the new row 4 is); at 7 a selected row the ring overwrote is gone and its slot's new
    row is a candidate once; at 8 the whole ring again. On numba's kernels and on torch's (the
    path of a GPU)."""
    monkeypatch.setattr(memory, "NUMBA_ON_CPU", numba)
    mod, run = _tiny(4)
    for tau in range(4):
        run.ring.write(_e(tau), tau)  # rows 0..3: e0..e3
    mem, rd = _read(mod, run, 4, [1.0, 0.9, 0.5, 0.0])
    assert len(mem) == 3  # a refresh: the ring as of old
    assert rd.index[0, 0, 0].tolist() == [0, 1] and rd.ok.all()
    run.keep_selection(rd, 4)
    run.ring.write(_e(3), 4)  # row 4: e3 again
    key5 = [0.0, 0.2, 1.0, 0.9]
    mem, rd = _read(mod, run, 5, key5)
    cand = mem[-1]
    assert cand.idx[0, 0].tolist() == [0, 1, 4] and cand.ok[0, 0].tolist() == [True, True, True]
    assert rd.index[0, 0, 0].tolist() == [1, 4] and rd.ok.all()  # not row 2, the ring's best
    full = mod.read(torch.tensor(key5).view(1, 1, 4), *run.ring.view())
    assert sorted(full.index[0, 0, 0].tolist()) == [2, 3]  # what a full read would have read
    # the weights: the softmax of the current logits over the two rows read
    k = torch.nn.functional.normalize(torch.tensor(key5), dim=0)
    beta = torch.nn.functional.softplus(torch.tensor(1.0))
    logits = beta * torch.stack([k[1], k[3]])  # rows 1 (e1) and 4 (e3), unit rows
    torch.testing.assert_close(rd.weights[0, 0, 0], torch.softmax(logits, 0))
    torch.testing.assert_close(rd.vec[0, 0], rd.weights[0, 0, 0] @ torch.cat([_e(1), _e(3)]))
    run.ring.write(_e(0), 5)
    run.ring.write(_e(2), 6)  # wraps: slot 0 (the row of time 0, selected at 4) now holds time 6
    mem, rd = _read(mod, run, 7, [1.0, 0.3, 0.6, 0.1])
    cand = mem[-1]
    live = sorted(i for i, ok in zip(cand.idx[0, 0].tolist(), cand.ok[0, 0].tolist(), strict=True) if ok)
    assert live == [0, 1, 4, 5]  # slot 1 held; slots 4, 5, 0 written since (0 once, as its new row)
    assert rd.index[0, 0, 0].tolist() == [0, 5]  # e2 (time 6) and e0 (time 5)
    assert len(run.acting_memory(8)) == 3  # a multiple of K: the whole ring


def test_refresh_one_never_takes_the_candidate_read():
    mod, run = _tiny(1)
    for tau in range(3):
        run.ring.write(_e(tau), tau)
        assert len(run.acting_memory(tau + 1)) == 3
    assert run.read_cache is None and run.state() == {}


def _digest_run(tmp_path, run_id, **kw):
    tr = Trainer(_cfg(run_id=run_id, keep_trajectories=True, **kw), tmp_path)
    tr.run()
    sel = [read_shard(p).extra["tvt_sel_off"] for p in list_shards(tmp_path, run_id)]
    ev = pq.read_table(tmp_path / "events" / f"run_id={run_id}")
    ev = ev.drop([c for c in ("run_id", "written_at") if c in ev.column_names])
    return tr, sel, ev.sort_by([(c, "ascending") for c in ("episode", "t", "seq") if c in ev.column_names])


def test_where_the_ring_holds_fewer_rows_than_k_a_refreshed_run_is_the_run_of_old(tmp_path, monkeypatch):
    """memory_size 40 < top_k 50: every read reads every row of its window, so reads between
    refreshes (candidates: the last selection and the rows since) must read exactly what a full
    read reads, in its order: K = 3 trains bit for bit as K = 1 (parameters, events, selections)."""
    calls = []
    orig = TVTMemory._read_candidates
    monkeypatch.setattr(TVTMemory, "_read_candidates", lambda self, *a: calls.append(1) or orig(self, *a))
    one, sel1, ev1 = _digest_run(tmp_path, "k1", memory_size=40, tvt_lag=1, **NEW)
    assert not calls
    three, sel3, ev3 = _digest_run(tmp_path, "k3", memory_size=40, tvt_lag=1, tvt_read_refresh=3, **NEW)
    assert len(calls) == 80  # 120 steps, stream times 0..119: those not a multiple of 3
    for (k, a), b in zip(one.agent.state_dict().items(), three.agent.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for a, b in zip(sel1, sel3, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ev1.equals(ev3)


@pytest.mark.parametrize("refresh", [2, 3])
def test_the_learner_reproduces_the_rollouts_log_probs_from_a_refreshed_selection(tmp_path, refresh):
    """memory 80 > top_k 50, so reads between refreshes select among fewer rows than the ring
    holds: the offsets stored in the shard, mapped into the learner's bank, still give the
    learner the rollout's log-probs (same parameters, fp32)."""
    tr = Trainer(_cfg(tvt_select="rollout", memory_size=80, tvt_read_refresh=refresh), tmp_path)
    tr.run(stop_after=4, at_boundary=False)  # the memory (80 rows) spans earlier shards
    tr.rollout()
    shard = read_shard(write_shard(tmp_path, tr.make_shard()))
    off = shard.extra["tvt_sel_off"]
    k = tr.agent.tvt.top_k
    taus = stream_times(shard)
    assert ((off > 0).sum(-1) == np.minimum(k, np.minimum(taus, 80))[..., None]).all()
    hist = [read_shard(p) for p in list_shards(tmp_path, tr.run_id)[:-1]]
    tr.tvt.bank = tr.tvt._bank(hist[-tr.tvt.shards_needed:] + [shard])
    mem = tr.tvt.learner_memory(shard)
    with torch.no_grad():
        logits, _, _, _ = tr.agent(
            torch.from_numpy(shard.obs).transpose(0, 1),
            (torch.from_numpy(shard.h0)[None], torch.from_numpy(shard.c0)[None]),
            torch.from_numpy(shard.start.astype(bool)).transpose(0, 1),
            torch.from_numpy(shard.rows["agent"].astype(np.int64)),
            memory=mem.memory(torch.arange(shard.n_rows)),
        )
    logp = torch.log_softmax(logits.transpose(0, 1), -1).gather(
        -1, torch.from_numpy(shard.action.astype(np.int64))[..., None])[..., 0]
    np.testing.assert_allclose(logp.numpy(), shard.logprob, atol=2e-5)


def test_a_resume_between_two_refreshes_is_the_uninterrupted_run(tmp_path):
    """K = 3 and 20 steps a rollout: the checkpoint at update 4 (stream time 80) falls between
    two refreshes (78 and 81). Resumed from it, the run equals the uninterrupted one bit for bit,
    because the checkpoint keeps the last selection; a resume without it reads otherwise."""
    kw = dict(memory_size=80, tvt_lag=1, tvt_read_refresh=3, total_steps=2 * 20 * 7, **NEW)
    whole = Trainer(_cfg(run_id="whole", **kw), tmp_path)
    whole.run()
    part = Trainer(_cfg(run_id="split", **kw), tmp_path)
    part.run(stop_after=6)
    shutil.copytree(tmp_path, tmp_path.with_name(tmp_path.name + "-copy"))  # the lake as killed
    resumed = resumed_trainer("split", tmp_path)
    assert resumed.update == 4 and 80 % 3 != 0
    rows, _, ok, tau = resumed.tvt.read_cache
    assert tau == 78 and ok.any()
    resumed.run()
    for (k, a), b in zip(whole.agent.state_dict().items(), resumed.agent.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    forgot = resumed_trainer("split", tmp_path.with_name(tmp_path.name + "-copy"))
    assert forgot.update == 4
    forgot.tvt.read_cache = None  # as a checkpoint without the selection would resume
    forgot.run()
    assert any(not torch.equal(a, b) for a, b in zip(whole.agent.state_dict().values(),
                                                      forgot.agent.state_dict().values(), strict=True))


def test_the_option_round_trips_through_run_json_resume_and_the_cli(tmp_path):
    from typer.testing import CliRunner

    from karmic.cli import app

    cfg = _cfg(run_id="opts", tvt_read_refresh=4, total_steps=2 * 20 * 4, checkpoint_every=1, **NEW)
    Trainer(cfg, tmp_path / "a").run(stop_after=2)
    meta = json.loads(next((tmp_path / "a" / "runs").rglob("run.json")).read_text())
    assert TrainConfig.from_dict(meta["train_config"]).tvt_read_refresh == 4
    resumed = resumed_trainer("opts", tmp_path / "a")
    assert resumed.cfg.tvt_read_refresh == 4 and resumed.tvt.refresh == 4 and resumed.tvt.read_cache is not None
    old = {k: v for k, v in meta["train_config"].items() if k != "tvt_read_refresh"}
    assert TrainConfig.from_dict(old).tvt_read_refresh == 1  # runs recorded before the field
    tiny = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10", "--hidden", "32",
            "--set", "max_steps=20", "--threads", "1", "--memory-size", "40", "--lake", str(tmp_path / "b")]
    res = CliRunner().invoke(app, ["train", "--mode", "tvt", "--total-steps", "80", "--tvt-select", "rollout",
                                   "--tvt-read-refresh", "4", *tiny])
    assert res.exit_code == 0, res.output
    meta = json.loads(next((tmp_path / "b" / "runs").rglob("run.json")).read_text())["train_config"]
    assert meta["tvt_read_refresh"] == 4
    res = CliRunner().invoke(app, ["train", "--mode", "tvt", "--tvt-read-refresh", "2", *tiny])
    assert res.exit_code == 2 and "Traceback" not in res.output and "--tvt-select" in res.output


@pytest.mark.parametrize("kw", [{"tvt_read_refresh": 0}, {"tvt_read_refresh": -2},
                                {"tvt_read_refresh": 2, "tvt_select": "learner"}])
def test_bad_refresh_values_are_refused_in_one_line(kw):
    with pytest.raises(ValueError, match="tvt_read_refresh") as e:
        _cfg(**kw).validate()
    assert "\n" not in str(e.value)


def test_drqn_refuses_a_refreshed_read():
    with pytest.raises(ValueError, match="tvt_read_refresh"):
        DRQNConfig(mode="tvt", tvt_select="rollout", tvt_read_refresh=2).validate()


def test_topk_rows_selects_as_topk_valid_does_over_the_same_rows():
    """The candidate kernel, given every valid row of the ring as its candidates (shuffled, some
    invalid), picks the rows ``topk_valid`` picks over the whole ring, in its layout."""
    from karmic.tvt import kernels

    rng = np.random.default_rng(3)
    T, B, H, R, D, k = 1, 3, 2, 40, 8, 10
    x = rng.standard_normal((T, B, H, D)).astype(np.float32)
    table = rng.standard_normal((B, R, D)).astype(np.float32)
    valid = rng.random((T, B, R)) > 0.3
    logits = np.einsum("tbhd,brd->tbhr", x, table).astype(np.float32)
    want_i, want_v = np.empty((T, B, H, k), np.int64), np.empty((T, B, H, k), np.float32)
    kernels.topk_valid(logits, valid, want_i, want_v, k)
    cand = np.stack([np.stack([rng.permutation(R) for _ in range(H)]) for _ in range(B)])  # (B, H, R)
    ok = np.take_along_axis(np.broadcast_to(valid[0][:, None, :], (B, H, R)), cand, -1).copy()
    got_i, got_v = np.empty_like(want_i), np.empty_like(want_v)
    kernels.topk_rows(x, table, cand, ok, got_i, got_v, k)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_v, want_v, atol=1e-5)  # the dots summed in another order
    few = ok & (cand < 12)  # fewer valid candidates than k: the rest value -inf and row 0
    kernels.topk_rows(x, table, cand, few, got_i, got_v, k)
    n = few.sum(-1)
    for b in range(B):
        for h in range(H):
            assert (got_i[0, b, h, n[b, h]:] == 0).all() and np.isneginf(got_v[0, b, h, n[b, h]:]).all()
            assert list(got_i[0, b, h, :n[b, h]]) == sorted(cand[b, h][few[b, h]])
