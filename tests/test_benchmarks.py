"""The training benchmark's diagnostics: the stubbed TVT read (``--sections tvt-parts``), and the
code of before issue 33's exact speed-ups (``--sections tvt-speed``, methods ending in 0)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from train_throughput import engineering_of_old, stubbed_read  # noqa: E402

from karmic.training.ppo import TrainConfig, Trainer  # noqa: E402
from karmic.tvt.memory import TVTMemory, window_valid  # noqa: E402


def _read_inputs(T=3, B=2, R=60):
    torch.manual_seed(0)
    mem = torch.tanh(torch.randn(B, R, 32))
    valid = window_valid(torch.arange(R)[None].expand(B, -1), (torch.arange(T) + R)[:, None].expand(-1, B), R)
    return torch.randn(T, B, 64), mem, valid, torch.nn.functional.normalize(mem, dim=-1)


def test_stubbed_read_keeps_the_shapes_and_strengths_and_is_undone():
    m = TVTMemory(64, 16, 8, 27, word=32, top_k=50)
    h, mem, valid, unit = _read_inputs()
    real = m.read(h, mem, valid, unit)
    with stubbed_read():
        stub = m.read(h, mem, valid, unit)
    assert stub.vec.shape == real.vec.shape and not stub.vec.any()
    assert stub.weights.shape == real.weights.shape and stub.index.shape == real.index.shape
    assert torch.equal(stub.strength, real.strength)  # the strengths still run
    again = m.read(h, mem, valid, unit)  # the real read is back
    assert torch.equal(again.vec, real.vec) and again.vec.abs().sum() > 0


def test_a_tvt_run_trains_with_the_read_stubbed(tmp_path):
    cfg = TrainConfig(mode="tvt", grid_size=10, seed=0, num_envs=2, total_steps=10**6,
                      checkpoint_every=10**6, threads=1, precision="fp32", memory_size=150)
    with stubbed_read():
        tr = Trainer(cfg, tmp_path)
        tr.run(stop_after=3, at_boundary=False)
    assert tr.update == 3
    assert TVTMemory.read.__name__ == "read" and TVTMemory.read.__module__ == "karmic.tvt.memory"


def test_bad_options_are_one_line_and_exit_2(monkeypatch, capsys):
    """One case end to end in a fresh interpreter (one line, no traceback, exit 2); the rest through
    the same main() in this process (a fresh torch import each costs seconds)."""
    import subprocess

    import train_throughput

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
    p = subprocess.run([sys.executable, str(script), "--sections", "nope"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip().splitlines()[-1].startswith("train_throughput.py: error:")
    for args in (["--precision", "fp16"], ["--updates", "0"], ["--grids", "x"],
                 ["--sections", "tvt-speed", "--tvt-methods", "fast"],
                 ["--sections", "tvt-speed", "--tvt-warmup", "3"],
                 ["--sections", "tvt-speed", "--tvt-warmup", "3", "--tvt-lag", "3"],
                 ["--sections", "tvt-speed", "--precision", "fp32,bf16"]):
        monkeypatch.setattr(sys, "argv", ["train_throughput.py", *args])
        with pytest.raises(SystemExit) as e:
            train_throughput.main()
        assert e.value.code == 2, args
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("train_throughput.py: error:"), args


def test_the_evaluation_benchmark_plays_the_old_and_the_new_code(tmp_path):
    """benchmarks/evaluate_speed.py: the old run_scenario from git (here HEAD) and this one each
    play a scripted policy alone on the board into scratch lakes."""
    import evaluate_speed as B

    old = B.load_old("HEAD", tmp_path)
    for mod, n in ((old, 1), (B.new, 2)):
        wall, cpu = B.play(mod, tmp_path / f"lake-{n}", ["random"], "solo", n, seed=0)
        assert wall > 0 and cpu > 0


def _train_params(tmp_path, name, old_code, **kw):
    cfg = TrainConfig(mode="tvt", grid_size=10, seed=3, num_envs=2, total_steps=10**6, checkpoint_every=10**6,
                      threads=1, memory_size=150, run_id=f"exact-{name}", **kw)
    with engineering_of_old() if old_code else contextlib.nullcontext():
        tr = Trainer(cfg, tmp_path / name)
        tr.run(stop_after=4, at_boundary=False)
    return {k: v.detach().clone() for k, v in tr.agent.state_dict().items()}


@pytest.mark.parametrize("method", [
    {"precision": "fp32"},  # the method of old: the sparse read (gather_sum), the bank's index_select
    {"precision": "fp32", "tvt_select": "rollout", "tvt_learn": "lagged", "tvt_lag": 1},  # gather_*_at
    {"precision": "bf16", "tvt_select": "rollout", "tvt_learn": "lagged", "tvt_lag": 1},
])
def test_issue_33s_speed_ups_change_no_bit_and_the_code_of_old_is_restored(tmp_path, method):
    """The vectorised gathered sums, the contiguous bank and the reconstruction target converted
    once train to the same parameters, bit for bit, as the code they replaced (4 updates, each
    read and learned); and the benchmark's context puts the code of old back, then takes it away."""
    from karmic.training import tvt_run
    from karmic.tvt.memory import _GatheredAt

    kernels_now, bank_now = dict(_GatheredAt.KERNELS), tvt_run.TVTRun._bank
    new = _train_params(tmp_path, "new", False, **method)
    old = _train_params(tmp_path, "old", True, **method)
    assert _GatheredAt.KERNELS == kernels_now and tvt_run.TVTRun._bank is bank_now
    assert new.keys() == old.keys()
    for k in new:
        assert torch.equal(new[k], old[k]), k


