"""Where a run's network acts and learns: ``--device auto|cpu|cuda`` (docs/devices.md).

The environment always steps on the CPU (numba kernels); the network's acting and learning run on
the run's device. ``auto`` is CUDA where torch sees a GPU, else the CPU, said once per process on
stderr; a run records the device it resolved to (``TrainConfig.device``, run.json and every
checkpoint), so a resume keeps it. ``cuda`` on a machine without CUDA is a ``DeviceError``: one
line, exit 2 at the CLI.

Per device, what a run takes when the user does not say (``device_defaults``):

- ``num_envs``: CPU 16 (as ever); CUDA 256. On an NVIDIA H200 (issue 37, 2026-12-04) an acting
  step for all agents is launch-bound: 1.3 ms at 16 envs (12,300 env-steps/s), 40,500 env-steps/s
  at 64, 75,600 at 256, 142,500 at 1,024 (10x10). 256 is the first size past the issue's target
  of 40,000 env-steps/s for acting alone with room for learning; more envs per update also change
  the experiment (more data per update at one learning rate), so studies keep their own
  ``num_envs`` (TrainConfig's 16 unless the study sets it) and fill a GPU with cells side by side.
- the learner's minibatch: ``num_minibatches`` stays 4 on both, so a minibatch grows with
  ``num_envs``: at 256 envs 16x the CPU's. On the H200 a minibatch of 80 sequences x 25 steps
  took 4.9 ms and 1,280 sequences 10 ms: the GPU is far from busy at the CPU's size.
- precision (``auto``): on the CPU, ``karmic.training.ppo.choose_precision`` (bf16 where the CPU
  has bf16 instructions and its matmuls measure faster); on CUDA, bf16 (``CUDA_AUTO_PRECISION``),
  because it measured faster end to end: one run at 10x10 with 256 envs on the H200, in one script
  (``benchmarks/gpu_check.py``, results/gpu-check/), baseline 41,600 env-steps/s in bf16 against
  27,600-32,500 in fp32 (1.28-1.51x), tvt 7,550 against 6,620 (1.14x). ``--precision fp32`` on
  CUDA is real fp32: TF32 is off for matmuls and convolutions.

Determinism: the same seed on the same device gives the same run. CPU runs are the code path of
before, bit for bit (the golden digests). On CUDA, ``configure`` asks for deterministic kernels
(cuDNN deterministic, ``torch.use_deterministic_algorithms`` with a warning where an op has none,
and cuBLAS's fixed workspace); results differ from the CPU's in the last bits, not in kind.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

DEVICES = ("auto", "cpu", "cuda")
CUDA_AUTO_PRECISION = "bf16"
DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"num_envs": 16, "num_minibatches": 4},
    "cuda": {"num_envs": 256, "num_minibatches": 4},
}
_DEVICE_RE = re.compile(r"(auto|cpu|cuda)(:\d+)?")
_said: set[str] = set()  # what auto chose, said once per process


class DeviceError(ValueError):
    """A device this machine cannot give (one line for the user)."""


def check_name(name: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else is a DeviceError."""
    m = _DEVICE_RE.fullmatch(str(name))
    if m is None or (m.group(2) and m.group(1) != "cuda"):
        raise DeviceError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    return str(name)


