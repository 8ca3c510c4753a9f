"""Arrow schemas of the lake's tables (docs/DESIGN.md), with a schema version in the file metadata."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
_META = {b"karmic_schema_version": str(SCHEMA_VERSION).encode()}

EVENTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("episode", pa.int64()),
        ("t", pa.int32()),
        ("global_step", pa.int64()),
        ("seq", pa.int32()),
        ("event_type", pa.string()),
        ("agent", pa.string()),
        ("target", pa.string()),
        ("x", pa.int16()),
        ("y", pa.int16()),
        ("target_x", pa.int16()),
        ("target_y", pa.int16()),
        ("direction", pa.int8()),
        ("apple_context", pa.bool_()),
        ("spawn_cause", pa.string()),
    ],
    metadata=_META,
)

EPISODES_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("episode", pa.int64()),
        ("global_step", pa.int64()),
        ("agent", pa.string()),
        ("steps", pa.int32()),
        ("return", pa.float64()),
        ("apples", pa.int32()),
        ("zaps_fired", pa.int32()),
        ("zaps_hit", pa.int32()),
        ("times_hit", pa.int32()),
        ("frozen_steps", pa.int32()),
        ("condition", pa.string()),
        ("grid_size", pa.int32()),
        ("seed", pa.int64()),
        # steps the agent began on the board with another agent within zap range
        # (karmic.envs.kernels._encounters); null in runs written before it was counted
        ("encounters", pa.int32()),
    ],
    metadata=_META,
)

# actions/run_id=<id>/part-<n>.parquet: one row per (episode, agent), the agent's whole action
# sequence as one list (an episode of 1000 steps x 5 agents is 5 rows, not 5000), plus what rebuilds
# the episode's reset exactly: the env's RNG state just before it and the rigged pairs it was given
# (the same on each agent row of an episode). pipelines.replay re-simulates from these alone.
ACTIONS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("episode", pa.int64()),
        ("global_step", pa.int64()),  # of the episode's first step
        ("agent", pa.string()),
        ("steps", pa.int32()),  # steps taken (< max_steps for an interrupted episode)
        ("actions", pa.list_(pa.int8())),  # one per step, karmic.envs action codes 0..7
        ("reset_rng", pa.uint64()),  # xorshift state of the env just before the reset
        ("pairs", pa.list_(pa.int16())),  # rigged (debtor, creditor) pairs, flattened, in order
        ("end_digest", pa.int64()),  # hash of the env state after the last step (pipelines.replay)
    ],
    metadata=_META,
)

# columns of the `runs` view, built from every runs/run_id=<id>/run.json
# one status vocabulary for simulations and training (run.json ``status``); lakes written before
# it have ``finished`` for a simulation that completed, read as ``completed`` (karmic.lake)
RUN_STATUSES = ("created", "running", "completed", "interrupted", "failed")
LEGACY_STATUSES = {"finished": "completed"}

RUNS_COLUMNS = (
    "run_id", "kind", "condition", "policy", "grid_size", "seed", "n_agents", "num_envs",
    "status", "started_at", "finished_at", "algo",
)

# tvt_transports/run_id=<id>/part-<n>.parquet: one row per transport (karmic.tvt.harvest)
TVT_TRANSPORTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("update", pa.int32()),
        ("agent", pa.string()),
        ("source_episode", pa.int64()),
        ("source_t", pa.int32()),
        ("target_episode", pa.int64()),
        ("target_t", pa.int32()),
        ("amount", pa.float64()),
        ("mode", pa.string()),  # learned | semantic | sham | yoked
        ("head", pa.int16()),  # read head of a learned transport, -1 for semantic
    ],
    metadata=_META,
)

# eval_agents/run_id=<id>/part-<n>.parquet: who played whom in a `karmic evaluate` run (kind eval),
# one row per agent, written once when the run starts
EVAL_AGENTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("agent", pa.string()),
        ("role", pa.string()),  # focal | background | solo (alone on the board) | frozen (in place, no-op)
        ("policy", pa.string()),  # the policy's label: a file's name, a run id, or random / greedy
        ("source", pa.string()),  # where it came from: a policy file, a lake run, or "scripted"
        ("scenario", pa.string()),  # solo | solo-frozen | cross-play
    ],
    metadata=_META,
)
