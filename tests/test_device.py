"""`--device auto|cpu|cuda` (karmic.training.device, issue 37), tested on the CPU.

- resolution: cpu is cpu; auto is cuda where torch sees a GPU (faked here), else cpu, said once;
  cuda on a machine without CUDA is one line and exit 2 at the CLI;
- a run records the device it resolved to (run.json, checkpoints) and a resume keeps it, never
  switching type;
- the TVT read's torch path (the one a GPU takes) equals the numba path on the CPU;
- the sweep's device slots: several cells per GPU, never more than asked, every trained task
  told its device.
The CUDA-only checks are in tests/test_device_cuda.py (marked ``cuda``, skipped without one).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from karmic.cli import app
from karmic.training import device as dv

HAS_CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour of a machine without CUDA")


# --- resolution ------------------------------------------------------------------------------------
def test_cpu_is_cpu_and_bad_names_are_refused():
    assert dv.resolve_device("cpu") == "cpu"
    for bad in ("gpu", "cpu:1", "cuda:x", "", "CUDA"):
        with pytest.raises(dv.DeviceError, match="unknown device"):
            dv.check_name(bad)
    assert dv.check_name("cuda:3") == "cuda:3"


def test_auto_is_cuda_where_torch_sees_a_gpu_else_cpu_said_once(monkeypatch, capsys):
    monkeypatch.setattr(dv, "_said", set())
    monkeypatch.setattr(dv, "cuda_count", lambda: 0)
    assert dv.resolve_device("auto") == "cpu"
    assert dv.resolve_device("auto") == "cpu"
    err = capsys.readouterr().err
    assert err.count("device: cpu") == 1
    monkeypatch.setattr(dv, "cuda_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    assert dv.resolve_device("auto") == "cuda"
    assert "device: cuda (Fake GPU" in capsys.readouterr().err
    assert dv.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(dv.DeviceError, match="has 2 GPU"):
        dv.resolve_device("cuda:2")


def test_cuda_without_cuda_is_a_device_error(monkeypatch):
    monkeypatch.setattr(dv, "cuda_count", lambda: 0)
    with pytest.raises(dv.DeviceError, match="no CUDA"):
        dv.resolve_device("cuda")


@no_cuda
@pytest.mark.parametrize("cmd", [["train", "--num-envs", "2"], ["sweep", "--modes", "baseline"],
                                 ["study", "run", "demo"], ["train", "--device", "tpu"]])
def test_cli_device_cuda_without_cuda_is_one_line_exit_2(tmp_path, cmd):
    args = [*cmd, "--lake", str(tmp_path)] + ([] if "--device" in cmd else ["--device", "cuda"])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert ("no CUDA" if "tpu" not in cmd else "unknown device") in res.output
    assert not any(tmp_path.iterdir())


def test_precision_and_defaults_per_device():
    from karmic.training.ppo import resolve_precision

    assert resolve_precision("auto", "cuda") == dv.CUDA_AUTO_PRECISION == "bf16"
    assert resolve_precision("bf16", "cuda") == "bf16"
    assert dv.device_defaults("cpu")["num_envs"] == 16 == __import__("karmic.training.config").training.config.TrainConfig.num_envs
    assert dv.device_defaults("cuda:1")["num_envs"] == 256


def test_resume_keeps_the_device_type():
    assert dv.check_resume("cpu", None) == "cpu"
    assert dv.check_resume("cpu", "auto") == "cpu"
    assert dv.check_resume("cuda:0", "cuda:1") == "cuda:1"  # a sweep's other GPU
    with pytest.raises(dv.DeviceError, match="trained on cpu"):
        dv.check_resume("cpu", "cuda")
    with pytest.raises(dv.DeviceError, match="trained on cuda"):
        dv.check_resume("cuda", "cpu")


# --- a run records its device; resume keeps it ------------------------------------------------------
TINY = dict(grid_size=10, seed=3, num_envs=2, num_steps=20, seq_len=10, hidden=32, latent=16,
            total_steps=2 * 20 * 2, checkpoint_every=1, threads=1, precision="fp32",
            env_overrides={"max_steps": 20})


def test_run_json_records_the_resolved_device_and_resume_keeps_it(tmp_path, monkeypatch):
    from karmic.training.learners import resumed_trainer
    from karmic.training.ppo import TrainConfig, Trainer
    from pipelines.checkpoints import latest_checkpoint, load_checkpoint

    monkeypatch.setattr(dv, "cuda_count", lambda: 0)
    cfg = TrainConfig(mode="baseline", device="auto", run_id="dev-run", **TINY)
    Trainer(cfg, tmp_path).run(stop_after=1)
    run = json.loads((tmp_path / "runs" / "run_id=dev-run" / "run.json").read_text())
    assert run["train_config"]["device"] == "cpu"
    assert load_checkpoint(latest_checkpoint(tmp_path, "dev-run"))["train_config"]["device"] == "cpu"
    tr = resumed_trainer("dev-run", tmp_path)
    assert tr.cfg.device == "cpu" and tr.device.type == "cpu"
    with pytest.raises(dv.DeviceError, match="trained on cpu"):
        resumed_trainer("dev-run", tmp_path, device="cuda")
    # a run recorded before devices existed ran on the CPU
    assert TrainConfig.from_dict({"mode": "baseline"}).device == "cpu"


@no_cuda
def test_a_cuda_run_does_not_resume_on_a_machine_without_cuda(tmp_path):
    from karmic.training.ppo import TrainConfig, Trainer

    with pytest.raises(dv.DeviceError, match="no CUDA"):
        Trainer(TrainConfig(mode="baseline", device="cuda", run_id="c", **TINY), tmp_path)


# --- the TVT read: torch's path (a GPU's) = numba's on the CPU --------------------------------------
def _read_both(monkeypatch, T=4, B=5, R=120, seed=0):
    from karmic.tvt import memory as tm

    torch.manual_seed(seed)
    mod = tm.TVTMemory(hidden=24, latent=8, n_actions=8, obs_dim=10, word=16, heads=2, top_k=50)
    h = torch.randn(T, B, 24, requires_grad=True)
    mem = torch.randn(B, R, 16)
    valid = torch.rand(T, B, R) < 0.6
    valid[:, 0, 30:] = False  # a stream with fewer valid rows than top_k
    valid[:, 1] = False  # and one with none
    unit = torch.nn.functional.normalize(mem, dim=-1)
    gv = torch.randn(T, B, 32)
    out = {}
    for name, numba in (("numba", True), ("torch", False)):
        monkeypatch.setattr(tm, "NUMBA_ON_CPU", numba)
        mod.zero_grad()
        h.grad = None
        r = mod.read(h, mem, valid, unit)
        ((r.vec * gv).sum() + r.strength.sum()).backward()
        dense = torch.zeros(T, B, 2, R).scatter_add_(-1, r.index, r.weights.detach())
        out[name] = (r.vec.detach(), r.strength.detach(), dense, h.grad.clone(),
                     {k: p.grad.clone() for k, p in mod.named_parameters() if p.grad is not None})
    return out


def test_tvt_read_torch_path_equals_numba_path_on_cpu(monkeypatch):
    out = _read_both(monkeypatch)
    (v1, s1, w1, g1, p1), (v2, s2, w2, g2, p2) = out["numba"], out["torch"]
    torch.testing.assert_close(v2, v1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s2, s1)
    torch.testing.assert_close(w2, w1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6)
    assert p1.keys() == p2.keys() and p1
    for k in p1:
        torch.testing.assert_close(p2[k], p1[k], rtol=1e-4, atol=1e-6)
    assert float(w1[:, 1].abs().sum()) == 0.0  # no valid row: no weight
    assert float(v1.abs().sum()) > 0


@pytest.mark.parametrize("method", [{}, {"tvt_select": "rollout", "tvt_learn": "lagged", "tvt_lag": 1}])
def test_a_tvt_run_trains_through_the_torch_read(tmp_path, monkeypatch, method):
    """The whole TVT seam on the torch path (as on a GPU): rollout reads, the learner's reads,
    transports; parameters close to the numba path's after two updates. In the new method too
    (docs/tvt-speed.md): the learner's reads of the stored selection, from the whole bank."""
    from karmic.training.ppo import TrainConfig, Trainer
    from karmic.tvt import memory as tm

    params = {}
    for numba in (True, False):
        monkeypatch.setattr(tm, "NUMBA_ON_CPU", numba)
        if not numba:  # a GPU's tensors never reach the numba kernels
            for fn in (tm._Gathered, tm._GatheredAt):
                monkeypatch.setattr(fn, "apply", staticmethod(lambda *a: pytest.fail("numba kernel on the torch path")))
        cfg = TrainConfig(mode="tvt", memory_size=30, run_id=f"tvt-{numba}", **TINY, **method)
        tr = Trainer(cfg, tmp_path)
        tr.run(stop_after=2)
        params[numba] = torch.cat([p.detach().flatten() for p in tr.agent.parameters()])
    assert torch.isfinite(params[False]).all()
    np.testing.assert_allclose(params[False].numpy(), params[True].numpy(), rtol=0, atol=5e-3)


