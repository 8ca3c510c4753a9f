"""Training precision: fp32 and bf16 (autocast) runs are deterministic, resume bit for bit, and the
TVT learner reproduces the rollout's reads in both; the sparse learner read equals the dense one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from karmic.training.ppo import (
    BF16_MIN_SPEEDUP,
    TrainConfig,
    Trainer,
    bf16_matmul_speedup,
    choose_precision,
    resolve_precision,
    resumed_trainer,
)
from karmic.tvt.harvest import memory_bank, stream_times
from karmic.tvt.memory import TVTMemory, window_valid

pytest.importorskip("karmic.envs.core", reason="needs the Harvest env (karmic.envs.core)")

PRECISIONS = ["fp32", "bf16"]


def _cfg(mode="baseline", **kw) -> TrainConfig:
    base = dict(mode=mode, grid_size=10, seed=7, num_envs=2, num_steps=20, seq_len=10, hidden=32,
                latent=16, total_steps=2 * 20 * 4, checkpoint_every=1, threads=1, memory_size=30,
                env_overrides={"max_steps": 20})
    base.update(kw)
    return TrainConfig(**base)


def _params(agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}


def _events(lake, run_id):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((lake / "events" / f"run_id={run_id}").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files]).drop(["run_id"])
    return t.sort_by([("episode", "ascending"), ("seq", "ascending")])


def test_auto_picks_bf16_only_where_it_has_the_instructions_and_they_measure_faster():
    calls = []

    def speedup(s):
        return lambda: calls.append(s) or s

    assert choose_precision([], speedup(3.0))[0] == "fp32" and calls == []  # no probe without flags
    assert choose_precision(["avx512_bf16"], speedup(3.0))[0] == "bf16"  # the EPYC: ~3x
    chosen, why = choose_precision(["avx512_bf16"], speedup(0.5))  # the Xeon: ~0.5x
    assert chosen == "fp32" and "0.50x" in why and "avx512_bf16" in why
    assert choose_precision(["amx_bf16"], speedup(BF16_MIN_SPEEDUP))[0] == "bf16"
    assert choose_precision(["amx_bf16"], speedup(BF16_MIN_SPEEDUP - 0.01))[0] == "fp32"
    assert bf16_matmul_speedup(m=64, k=32, n=64, trials=2, reps=1) > 0


def test_auto_is_decided_and_said_once_per_process(monkeypatch, capsys):
    import karmic.training.ppo as ppo

    probes = []
    monkeypatch.setattr(ppo, "_auto_precision", None)
    monkeypatch.setattr(ppo, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    monkeypatch.setattr(ppo, "bf16_matmul_speedup", lambda: probes.append(1) or 2.0)
    assert [resolve_precision("auto") for _ in range(3)] == ["bf16"] * 3
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert len(probes) == 1
    err = capsys.readouterr().err
    assert err.count("precision: bf16") == 1 and "2.00x" in err


def test_the_default_is_fp32_and_never_measures(tmp_path, monkeypatch):
    """Issue 36: two runs of one command train in one precision on any machine."""
    import json

    import karmic.training.ppo as ppo
    from karmic.training.config import TrainConfig as CliConfig

    assert TrainConfig().precision == "fp32" and CliConfig().precision == "fp32"
    monkeypatch.setattr(ppo, "_auto_precision", None)
    monkeypatch.setattr(ppo, "bf16_matmul_speedup", lambda: pytest.fail("the default measured"))
    cfg = TrainConfig(**{k: v for k, v in _cfg(run_id="dflt", total_steps=40).to_dict().items()
                         if k != "precision"})
    Trainer(cfg, tmp_path).run()
    run = json.loads((tmp_path / "runs" / "run_id=dflt" / "run.json").read_text())
    assert run["train_config"]["precision"] == "fp32"
    assert run["precision"] == {"requested": "fp32", "used": "fp32", "why": "asked for (--precision)"}


def test_auto_is_recorded_with_why_and_a_resume_never_switches(tmp_path, monkeypatch):
    import json

    import karmic.training.ppo as ppo

    monkeypatch.setattr(ppo, "_auto_precision", None)
    monkeypatch.setattr(ppo, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    monkeypatch.setattr(ppo, "bf16_matmul_speedup", lambda: 3.0)
    tr = Trainer(_cfg(run_id="auto", precision="auto", total_steps=2 * 20 * 4), tmp_path)
    tr.run(stop_after=2)
    run = json.loads((tmp_path / "runs" / "run_id=auto" / "run.json").read_text())
    assert run["train_config"]["precision"] == "bf16"
    assert run["precision"]["requested"] == "auto" and "3.00x" in run["precision"]["why"]
    # the machine now measures the other way: the resumed run keeps what it recorded
    monkeypatch.setattr(ppo, "_auto_precision", None)
    monkeypatch.setattr(ppo, "bf16_matmul_speedup", lambda: 0.5)
    assert resolve_precision("auto") == "fp32"
    resumed = resumed_trainer("auto", tmp_path)
    assert resumed.cfg.precision == "bf16" and resumed.bf16
    assert "never switches" in resumed.precision_note["why"]
    # a run recorded before precision existed resumes in fp32, the precision it ran in
    assert TrainConfig.from_dict({"mode": "baseline"}).precision == "fp32"
    with pytest.raises(ValueError, match="unknown precision"):
        _cfg(precision="fp16").validate()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("mode", ["baseline", "full"])
def test_same_seed_same_run(tmp_path, precision, mode):
    runs = []
    for rid in ("a", "b"):
        tr = Trainer(_cfg(mode, run_id=rid, precision=precision, total_steps=2 * 20 * 3), tmp_path)
        tr.run()
        runs.append(tr)
    pa_, pb = _params(runs[0].agent), _params(runs[1].agent)
    for k in pa_:
        torch.testing.assert_close(pa_[k], pb[k], rtol=0, atol=0)
    assert _events(tmp_path, "a").equals(_events(tmp_path, "b"))


@pytest.mark.parametrize("mode", ["matchmaker", "full"])
def test_bf16_resume_reproduces_uninterrupted_run(tmp_path, mode):
    full = Trainer(_cfg(mode, run_id="whole", precision="bf16"), tmp_path)
    full.run()
    part = Trainer(_cfg(mode, run_id="split", precision="bf16"), tmp_path)
    part.run(stop_after=2)
    resumed = resumed_trainer("split", tmp_path)
    assert resumed.cfg.precision == "bf16" and resumed.bf16
    resumed.run()
    pa_, pb = _params(full.agent), _params(resumed.agent)
    for k in pa_:
        torch.testing.assert_close(pa_[k], pb[k], rtol=0, atol=0)
    assert _events(tmp_path, "whole").equals(_events(tmp_path, "split"))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_learner_reads_reproduce_the_rollout_in_both_precisions(tmp_path, precision):
    """The learner (sparse read, gradients on) gives the rollout's log-probs from the lake's words."""
    from pipelines.trajectories import read_shard, write_shard

    tr = Trainer(_cfg("full", seed=5, precision=precision, total_steps=2 * 20 * 6), tmp_path)
    tr.run(stop_after=3, at_boundary=False)
    tr.state = tr.agent.initial_state(tr.S)
    tr.rollout()
    shard = read_shard(write_shard(tmp_path, tr.make_shard()))
    hist = [read_shard(p) for p in sorted((tmp_path / "trajectories").glob("*/shard-00000[12].parquet"))]
    words, times = memory_bank(hist + [shard], tr.S, tr.agent.tvt.word)
    taus = torch.from_numpy(stream_times(shard))
    valid = window_valid(torch.from_numpy(times)[None].expand(shard.n_rows, -1), taus.T, 30)
    rows = torch.from_numpy(words)[torch.from_numpy(shard.rows["slot"].astype(np.int64))]
    memory = (rows, valid, torch.nn.functional.normalize(rows, dim=-1))
    with tr.amp():  # gradients on: the learner's path
        logits, _, _, _ = tr.agent(
            torch.from_numpy(shard.obs).transpose(0, 1),
            (torch.from_numpy(shard.h0)[None], torch.from_numpy(shard.c0)[None]),
            torch.from_numpy(shard.start.astype(bool)).transpose(0, 1),
            torch.from_numpy(shard.rows["agent"].astype(np.int64)),
            memory=memory,
        )
    assert tr.agent.last_read.index is not None
    logp = torch.log_softmax(logits.detach().transpose(0, 1), -1).gather(
        -1, torch.from_numpy(shard.action.astype(np.int64))[..., None])[..., 0]
    # bf16: the rollout steps the LSTM cell by cell, the learner runs the fused layer, both in
    # bf16 (8-bit mantissa) with fp32 state, so they agree to bf16 rounding, not to 2e-5
    atol = 2e-5 if precision == "fp32" else 2e-2
    np.testing.assert_allclose(logp.numpy(), shard.logprob, atol=atol)


def test_sparse_read_equals_dense_read_and_its_gradient():
    torch.manual_seed(0)
    m = TVTMemory(16, 8, 8, 27, word=8, heads=2, top_k=5)
    T, B, R = 6, 3, 40
    h = torch.randn(T, B, 16)
    mem = torch.tanh(torch.randn(B, R, 8))
    rt = torch.arange(R)[None].expand(B, -1) - torch.tensor([[0], [10], [37]])
    st = (torch.arange(T) + 35)[:, None].expand(-1, B)
    valid = window_valid(rt, st, 30)  # slot 2 has fewer than top_k rows early on
    valid[0, 0] = False  # no valid row at all
    grads = []
    for grad in (False, True):
        hh = h.clone().requires_grad_()
        m.zero_grad()
        if grad:
            r = m.read(hh, mem, valid, unit=torch.nn.functional.normalize(mem, dim=-1))
            assert r.index is not None
        else:  # the dense read, with a graph: the reference value and gradient
            torch.set_grad_enabled(False)
            try:
                idx_free = m.read(h, mem, valid)
            finally:
                torch.set_grad_enabled(True)
            r = _dense_with_grad(m, hh, mem, valid)
            torch.testing.assert_close(r.vec.detach(), idx_free.vec, rtol=0, atol=0)
        (r.vec * torch.linspace(-1, 1, r.vec.shape[-1])).pow(2).sum().backward()
        grads.append((r.vec.detach(), hh.grad.clone(), m.keys.weight.grad.clone()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _dense_with_grad(m, h, mem, valid):
    """The dense read (as the rollout computes it) with gradients: scatter into all R rows."""
    from torch.nn import functional as F

    from karmic.tvt.memory import Read

    T, B, _ = h.shape
    keys = F.normalize(m.keys(h).view(T, B, m.heads, m.word), dim=-1)
    strength = F.softplus(m.strengths(h))
    cos = torch.einsum("tbhd,brd->tbhr", keys, F.normalize(mem, dim=-1))
    logits = (strength[..., None] * cos).masked_fill(~valid[:, :, None, :], float("-inf"))
    top, idx = logits.topk(min(m.top_k, mem.shape[1]), dim=-1)
    any_valid = valid.any(-1)[:, :, None, None]
    w = torch.softmax(top.masked_fill(~any_valid, 0.0), -1)
    w = torch.where(torch.isfinite(top) & any_valid, w, torch.zeros_like(w))
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    weights = torch.zeros_like(logits).scatter(-1, idx, w)
    return Read(torch.einsum("tbhr,brd->tbhd", weights, mem).reshape(T, B, m.read_dim), weights, strength)


def test_cli_precision_flag_is_recorded(tmp_path):
    import json

    from typer.testing import CliRunner

    from karmic.cli import app

    res = CliRunner().invoke(app, ["train", "--precision", "fp32", "--total-steps", "40", "--lake", str(tmp_path),
                                   "--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10",
                                   "--hidden", "32", "--set", "max_steps=20", "--threads", "1"])
    assert res.exit_code == 0, res.output
    run_id = res.stdout.strip().splitlines()[-1].split("\t")[0]
    run = json.loads((tmp_path / "runs" / f"run_id={run_id}" / "run.json").read_text())
    assert run["train_config"]["precision"] == "fp32"
    res = CliRunner().invoke(app, ["train", "--precision", "fp16", "--lake", str(tmp_path)])
    assert res.exit_code != 0 and "precision" in res.output