def cuda_count() -> int:
    """GPUs torch can use here (0 with torch's CPU build or no driver)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str, say: bool = True) -> str:
    """``auto`` -> ``cuda`` where torch sees a GPU, else ``cpu`` (said once per process on stderr);
    ``cuda`` / ``cuda:N`` must exist here (else DeviceError); ``cpu`` is ``cpu``."""
    check_name(name)
    if name == "cpu":
        return name
    import torch

    n = cuda_count()
    if name == "auto":
        dev = "cuda" if n else "cpu"
        if say and dev not in _said:
            _said.add(dev)
            what = torch.cuda.get_device_name(0) if n else "torch sees no GPU"
            print(f"device: {dev} ({what}; --device cpu|cuda to choose)", file=sys.stderr)
        return dev
    if not n:
        why = "torch is its CPU build" if torch.version.cuda is None else "no GPU is visible"
        raise DeviceError(f"--device {name}: this machine has no CUDA ({why}); use --device cpu or auto")
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= n:
        raise DeviceError(f"--device {name}: this machine has {n} GPU(s) (cuda:0 .. cuda:{n - 1})")
    return name


def device_type(name: str) -> str:
    """``cuda:1`` -> ``cuda``."""
    return str(name).split(":")[0]


def device_defaults(device: str) -> dict[str, Any]:
    """What a run on a resolved ``device`` takes when the user does not say (module docstring)."""
    return dict(DEFAULTS[device_type(device)])


# glibc's mallopt parameters (malloc.h) and the values ``tune_allocator`` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 << 20
_allocator_tuned: bool | None = None  # None: not tried yet in this process


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only; once per process; False where not done).

    A learner's update allocates and frees the same few-MB tensors (activations, gradients,
    bf16 casts) in every minibatch. With glibc's defaults, a block above its (dynamic) mmap
    threshold is mapped fresh and unmapped on free, and free memory at the heap's top is handed
    back, so the next minibatch faults every page in again: 20,000-79,000 page faults and
    0.05-0.20 s of system time in 6 learner passes of ``baseline`` at 10x10, and the learner
    took 1.04x the CPU time it takes with them (docs/tvt-speed.md, "Exact speed-ups"; end to end the
    gain is within a shared machine's noise). With a fixed 32 MiB mmap threshold and 256 MiB trim
    threshold those blocks are reused from the heap. What is computed is unchanged: torch aligns
    every CPU tensor to 64 bytes either way, so the kernels see the same layouts and give the
    same bits (tests/test_benchmarks.py trains with and without it to equal parameters). Cost:
    up to 256 MiB of freed heap kept per process. ``KARMIC_MALLOC_TUNING=0`` leaves glibc's
    defaults (the benchmark's code of before)."""
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("KARMIC_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if not hasattr(libc, "mallopt"):  # not glibc (musl has no mallopt)
            return False
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except OSError:
        pass
    return _allocator_tuned


def configure(device: str) -> None:
    """Process-wide settings a run on ``device`` needs: on every device, the allocator's
    thresholds (``tune_allocator``: the same bits, fewer page faults); on CUDA, deterministic
    kernels and real fp32 (no TF32). cuBLAS reads its workspace setting when it starts, so this
    runs before the first CUDA op of the process."""
    tune_allocator()
    if device_type(device) != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    index = torch.device(device).index
    if index is not None:  # plain "cuda" is the current device
        torch.cuda.set_device(index)


def check_resume(recorded: str, wanted: str | None) -> str:
    """The device a resumed run continues on: the one it recorded, or ``wanted`` (a sweep's slot,
    ``--device`` at the CLI) when that is of the same type. A run's random streams and float bits
    are its device's, so a run never changes type (cpu <-> cuda) midway."""
    if wanted in (None, "auto", recorded):
        return recorded
    check_name(wanted)
    if device_type(wanted) != device_type(recorded):
        raise DeviceError(f"this run was trained on {recorded}; it resumes on {device_type(recorded)} only "
                          f"(not {wanted}): its random streams are the device's")
    return wanted


class DeviceSlots:
    """Which device each of a sweep's tasks runs on: ``per_device`` tasks at once on each of
    ``devices`` (several study cells share one GPU, one CPU process each). ``devices == ["cpu"]``
    puts no limit (the backend's workers do). ``take`` gives the least-loaded device with room
    (the first of equals), or None when all are full; ``give`` returns a task's device."""

    def __init__(self, devices: list[str], per_device: int | None = None) -> None:
        if not devices:
            raise ValueError("no devices")
        if per_device is not None and per_device < 1:
            raise DeviceError(f"--workers-per-device must be >= 1, got {per_device}")
        self.devices = list(devices)
        self.per_device = per_device
        self.busy = {d: 0 for d in self.devices}

    @property
    def limited(self) -> bool:
        return self.per_device is not None and self.devices != ["cpu"]

    def take(self) -> str | None:
        d = min(self.devices, key=lambda x: self.busy[x])
        if self.limited and self.busy[d] >= self.per_device:
            return None
        self.busy[d] += 1
        return d

    def give(self, device: str) -> None:
        if self.busy.get(device, 0) > 0:
            self.busy[device] -= 1

    def capacity(self) -> int | None:
        """Tasks at once these slots allow (None: no limit of theirs)."""
        return len(self.devices) * self.per_device if self.limited else None


def sweep_slots(device: str, workers: int, per_device: int | None = None, gpus: int | None = None) -> DeviceSlots:
    """A sweep's slots for a resolved ``device``: the CPU, one named GPU (``cuda:N``), or every
    GPU here (``cuda``), with ``per_device`` tasks on each; default: the workers spread evenly
    over the GPUs (one GPU: all of them on it)."""
    if device_type(device) == "cpu":
        return DeviceSlots(["cpu"], None)
    if ":" in device:
        devs = [device]
    else:
        n = cuda_count() if gpus is None else gpus
        devs = [f"cuda:{i}" for i in range(max(n, 1))]
    if per_device is None:
        per_device = -(-max(workers, 1) // len(devs))
    return DeviceSlots(devs, per_device)


__all__ = ["CUDA_AUTO_PRECISION", "DEFAULTS", "DEVICES", "DeviceError", "DeviceSlots", "check_name",
           "check_resume", "configure", "cuda_count", "device_defaults", "device_type", "resolve_device",
           "sweep_slots"]
