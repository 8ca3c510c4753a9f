"""Golden digests: what a short run of each training condition writes, as fingerprints.

``digests(lake)`` trains every condition for a few updates at fixed seeds (fp32, 1 thread) and
fingerprints what it wrote to the lake and the final model's parameters. ``tests/test_golden.py``
checks them against ``tests/golden.json``, recorded from the code before a refactor, so a change
that is meant to keep behaviour keeps it:

- what is discrete (the events, the episodes, which steps a transport linked) is hashed and must
  match exactly;
- what is float (the model's parameters, the transported amounts) is kept as per-tensor sums
  (sum, sum of |x|, sum of squares) and must match to 1e-4 relative: the same code on another
  CPU model can take other MKL / oneDNN kernels and differ in the last bits (seen here: two
  AMD EPYC machines of this workplace, same wheels, parameters equal to ~1e-7 and hashes
  different), while a change of behaviour moves these sums by far more. Bit-for-bit on one
  machine is what the resume and determinism tests check.

Record anew (only when behaviour is meant to change, and say why in the commit):
``python tests/golden.py --write``. A new condition gets its digest with ``python tests/golden.py
--add NAME`` (adds NAME to MODES' recording, leaves every other entry as it was); each condition
runs with its record's defaults (``TrainConfig.from_dict``, karmic.conditions).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

MODES = ("baseline", "matchmaker", "tvt", "full", "memory", "sham", "hit-cost", "tvt-learned")
# runs of a condition in another method (docs/tvt-speed.md): name -> the fields it sets. full-new
# was recorded from the code before tvt_read_refresh existed, so its default (1) is that code
VARIANTS = {"full-new": {"mode": "full", "tvt_select": "rollout", "tvt_learn": "lagged", "tvt_lag": 1},
            # a yoked condition replays a partner run of another seed (trained first where missing)
            "yoked": {"mode": "yoked", "seed": 6, "tvt_yoke_run": "golden-tvt"}}
GOLDEN = Path(__file__).with_name("golden.json")


FLOAT_COLUMNS = {"amount"}  # float columns: fingerprinted, compared with a tolerance
# columns added after golden.json was recorded: left out, so the digests of the columns it holds
# stay comparable (episodes.encounters, issue 32: a new count, no change to any existing one)
NEW_COLUMNS = {"encounters"}
RTOL = 1e-4


def _sums(x: np.ndarray) -> list[float]:
    x = np.asarray(x, np.float64).ravel()
    return [float(x.sum()), float(np.abs(x).sum()), float((x * x).sum())]


def _table_digest(lake: Path, table: str, run_id: str, order: list[str]) -> dict | str:
    files = sorted((lake / table / f"run_id={run_id}").glob("*.parquet"))
    if not files:
        return "empty"
    t = pq.read_table(files[0]) if len(files) == 1 else __import__("pyarrow").concat_tables(
        [pq.read_table(f) for f in files], promote_options="default")
    t = t.sort_by([(c, "ascending") for c in order if c in t.column_names])
    h = hashlib.sha256()
    floats = {}
    for name in sorted(c for c in t.column_names if c not in ("run_id", "written_at") and c not in NEW_COLUMNS):
        col = t.column(name).combine_chunks()
        if name in FLOAT_COLUMNS:
            floats[name] = _sums(col.to_numpy(zero_copy_only=False))
            continue
        h.update(name.encode())
        h.update(json.dumps(col.to_pylist(), default=str).encode())
    return {"hash": h.hexdigest()[:16], **floats} if floats else h.hexdigest()[:16]


def _model_digest(lake: Path, run_id: str) -> dict[str, list[float]]:
    import torch

    from pipelines.checkpoints import latest_checkpoint, load_checkpoint

    state = load_checkpoint(latest_checkpoint(lake, run_id))["model"]
    return {k: _sums(state[k].detach().to(torch.float32).numpy()) for k in sorted(state)}


def mismatches(got, want, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: strings exactly, floats to RTOL (of the tensor's
    sum of |x|, so a sum near zero is not held to a relative bound it cannot meet)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}/{k}: missing" for k in want.keys() - got.keys()]
        out += [f"{path}/{k}: unexpected" for k in got.keys() - want.keys()]
        for k in want.keys() & got.keys():
            out += mismatches(got[k], want[k], f"{path}/{k}")
        return out
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want) == 3:
        scale = max(abs(want[1]), 1e-12)
        bad = [i for i in range(3) if abs(got[i] - want[i]) > RTOL * (scale if i < 2 else max(want[2], 1e-12))]
        return [f"{path}: {got} != {want}"] if bad else []
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


def digests(lake: Path, modes: tuple[str, ...] = MODES + tuple(VARIANTS)) -> dict[str, dict[str, str]]:
    from karmic.training.ppo import TrainConfig, train

    out = {}
    for mode in modes:
        run_id = f"golden-{mode}"
        fields = {"grid_size": 10, "seed": 5, "num_envs": 2, "num_steps": 20, "seq_len": 10, "hidden": 32, "latent": 16,
                  "total_steps": 2 * 20 * 6, "checkpoint_every": 1, "threads": 1, "memory_size": 30,
                  "precision": "fp32", "env_overrides": {"max_steps": 20}, "run_id": run_id,
                  **VARIANTS.get(mode, {"mode": mode})}
        partner = fields.get("tvt_yoke_run")
        if partner and not (lake / "runs" / f"run_id={partner}").exists():
            digests(lake, (partner.removeprefix("golden-"),))
        train(TrainConfig.from_dict(fields), lake)
        out[mode] = {
            "events": _table_digest(lake, "events", run_id, ["episode", "t", "seq"]),
            "episodes": _table_digest(lake, "episodes", run_id, ["episode", "agent"]),
            "tvt_transports": _table_digest(lake, "tvt_transports", run_id,
                                            ["update", "agent", "source_episode", "source_t", "target_episode",
                                             "target_t", "mode", "head"]),
            "model": _model_digest(lake, run_id),
        }
    return out


if __name__ == "__main__":
    add = sys.argv[sys.argv.index("--add") + 1:] if "--add" in sys.argv else []
    with tempfile.TemporaryDirectory() as d:
        got = digests(Path(d), tuple(add) or MODES + tuple(VARIANTS))
    print(json.dumps(got, indent=1, sort_keys=True))
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
    elif add:  # only the new conditions' entries; the others stay as recorded
        GOLDEN.write_text(json.dumps({**json.loads(GOLDEN.read_text()), **got}, indent=1, sort_keys=True) + "\n")
        print(f"added {', '.join(add)} to {GOLDEN}")