# --- several cells per GPU: the sweep's device slots ------------------------------------------------
def test_device_slots_balance_and_cap():
    s = dv.DeviceSlots(["cuda:0", "cuda:1"], per_device=2)
    got = [s.take() for _ in range(5)]
    assert got == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", None]
    assert s.capacity() == 4
    s.give("cuda:1")
    assert s.take() == "cuda:1" and s.take() is None
    cpu = dv.DeviceSlots(["cpu"], None)
    assert [cpu.take() for _ in range(50)] == ["cpu"] * 50 and cpu.capacity() is None
    assert dv.sweep_slots("cuda", workers=16, gpus=1).devices == ["cuda:0"]
    assert dv.sweep_slots("cuda", workers=16, gpus=1).per_device == 16
    assert dv.sweep_slots("cuda", workers=5, gpus=2).per_device == 3
    assert dv.sweep_slots("cuda:1", workers=4, per_device=2).devices == ["cuda:1"]
    with pytest.raises(dv.DeviceError):
        dv.DeviceSlots(["cuda:0"], per_device=0)


class FakeBackend:
    """Runs nothing: records each payload's device and how many tasks each device had at once;
    a task finishes at the next wait, one at a time, so the driver has to refill slots."""

    name = "fake"

    def __init__(self, workers):
        self.workers = workers
        self.running: list = []
        self.peak: dict[str, int] = {}
        self.devices: list = []

    def start(self, max_tasks=None):
        pass

    def describe(self):
        return "fake"

    def submit(self, payload):
        dev = payload.get("config", {}).get("device")
        self.devices.append(dev)
        h = object()
        self.running.append((h, payload, dev))
        now = sum(1 for _, _, d in self.running if d == dev)
        self.peak[dev] = max(self.peak.get(dev, 0), now)
        return h

    def wait(self, handles, timeout):
        h, payload, _ = self.running.pop(0)
        return [(h, {"status": "completed", "run_id": payload.get("run_id") or payload["config"]["run_id"]})]

    def close(self, cancel=False):
        pass