_TRAIN_AND_SAVE = """
import sys
import torch
from karmic.training.device import tune_allocator
from karmic.training.ppo import TrainConfig, Trainer
cfg = TrainConfig(mode=sys.argv[3], grid_size=10, seed=5, num_envs=4, total_steps=10**6, checkpoint_every=10**6,
                  threads=2, memory_size=150, precision=sys.argv[2], run_id="alloc")
tr = Trainer(cfg, sys.argv[1] + "-lake")
tr.run(stop_after=4, at_boundary=False)
torch.save({"tuned": tune_allocator(), "model": tr.agent.state_dict()}, sys.argv[1])
"""


# one case in `make test` (TVT's network holds baseline's, in bf16); the other two under -m slow
@pytest.mark.parametrize("precision,mode", [pytest.param("fp32", "baseline", marks=pytest.mark.slow),
                                            pytest.param("bf16", "baseline", marks=pytest.mark.slow),
                                            ("bf16", "tvt")])
def test_the_allocators_thresholds_change_no_bit(tmp_path, precision, mode):
    """``tune_allocator`` (glibc's mmap / trim thresholds, ``benchmarks/baseline_exact.py``'s
    after) trains to the same parameters, bit for bit, with 2 threads, as glibc's defaults (its
    before), each in a fresh process since the setting is process-wide; ``KARMIC_MALLOC_TUNING=0``
    turns it off."""
    import os
    import subprocess

    got = {}
    for tuned in ("0", "1"):
        out = tmp_path / f"params-{tuned}.pt"
        subprocess.run([sys.executable, "-c", _TRAIN_AND_SAVE, str(out), precision, mode], check=True,
                       # passive OpenMP threads: beside the suite's other worker, spinning ones
                       # made this 10x slower (docs/tvt-speed.md); the bits do not depend on it
                       env={**os.environ, "KARMIC_MALLOC_TUNING": tuned, "OMP_WAIT_POLICY": "PASSIVE"})
        got[tuned] = torch.load(out)
    assert got["0"]["tuned"] is False
    if not sys.platform.startswith("linux"):
        pytest.skip("the thresholds are glibc's")
    assert got["1"]["tuned"] is True
    old, new = got["0"]["model"], got["1"]["model"]
    assert old.keys() == new.keys()
    for k in new:
        assert torch.equal(new[k], old[k]), k


def test_the_tvt_profile_names_real_functions_and_refuses_bad_options(monkeypatch, capsys):
    """benchmarks/tvt_profile.py sums cProfile's entries by (file, function): a part whose function
    was renamed would read 0 s silently, so every part must name a function that exists."""
    import tvt_profile

    root = Path(__file__).resolve().parents[1]
    for part, (suffix, name) in tvt_profile.PARTS.items():
        if suffix == "~":
            continue
        path = next(p for p in (root / "karmic" / suffix, root / suffix) if p.exists())
        assert f"def {name}(" in path.read_text(), part
    for args in (["--modes", "nope"], ["--method", "fast"], ["--updates", "0"]):
        monkeypatch.setattr(sys, "argv", ["tvt_profile.py", *args])
        with pytest.raises(SystemExit) as e:
            tvt_profile.main()
        assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].startswith(
            "tvt_profile.py: error:"), args
