"""Issue 37's targets, measured in one go on a GPU machine (prepared on a CPU; not run there).

    python benchmarks/gpu_check.py --out DIR [--sections tests,throughput,scaling,study]
        [--updates 4] [--study-minutes 4] [--study-full] [--workers N]

(on the lent H200s: ``bash benchmarks/gpu_check.sh``, which carries the packages that machine
lacks.) Every finished section is appended to ``DIR/gpu_check.json`` at once, so a run cut short
still returns what it measured. Sections:

- ``tests``: ``pytest -m cuda tests/test_device_cuda.py`` (determinism, resume, the TVT read
  against numba on the CPU, every condition in fp32 and bf16);
- ``throughput``: env-steps/s of one run at 10x10 with the device's ``num_envs`` (256), baseline
  and tvt, fp32 and bf16, everything included (rollout, lake round trip, learner; warm-up
  updates excluded, for TVT until its memory spans its earlier shards), with the shares of the
  rollout, the learner and the lake; the target: baseline >= 40,000, tvt >= 0.8x baseline. The
  same baseline on this machine's CPU (16 envs, all cores) is the reference;
- ``scaling``: baseline fp32 at 64, 256 and 1,024 envs (is 256 the right default?);
- ``tvt-methods``: TVT's methods on the GPU (``TVT_METHODS``: the old one, the new one of
  ``studies/tvt-speed.toml`` and the new one with its acting read refreshed every 8 steps, an
  option that study does not test), ``tvt``
  and ``full`` in bf16 at the device's ``num_envs``, each against a ``baseline`` run of this
  section; the old method was the only one measured on a GPU so far (0.18-0.24x);
- ``study``: ``karmic study run ablation --device cuda`` (its committed settings, every cell on
  the GPU, ``--workers`` cells side by side, default one per core) on a fresh lake for
  ``--study-minutes``, then interrupted: cells done, aggregate env-steps/s, and the wall time the
  whole study would take at that rate (a projection, labelled so; the target: 20 minutes).
  With ``--study-full`` it runs to the end (about 20 minutes if the target holds: longer than one
  command of a lent machine), then reports the measured wall time and whether every verdict
  equals the committed CPU results' (results/ablation/verdicts.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("tests", "throughput", "scaling", "tvt-methods", "study", "study-cpu")
# TVT's methods (docs/tvt-speed.md): the levels of the equivalence study, name -> TrainConfig
# fields, and new-r8 (the new one with tvt_read_refresh = 8, an option the study does not test)
TVT_METHODS = {lv["name"]: lv["train"] for lv in tomllib.loads(
    (ROOT / "studies" / "tvt-speed.toml").read_text())["levels"]}
TVT_METHODS["new-r8"] = {**TVT_METHODS["new"], "tvt_read_refresh": 8}


def record(out: Path, section: str, data) -> None:
    path = out / "gpu_check.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc[section] = data
    path.write_text(json.dumps(doc, indent=1))
    print(f"== {section}: {json.dumps(data)}", flush=True)


def info() -> dict:
    import torch

    from karmic.training.device import cuda_count

    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": cuda_count(),
            "gpu": torch.cuda.get_device_name(0) if cuda_count() else None, "cores": os.cpu_count(),
            "python": sys.version.split()[0]}


def bench(device: str, mode: str, num_envs: int, precision: str, updates: int, grid: int = 10,
          train: dict | None = None) -> dict:
    """One fresh run: env-steps/s over ``updates`` updates after the warm-up, with the shares;
    ``train``: further TrainConfig fields (a TVT method)."""
    import torch

    from karmic.training.config import MODES
    from karmic.training.ppo import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as lake:
        cfg = TrainConfig(mode=mode, grid_size=grid, seed=0, num_envs=num_envs, total_steps=10**10,
                          checkpoint_every=10**6, threads=0, precision=precision, device=device,
                          **(train or {}))
        warm = 1 + (math.ceil(cfg.memory_size / cfg.num_steps) if MODES[mode][0] else 0)
        marks: list[tuple[float, int, dict]] = []

        def mark(i: dict) -> None:
            if device != "cpu":
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), i["global_step"], dict(i["timing"])))

        tr = Trainer(cfg, lake, on_update=mark)
        tr.run(stop_after=warm + updates, at_boundary=False)
        (t0, s0, tm0), (t1, s1, tm1) = marks[warm - 1], marks[-1]
        timing = {k: tm1[k] - tm0[k] for k in tm1}
        total = sum(timing.values()) or 1.0
        return {"device": device, "mode": mode, "grid_size": grid, "num_envs": num_envs, **(train or {}),
                "n_agents": tr.N, "precision": cfg.precision, "updates": updates,
                "env_steps_per_s": round((s1 - s0) / (t1 - t0), 1),
                "s_per_update": round((t1 - t0) / updates, 4),
                **{f"{k}_share": round(v / total, 3) for k, v in timing.items()}}


def throughput(args) -> dict:
    from karmic.training.device import device_defaults

    n = device_defaults("cuda")["num_envs"]
    rows = [bench("cuda", m, n, p, args.updates) for p in ("fp32", "bf16") for m in ("baseline", "tvt")]
    rows.append(bench("cpu", "baseline", device_defaults("cpu")["num_envs"], "auto", args.updates))
    by = {(r["mode"], r["precision"]): r["env_steps_per_s"] for r in rows if r["device"] == "cuda"}
    return {"rows": rows, "targets": {
        p: {"baseline_env_steps_per_s": by[("baseline", p)], "baseline_ok": by[("baseline", p)] >= 40_000,
            "tvt_over_baseline": round(by[("tvt", p)] / by[("baseline", p)], 3),
            "tvt_ok": by[("tvt", p)] >= 0.8 * by[("baseline", p)]} for p in ("fp32", "bf16")}}


def tvt_methods(args, bench=bench) -> dict:
    from karmic.training.device import device_defaults

    n = device_defaults("cuda")["num_envs"]
    base = bench("cuda", "baseline", n, "bf16", args.updates)["env_steps_per_s"]
    rows = [{"method": name, **bench("cuda", mode, n, "bf16", args.updates, train=fields)}
            for name, fields in TVT_METHODS.items() for mode in ("tvt", "full")]
    for r in rows:
        r["over_baseline"] = round(r["env_steps_per_s"] / base, 3)
        r["ok"] = r["env_steps_per_s"] >= 0.8 * base
    return {"baseline_env_steps_per_s": base, "rows": rows}


def scaling(args) -> dict:
    return {"rows": [bench("cuda", "baseline", n, "fp32", args.updates) for n in (64, 256, 1024)]}


def karmic(*a: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "karmic.cli", *a], cwd=ROOT, env=env, text=True,
                          capture_output=True, **kw)


def _progress(lake: Path) -> list[dict]:
    st = karmic("study", "status", "ablation", "--lake", str(lake), "--format", "json")
    return json.loads(st.stdout) if st.returncode == 0 else []


def study(args, out: Path, device: str = "cuda") -> dict:
    """The ablation on ``device`` for ``--study-minutes``; the rate is also taken between a mark at
    40% of the time and the end, so the start (processes, numba compiles) is left out of it."""
    lake = Path(tempfile.mkdtemp(prefix=f"gpu-ablation-{device}-"))
    workers = args.workers or os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "karmic.cli", "study", "run", "ablation", "--lake", str(lake),
           "--device", device, "--workers", str(workers)]
    t0 = time.perf_counter()
    mark = None
    with open(out / f"study_run_{device}.log", "w") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if args.study_full:
                p.wait()
            else:
                try:
                    p.wait(timeout=0.4 * args.study_minutes * 60)
                except subprocess.TimeoutExpired:
                    mark = (time.perf_counter(), sum(int(c["steps"]) for c in _progress(lake)))
                p.wait(timeout=max(1.0, args.study_minutes * 60 - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGINT)  # the driver marks the runs interrupted
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    wall = time.perf_counter() - t0
    cells = _progress(lake)
    done = sum(c["state"] == "done" for c in cells)
    steps = sum(int(c["steps"]) for c in cells)
    target = sum(int(c["target"]) for c in cells)
    res = {"device": device, "workers": workers, "wall_s": round(wall, 1), "cells": len(cells),
           "cells_done": done, "env_steps_done": steps, "env_steps_planned": target,
           "aggregate_env_steps_per_s": round(steps / wall, 1),
           "finished": p.returncode == 0 and done == len(cells) > 0}
    if mark is not None:
        t1 = wall + t0
        res["steady_env_steps_per_s"] = round((steps - mark[1]) / max(t1 - mark[0], 1e-9), 1)
    if res["finished"]:
        rep = karmic("study", "report", "ablation", "--lake", str(lake), "--out", str(out / "ablation"))
        mine = json.loads((out / "ablation" / "verdicts.json").read_text()) if rep.returncode == 0 else None
        theirs = json.loads((ROOT / "results" / "ablation" / "verdicts.json").read_text())
        res.update(measured_wall_min=round(wall / 60, 1), target_ok=wall <= 20 * 60,
                   same_verdicts=_verdicts(mine) == _verdicts(theirs) if mine is not None else None)
    else:
        rate = res.get("steady_env_steps_per_s") or steps / wall
        res["projected_wall_min"] = round(target / max(rate, 1e-9) / 60, 1)
        res["note"] = "projected: steps planned / the measured rate (steady if taken; not a measured study)"
    return res


def _verdicts(doc) -> dict:
    """prediction id -> verdict, from a verdicts.json (a list of records or a mapping)."""
    items = doc.get("predictions", doc) if isinstance(doc, dict) else doc
    if isinstance(items, dict):
        return {k: (v.get("verdict") if isinstance(v, dict) else v) for k, v in items.items()}
    return {r.get("id"): r.get("verdict") for r in items if isinstance(r, dict)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--sections", default="tests,throughput,scaling,study")
    ap.add_argument("--updates", type=int, default=4, help="measured updates per run")
    ap.add_argument("--study-minutes", type=float, default=4.0)
    ap.add_argument("--study-full", action="store_true")
    ap.add_argument("--workers", type=int, default=None, help="study cells at once [default: the cores]")
    args = ap.parse_args()
    bad = [s for s in args.sections.split(",") if s not in SECTIONS]
    if bad or args.updates < 1 or args.study_minutes <= 0 or (args.workers is not None and args.workers < 1):
        ap.error(f"unknown section {bad[0]!r}; choose from {', '.join(SECTIONS)}" if bad
                 else "--updates, --study-minutes and --workers must be positive")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    record(out, "info", info())
    from karmic.training.device import cuda_count

    if not cuda_count():
        print("gpu_check: torch sees no GPU here; nothing to measure", file=sys.stderr)
        sys.exit(2)
    for s in args.sections.split(","):
        t = time.perf_counter()
        try:
            data = run_section(s, args, out)
        except Exception as e:  # a section that breaks is recorded; the next ones still run
            import traceback

            data = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc().splitlines()[-8:]}
        data["section_s"] = round(time.perf_counter() - t, 1)
        record(out, s, data)


def run_section(s: str, args, out: Path) -> dict:
    if s == "tests":
        r = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_device_cuda.py", "-q",
                            "-p", "no:cacheprovider", "-o", "addopts="], cwd=ROOT, text=True, capture_output=True)
        data = {"rc": r.returncode, "tail": r.stdout.strip().splitlines()[-15:]}
    elif s == "throughput":
        data = throughput(args)
    elif s == "scaling":
        data = scaling(args)
    elif s == "tvt-methods":
        data = tvt_methods(args)
    elif s == "study-cpu":
        data = study(args, out, device="cpu")
    else:
        data = study(args, out)
    return data


if __name__ == "__main__":
    main()