def test_sweep_puts_at_most_per_device_cells_on_each_gpu(tmp_path, monkeypatch):
    from pipelines import sweep as sw

    tasks = sw.plan(["baseline", "tvt"], [10], [1, 2, 3, 4, 5])
    manifest = sw.new_manifest("slots", tasks, {"total_steps": 80}, {})
    manifest["tasks"].append({"key": "random-g10-s1", "run_id": "slots-random", "mode": "random", "grid_size": 10,
                              "seed": 1, "status": "pending", "attempts": 0,
                              "simulate": {"policy": "random", "episodes": 1}})
    monkeypatch.setattr(dv, "cuda_count", lambda: 2)
    be = FakeBackend(workers=8)
    out = sw.run_sweep(manifest, str(tmp_path), be, device="cuda", per_device=3, poll=0)
    trained = [d for d in be.devices if d is not None]
    assert len(trained) == 10 and set(trained) == {"cuda:0", "cuda:1"}
    assert be.devices.count(None) == 1  # the scripted cell takes no device
    assert max(v for k, v in be.peak.items() if k) <= 3
    assert out["last_run"]["device_slots"] == {"cuda:0": 3, "cuda:1": 3}
    assert all(t.get("device") in ("cuda:0", "cuda:1") for t in out["tasks"] if "simulate" not in t)
    # on the CPU: no slots, every task told cpu, the workers alone limit
    manifest = sw.new_manifest("cpu", tasks, {"total_steps": 80}, {})
    be = FakeBackend(workers=4)
    sw.run_sweep(manifest, str(tmp_path), be, device="cpu", poll=0)
    assert be.devices == ["cpu"] * 10 and be.peak["cpu"] <= 4


