"""`--device cuda` on a GPU (issue 37): marked ``cuda``, skipped cleanly where torch sees none.

Run on a GPU machine with ``pytest -m cuda tests/test_device_cuda.py`` (benchmarks/gpu_check.sh
runs them first). What they hold a GPU run to:

- same seed, same device: the same events and parameters, bit for bit (a run twice, and a run
  stopped at a checkpoint and resumed, against one straight through);
- the TVT read on the GPU (torch's path) equals the numba path on the CPU;
- every condition trains on the GPU, in fp32 and bf16, and the network really is there.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY = dict(grid_size=10, num_envs=4, num_steps=20, seq_len=10, hidden=32, latent=16,
            total_steps=4 * 20 * 4, checkpoint_every=2, threads=1, precision="fp32",
            env_overrides={"max_steps": 20}, device="cuda", memory_size=30)


def _params(agent) -> torch.Tensor:
    return torch.cat([p.detach().flatten().cpu() for p in agent.parameters()])


def _events(lake, run_id):
    import duckdb

    f = str(lake / "events" / f"run_id={run_id}" / "*.parquet")
    return duckdb.sql(f"select * exclude (run_id) from read_parquet('{f}') order by episode, t, seq").fetchall()


@pytest.mark.parametrize("mode", ["baseline", "tvt", "full"])
def test_same_seed_same_gpu_same_run(tmp_path, mode):
    from karmic.training.ppo import TrainConfig, Trainer

    out = []
    for i in range(2):
        cfg = TrainConfig(mode=mode, seed=7, run_id=f"{mode}-{i}", **TINY)
        tr = Trainer(cfg, tmp_path)
        assert next(tr.agent.parameters()).is_cuda
        tr.run()
        out.append((_params(tr.agent), _events(tmp_path, cfg.run_id)))
    assert torch.equal(out[0][0], out[1][0])
    assert out[0][1] == out[1][1]


def test_resume_on_the_gpu_reproduces_a_straight_run(tmp_path):
    from karmic.training.learners import resumed_trainer
    from karmic.training.ppo import TrainConfig, Trainer

    straight = Trainer(TrainConfig(mode="tvt", seed=3, run_id="a", **TINY), tmp_path)
    straight.run()
    part = Trainer(TrainConfig(mode="tvt", seed=3, run_id="b", **TINY), tmp_path)
    part.run(stop_after=2)
    rest = resumed_trainer("b", tmp_path)
    assert rest.cfg.device == "cuda"
    rest.run()
    assert torch.equal(_params(straight.agent), _params(rest.agent))


def test_tvt_read_on_the_gpu_equals_numba_on_the_cpu():
    from karmic.tvt import memory as tm

    torch.manual_seed(0)
    T, B, R = 5, 8, 300
    mod = tm.TVTMemory(hidden=24, latent=8, n_actions=8, obs_dim=10, word=16, heads=2, top_k=50)
    h = torch.randn(T, B, 24)
    mem = torch.randn(B, R, 16)
    valid = torch.rand(T, B, R) < 0.7
    valid[:, 0, 20:] = False
    out = {}
    for dev in ("cpu", "cuda"):
        m = mod.to(dev)
        hd = h.detach().clone().to(dev).requires_grad_(True)  # a leaf on each device
        r = m.read(hd, mem.to(dev), valid.to(dev), torch.nn.functional.normalize(mem, dim=-1).to(dev))
        r.vec.square().sum().backward()
        dense = torch.zeros(T, B, 2, R, device=dev).scatter_add_(-1, r.index, r.weights.detach())
        out[dev] = (r.vec.detach().cpu(), dense.cpu(), hd.grad.cpu())
    for a, b in zip(out["cpu"], out["cuda"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["baseline", "matchmaker", "tvt", "full", "memory"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_condition_trains_on_the_gpu(tmp_path, mode, precision):
    from karmic.training.ppo import TrainConfig, Trainer

    tr = Trainer(TrainConfig(mode=mode, seed=1, run_id="r", **{**TINY, "precision": precision}), tmp_path)
    info = tr.run(stop_after=2)
    assert torch.isfinite(_params(tr.agent)).all()
    assert info["global_step"] > 0 and tr.cfg.precision == precision
