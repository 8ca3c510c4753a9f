"""Golden digests: what a short run of each training condition writes, hashed.

``digests(lake)`` trains every condition for a few updates at fixed seeds (fp32, 1 thread) and
hashes the events, episodes and TVT transports it wrote to the lake and the final model's
parameters. ``tests/test_golden.py`` checks them against ``tests/golden.json``, recorded from
the code before a refactor, so a change that is meant to keep behaviour keeps it bit for bit.
Record anew (only when behaviour is meant to change, and say why in the commit):
``python tests/golden.py --write``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

MODES = ("baseline", "matchmaker", "tvt", "full", "memory")
GOLDEN = Path(__file__).with_name("golden.json")


def _table_digest(lake: Path, table: str, run_id: str, order: list[str]) -> str:
    files = sorted((lake / table / f"run_id={run_id}").glob("*.parquet"))
    if not files:
        return "empty"
    t = pq.read_table(files[0]) if len(files) == 1 else __import__("pyarrow").concat_tables(
        [pq.read_table(f) for f in files], promote_options="default")
    t = t.sort_by([(c, "ascending") for c in order if c in t.column_names])
    h = hashlib.sha256()
    for name in sorted(c for c in t.column_names if c not in ("run_id", "written_at")):
        col = t.column(name).combine_chunks()
        h.update(name.encode())
        h.update(json.dumps(col.to_pylist(), default=str).encode())
    return h.hexdigest()[:16]


def _model_digest(lake: Path, run_id: str) -> str:
    import torch

    from pipelines.checkpoints import latest_checkpoint, load_checkpoint

    state = load_checkpoint(latest_checkpoint(lake, run_id))["model"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k].detach().to(torch.float32).numpy()).tobytes())
    return h.hexdigest()[:16]


def digests(lake: Path) -> dict[str, dict[str, str]]:
    from karmic.training.ppo import TrainConfig, train

    out = {}
    for mode in MODES:
        run_id = f"golden-{mode}"
        cfg = TrainConfig(mode=mode, grid_size=10, seed=5, num_envs=2, num_steps=20, seq_len=10, hidden=32,
                          latent=16, total_steps=2 * 20 * 6, checkpoint_every=1, threads=1, memory_size=30,
                          precision="fp32", env_overrides={"max_steps": 20}, run_id=run_id)
        train(cfg, lake)
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
    with tempfile.TemporaryDirectory() as d:
        got = digests(Path(d))
    print(json.dumps(got, indent=1, sort_keys=True))
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