# --- the prepared GPU check (benchmarks/gpu_check.py) ------------------------------------------------
def test_gpu_check_refuses_bad_options_and_a_machine_without_gpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    for args in (["--sections", "nope"], ["--updates", "0"]):
        p = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), *args],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    if not HAS_CUDA:
        p = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 2 and p.stderr.strip().splitlines() == [
            "gpu_check: torch sees no GPU here; nothing to measure"]
        assert json.loads((tmp_path / "gpu_check.json").read_text())["info"]["gpus"] == 0


def test_gpu_check_reads_the_committed_verdicts():
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    v = gpu_check._verdicts(json.loads((root / "results" / "ablation" / "verdicts.json").read_text()))
    assert "baseline-aggressive-10" in v and all(isinstance(x, str) for x in v.values())
    assert gpu_check._verdicts({"predictions": [{"id": "a", "verdict": "supported"}]}) == {"a": "supported"}


def test_gpu_check_tvt_methods_are_the_study_levels_and_valid_configs():
    """The GPU check times the methods the equivalence study compares, with fields TrainConfig takes."""
    import sys
    from pathlib import Path

    from karmic.training.ppo import TrainConfig

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    assert list(gpu_check.TVT_METHODS) == ["old", "new", "new-r8"]  # the study's levels, then new-r8
    calls = []

    def fake(device, mode, n, precision, updates, grid=10, train=None):
        calls.append((device, mode, precision, train))
        TrainConfig(mode=mode, device="cpu", **(train or {}))  # the fields are real and valid together
        return {"env_steps_per_s": 100.0 if mode == "baseline" else 85.0 if train.get("tvt_read_refresh") else 40.0}

    class A:
        updates = 1

    out = gpu_check.tvt_methods(A(), bench=fake)
    assert calls[0][:3] == ("cuda", "baseline", "bf16") and len(calls) == 1 + 2 * len(gpu_check.TVT_METHODS)
    assert [(r["method"], r["over_baseline"], r["ok"]) for r in out["rows"]] == [
        ("old", 0.4, False), ("old", 0.4, False), ("new", 0.4, False), ("new", 0.4, False),
        ("new-r8", 0.85, True), ("new-r8", 0.85, True)]


def test_studies_and_sweeps_default_to_the_cpu():
    """Measured on an H200 machine (docs/devices.md): 16 cells side by side ran faster with their
    networks on the CPU than sharing the GPU, so `study run` and `sweep` stay on the CPU unless told."""
    from karmic.commands.sweep import DEVICE_OPTION

    assert DEVICE_OPTION.default == "cpu"
