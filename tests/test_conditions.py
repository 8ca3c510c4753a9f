"""The registry of conditions (karmic.conditions) and its three controls: sham, hit-cost, tvt-learned.

- the registry: one-line errors, the CLI table, and a condition added through the registry alone
  trains, sorts in SQL and has its colour in the figures;
- sham: same count and total as the real rule on the same data, and its value lands on the real
  rule's kind of step at about the base rate (the real rule: always);
- hit-cost: charged for the agent's own landed hits only (not misses, not hits it took);
- tvt-learned: reads no event tags.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from karmic import conditions
from karmic.cli import app
from karmic.events import EVENT_TYPES, ZAP_FIRED, ZAP_HIT, EventBatch
from karmic.rl import landed_hits, shaped_rewards
from karmic.training.config import MODES, TrainConfig
from karmic.tvt.harvest import extra_shapes, transport_rewards
from karmic.tvt.transport import Transports, semantic_transport, sham_transports
from pipelines.trajectories import TrajectoryShard

TINY = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10",
        "--hidden", "32", "--set", "max_steps=20", "--threads", "1"]
ISSUE_NAMES = ("baseline", "tvt", "matchmaker", "full", "memory", "random", "sham", "hit-cost", "tvt-learned")


# --- the registry ----------------------------------------------------------------------------------
def test_registry_holds_every_condition_and_validates_in_one_line():
    assert set(ISSUE_NAMES) <= set(conditions.names())
    assert conditions.ablation_names() == ["baseline", "tvt", "matchmaker", "full"]
    assert "random" not in MODES and "sham" in MODES and MODES["full"] == (True, True)
    with pytest.raises(ValueError, match="unknown condition 'nope'; choose one of baseline") as e:
        conditions.get_condition("nope")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown trained condition 'random'"):
        conditions.get_condition("random", trained=True)
    with pytest.raises(ValueError, match="a tvt agent has a transport"):
        conditions.Condition("bad", "plain", transport="semantic")
    # one colour + line style per condition: no two records draw alike
    looks = [(c.color, c.linestyle, c.marker) for c in conditions.all_conditions()]
    assert len(set(looks)) == len(looks)


def test_cli_lists_the_conditions_and_rejects_unknown_modes(tmp_path):
    res = CliRunner().invoke(app, ["conditions", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["condition"] for r in rows][:4] == ["baseline", "tvt", "matchmaker", "full"]
    by = {r["condition"]: r for r in rows}
    assert set(ISSUE_NAMES) <= set(by)
    assert by["sham"]["transport"] == "sham" and by["hit-cost"]["shaping"] == "hit-cost"
    assert all(r["claim"] and r["controls_for"] for r in rows)
    res = CliRunner().invoke(app, ["train", "--mode", "nope", "--lake", str(tmp_path)])
    assert res.exit_code == 2 and "unknown --mode 'nope'" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["train", "--mode", "sham", "--tvt-mode", "learned", "--lake", str(tmp_path), *TINY])
    assert res.exit_code == 2 and "fixes its transport" in res.output


def test_condition_defaults_reach_the_config_and_a_run_may_override_them():
    cfg = TrainConfig.from_dict({"mode": "tvt-learned"})
    assert (cfg.tvt_read_power, cfg.tvt_transport_top_k, cfg.tvt_read_cost) == (2, 1, 0.001)
    assert TrainConfig.from_dict({"mode": "tvt-learned", "tvt_read_cost": 0.5}).tvt_read_cost == 0.5
    assert TrainConfig.from_dict({"mode": "hit-cost"}).hit_cost == conditions.HIT_COST
    a, b = TrainConfig.from_dict({"mode": "tvt"}).to_dict(), TrainConfig(mode="tvt").to_dict()
    assert {k: v for k, v in a.items() if k != "precision"} == {k: v for k, v in b.items() if k != "precision"}
    assert TrainConfig(mode="hit-cost").hit_cost == conditions.HIT_COST  # built directly, too
    assert TrainConfig(mode="tvt-learned", tvt_threshold=2.0).tvt_threshold == 2.0
    assert (TrainConfig(mode="tvt").tvt_threshold, TrainConfig(mode="baseline").hit_cost) == (2.0, 0.0)
    with pytest.raises(ValueError, match="hit_cost"):
        TrainConfig(mode="baseline", hit_cost=0.1).validate()
    with pytest.raises(ValueError, match="needs hit_cost > 0"):
        TrainConfig(mode="hit-cost", hit_cost=0.0).validate()


def test_a_condition_added_through_the_registry_alone_trains_sorts_and_draws(tmp_path, monkeypatch):
    from karmic import plots
    from karmic.lake import connect

    rec = conditions.Condition("throwaway", "plain", order=10, color="#123456", linestyle=":", marker="h",
                               claim="a test", controls_for="nothing")
    monkeypatch.setitem(conditions._REGISTRY, "throwaway", rec)
    for mode in ("throwaway", "baseline"):
        res = CliRunner().invoke(app, ["train", "--mode", mode, "--total-steps", "40", "--lake", str(tmp_path), *TINY])
        assert res.exit_code == 0, res.output
    con = connect(tmp_path)
    order = [r[0] for r in con.sql("select condition from conditions order by display_order").fetchall()]
    assert order.index("throwaway") == order.index("yoked") + 1 and order[-2:] == ["random", "greedy"]
    # the queries that order conditions join the registry: throwaway after baseline, not by name
    got = [r[0] for r in con.sql(
        "select distinct r.condition, co.display_order from runs as r left join conditions as co using (condition) "
        "order by co.display_order nulls last").fetchall()]
    assert got == ["baseline", "throwaway"]
    sql = open(conditions.__file__.replace("karmic/conditions.py", "queries/ablation.sql")).read()
    assert "join conditions" in sql and "'tvt' then" not in sql
    st = plots.Styles(["zzz", "throwaway", "baseline"])
    assert st.order == ["baseline", "throwaway", "zzz"]
    assert (st.color("throwaway"), st.linestyle("throwaway"), st.marker("throwaway")) == ("#123456", ":", "h")
    assert st.color("zzz") == plots.UNKNOWN_STYLE[0]


# --- sham --------------------------------------------------------------------------------------------
def _stream(rng, T=4000, N=5, p=0.05):
    agg_t = np.flatnonzero(rng.random(T) < p)
    hit_t = np.flatnonzero(rng.random(T) < p)
    return agg_t, rng.integers(1, N, len(agg_t)), hit_t, rng.integers(1, N, len(hit_t))


def _on_target(d, src, tgt) -> bool:
    """At tgt the agent hit some x who hit it at a step in (tgt, src]."""
    agg_t, agg_v, hit_t, hit_by = d
    return any(((hit_by == x) & (hit_t > tgt) & (hit_t <= src)).any() for x in agg_v[agg_t == tgt])


def _base_rate(d, src, window) -> float:
    agg_t, agg_v, hit_t, hit_by = d
    lo = max(0, src - window)
    n = sum(1 for a, x in zip(agg_t, agg_v, strict=True)
            if lo <= a < src and ((hit_by == x) & (hit_t > a) & (hit_t <= src)).any())
    return n / min(window, src)


def test_sham_lands_at_the_base_rate_where_the_real_rule_lands_on_target():
    """A fixed data set: 4 streams of random hits given and taken. The real rule's value is all on
    target; the sham's sits at the base rate of such steps in the memory window (it would sit at 1
    if the sham kept the real matches)."""
    rng, W = np.random.default_rng(0), 200
    data = [_stream(rng) for _ in range(4)]
    real = [semantic_transport(h, x, a, v, -np.ones(len(h)), memory_size=W) for a, v, h, x in data]
    sham = sham_transports(real, 0, np.random.default_rng(1), W)

    def share(parts):
        w = np.concatenate([np.abs(p.amount) for p in parts])
        on = np.array([_on_target(d, s, t) for d, p in zip(data, parts, strict=True)
                       for s, t in zip(p.source, p.target, strict=True)])
        return float((w * on).sum() / w.sum())

    w = np.concatenate([np.abs(p.amount) for p in real])
    base = float((w * np.array([_base_rate(d, s, W) for d, p in zip(data, real, strict=True)
                                for s in p.source])).sum() / w.sum())
    assert share(real) == 1.0
    assert 0.02 < base < 0.08
    assert abs(share(sham) - base) < 0.015, (share(sham), base)
    # count, amounts and sources are the real rule's; lags come from the real rule's, in the window
    assert [len(p) for p in sham] == [len(p) for p in real]
    for s, r in zip(sham, real, strict=True):
        np.testing.assert_array_equal(s.source, r.source)
        np.testing.assert_array_equal(s.amount, r.amount)
        assert ((s.source - s.target >= 1) & (s.source - s.target <= W) & (s.target >= 0)).all()
    real_lags = set(np.concatenate([p.source - p.target for p in real]).tolist())
    assert set(np.concatenate([p.source - p.target for p in sham]).tolist()) <= real_lags


def test_sham_never_reuses_the_lags_of_the_same_hit():
    """One hit matched to two aggression rows, and one other hit elsewhere: the first hit's sham
    rows take the other hit's lag, never each other's (that would be the real targets again)."""
    a = Transports(np.array([100, 100]), np.array([90, 80]), np.array([-0.5, -0.5]), np.array([-1, -1], np.int16))
    b = Transports(np.array([300]), np.array([250]), np.array([-1.0]), np.array([-1], np.int16))
    for seed in range(20):
        s_a, s_b = sham_transports([a, b], 0, np.random.default_rng(seed), 1000)
        assert s_a.target.tolist() == [50, 50]
        assert s_b.target[0] in (290, 280)


def _shard(update: int, T: int, B: int, N: int, L: int, rng, hit_p=0.08, strength=None, with_tags=True):
    """A hand-made TVT shard: time-major (T, S) hits given and taken drawn at random."""
    S = B * N
    hv = np.zeros((T, S), np.int32)
    hb = np.zeros((T, S), np.int32)
    for t in range(T):
        for b in range(B):
            if rng.random() < hit_p * N:
                a, x = rng.choice(N, 2, replace=False)
                hv[t, b * N + a] |= 1 << x
                hb[t, b * N + x] |= 1 << a
    shapes = extra_shapes(2, 3, 4)
    tm = {k: np.zeros((T, S, *sh), dt) for k, (dt, sh) in shapes.items()}
    tm["hit_victims"], tm["hit_by"] = hv, hb
    if strength is not None:
        tm["tvt_strength"] = strength
        tm["tvt_top_w"][..., 0] = 1.0
        tm["tvt_top_tau"][...] = update * T - 1 if update else -1
    if not with_tags:
        for k in ("hit_victims", "hit_by", "apple_ctx", "partner"):
            tm.pop(k)
    K = T // L
    tmp = TrajectoryShard("r", update, L, B, N, np.zeros((K * S, L, 1, 1, 1), np.uint8), np.zeros((K * S, 1)),
                          np.zeros((K * S, 1)))
    rows_of = tmp.from_time_major
    slot = np.tile(np.arange(S), K)
    start = np.zeros((T, S), np.uint8)
    if update == 0:
        start[0] = 1
    return TrajectoryShard(
        "r", update, L, B, N, tmp.obs, tmp.h0, tmp.c0,
        steps={"reward": rows_of(np.zeros((T, S), np.float32)), "value": rows_of(rng.normal(size=(T, S)).astype(np.float32)),
               "start": rows_of(start), "action": rows_of(np.zeros((T, S), np.int8)),
               "logprob": rows_of(np.zeros((T, S), np.float32))},
        rows={"chunk": np.repeat(np.arange(K), S).astype(np.int32), "slot": slot.astype(np.int32),
              "global_step": np.repeat(update * T + np.arange(K) * L, S).astype(np.int64) * B,
              "next_value": np.zeros(K * S, np.float32), "next_start": np.zeros(K * S, np.uint8)},
        extra={k: rows_of(v) for k, v in tm.items()},
    )


def _cfg(**kw):
    return SimpleNamespace(seed=3, gamma=0.9, gae_lambda=0.95, tvt_alpha=0.9, tvt_threshold=2.0,
                           tvt_mode="both", tvt_transport_top_k=3, **kw)


def test_sham_moves_the_same_count_and_total_as_the_real_rule_on_the_same_shards():
    rng = np.random.default_rng(4)
    shards = [_shard(u, 40, 2, 4, 10, rng) for u in range(3)]
    agent = SimpleNamespace(memory_size=60)
    real = transport_rewards(shards[-1], shards[:-1], agent, _cfg(), "semantic")
    sham = transport_rewards(shards[-1], shards[:-1], agent, _cfg(), "sham")
    r = [p for p in real.parts if p[2] == "semantic"]
    s = [p for p in sham.parts if p[2] == "sham"]
    assert sum(len(p[1]) for p in r) >= 10
    assert [(slot, len(tr)) for slot, tr, _ in s] == [(slot, len(tr)) for slot, tr, _ in r]
    assert sum(tr.amount.sum() for _, tr, _ in s) == pytest.approx(sum(tr.amount.sum() for _, tr, _ in r))
    assert any((a[1].target != b[1].target).any() for a, b in zip(r, s, strict=True))
    # what landed in this shard plus what went back for replay is the same total either way
    tot = lambda res: res.rewards.sum() + sum(v.sum() for v in res.replay.values())  # noqa: E731
    assert tot(sham) == pytest.approx(tot(real), rel=1e-5)
    # the draws are a function of (seed, update): the same again
    again = transport_rewards(shards[-1], shards[:-1], agent, _cfg(), "sham")
    assert all((a[1].target == b[1].target).all() for a, b in zip(sham.parts, again.parts, strict=True))


# --- tvt-learned -------------------------------------------------------------------------------------
def test_tvt_learned_reads_no_event_tags():
    """The learned transport runs on a shard without any role tag columns and moves value; the
    semantic rule on it would need them (KeyError)."""
    rng = np.random.default_rng(5)
    T, B, N = 40, 1, 2
    strength = np.zeros((T, B * N, 2), np.float32)
    strength[30:33, :, 0] = 3.0  # one span above the threshold on head 0
    sh = [_shard(u, T, B, N, 10, rng, strength=strength, with_tags=False) for u in range(2)]
    cfg = TrainConfig.from_dict({"mode": "tvt-learned"})
    transport = conditions.get_condition("tvt-learned").transport_for(cfg.tvt_mode)
    assert transport == "learned"
    res = transport_rewards(sh[1], sh[:1], SimpleNamespace(memory_size=60), _cfg_learned(cfg), transport)
    assert res.parts and {m for _, _, m in res.parts} == {"learned"}
    assert all(len(tr) == 1 for _, tr, _ in res.parts)  # top-row transport: one row per span
    with pytest.raises(KeyError):
        transport_rewards(sh[1], sh[:1], SimpleNamespace(memory_size=60), _cfg(), "semantic")


def _cfg_learned(cfg):
    return SimpleNamespace(seed=3, gamma=0.9, gae_lambda=0.95, tvt_alpha=0.9, tvt_threshold=cfg.tvt_threshold,
                           tvt_mode=cfg.tvt_mode, tvt_transport_top_k=cfg.tvt_transport_top_k)


# --- hit-cost ----------------------------------------------------------------------------------------
def _events(rows):
    """rows: (env, event_type, agent, target)."""
    ev = EventBatch.empty(len(rows))
    for i, (env, et, a, x) in enumerate(rows):
        ev.env[i], ev.event_type[i], ev.agent[i], ev.target[i] = env, et, a, x
    return ev


def test_hit_cost_charges_own_landed_hits_only():
    assert EVENT_TYPES[ZAP_HIT] == "ZAP_HIT"
    ev = _events([
        (0, ZAP_FIRED, 0, -1),  # a miss: agent 0 fired, hit nobody
        (0, ZAP_FIRED, 1, -1), (0, ZAP_HIT, 1, 2),  # agent 1 hit agent 2: only 1 pays
        (1, ZAP_HIT, 0, 1), (1, ZAP_HIT, 0, 2),  # env 1: agent 0 landed two hits (a wide beam)
    ])
    hits = landed_hits(ev, B=2, N=3)
    assert hits.tolist() == [0, 1, 0, 2, 0, 0]
    r = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)
    np.testing.assert_allclose(shaped_rewards(r, hits, 0.11), [1.0, -0.11, 0.0, -0.22, 1.0, 0.0], rtol=1e-6)
    assert landed_hits(_events([]), 2, 3).tolist() == [0] * 6


def test_hit_cost_run_learns_from_env_rewards_minus_its_own_hits(tmp_path):
    """A tiny hit-cost run: the rewards its learner got differ from the env's exactly by
    HIT_COST times the agent's own ZAP_HIT events at that step (from the lake)."""
    import pyarrow.parquet as pq

    from karmic.training.ppo import Trainer

    cfg = TrainConfig.from_dict(dict(mode="hit-cost", grid_size=10, seed=2, num_envs=2, num_steps=20, seq_len=10,
                                     hidden=32, latent=16, total_steps=2 * 20 * 4, checkpoint_every=1, threads=1,
                                     precision="fp32", env_overrides={"max_steps": 20}, run_id="hc"))
    tr = Trainer(cfg, tmp_path)
    seen = []
    learn = tr.learn
    tr.learn = lambda shard, rewards: (seen.append((shard, rewards)), learn(shard, rewards))[1]
    tr.run()
    from collections import Counter

    ev = pq.read_table(tmp_path / "events" / "run_id=hc").to_pylist()
    hits = Counter((r["episode"], r["t"], r["agent"]) for r in ev if r["event_type"] == "ZAP_HIT")
    charged = 0
    for shard, rewards in seen:
        diff = shard.reward - rewards
        for row in range(shard.n_rows):
            ep, t0, ag = shard.rows["episode"][row], shard.rows["t0"][row], shard.rows["agent"][row]
            for j in range(shard.seq_len):
                n = hits.get((ep, t0 + j, f"agent_{ag}"), 0)
                assert diff[row, j] == pytest.approx(conditions.HIT_COST * n, abs=1e-6)
                charged += n
    assert charged > 0  # the tiny run landed hits, so the check saw charges


# --- both learners -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sham", "hit-cost", "tvt-learned"])
def test_new_conditions_train_with_drqn(tmp_path, mode):
    tiny = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "20",  # DRQN: one window
            "--hidden", "32", "--set", "max_steps=20", "--threads", "1"]
    res = CliRunner().invoke(app, ["train", "--algo", "drqn", "--mode", mode, "--replay-shards", "2",
                                   "--total-steps", "40", "--lake", str(tmp_path), *tiny])
    assert res.exit_code == 0, res.output
    run_id = res.stdout.strip().splitlines()[-1].split("\t")[0]
    run = json.loads((tmp_path / "runs" / f"run_id={run_id}" / "run.json").read_text())
    assert run["condition"] == mode and run["algo"] == "drqn" and run["status"] == "completed"
