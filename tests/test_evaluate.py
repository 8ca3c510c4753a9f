"""`karmic evaluate`: solo and cross-play on two short trained runs in a lake and on policy files in a
results folder; eval runs readable by SQL; bad sources and mismatched observations are one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from karmic.cli import app
from karmic.lake import connect

EP = ["--episodes", "1", "--max-steps", "20"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Two tiny trained runs (baseline seeds 1 and 2), 20-step episodes."""
    from karmic.training.ppo import TrainConfig, train

    lake = tmp_path_factory.mktemp("eval")
    for seed in (1, 2):
        train(TrainConfig(mode="baseline", grid_size=10, seed=seed, num_envs=2, num_steps=20, seq_len=10, hidden=16,
                          latent=8, total_steps=80, checkpoint_every=1, threads=1, precision="fp32",
                          env_overrides={"max_steps": 20}, run_id=f"r{seed}"), lake)
    return lake


def _eval(lake, *args):
    return CliRunner().invoke(app, ["evaluate", *args, "--lake", str(lake)])


def test_solo_and_cross_play_on_two_runs_write_eval_runs(lake):
    r = _eval(lake, "r1", "r2", *EP, "--focal", "2", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    got = {(x["scenario"], x["focal"], x["role"], x["policy"]) for x in rows}
    # solo for each run and the two scripted references, solo-frozen likewise, cross-play both ways
    for p in ("r1", "r2", "random", "greedy"):
        assert ("solo", p, "solo", p) in got
        assert ("solo-frozen", p, "focal", p) in got and ("solo-frozen", p, "frozen", "no-op") in got
    assert ("cross-play", "r1", "focal", "r1") in got and ("cross-play", "r1", "background", "r2") in got
    assert ("cross-play", "r2", "focal", "r2") in got and ("cross-play", "r2", "background", "r1") in got
    cross = {(x["focal"], x["role"]): x for x in rows if x["scenario"] == "cross-play"}
    assert cross[("r1", "focal")]["agents"] == 2 and cross[("r1", "background")]["agents"] == 3
    con = connect(lake)
    kinds = dict(con.sql("select kind, count(*) from runs group by kind").fetchall())
    assert kinds == {"train": 2, "eval": 4 + 4 + 2}
    # alone on the board: the others never act, eat, get seen or met
    solo = con.sql("select e.agent, a.role, e.apples, e.zaps_fired, e.times_hit, e.encounters, e.frozen_steps "
                   "from episodes e join eval_agents a using (run_id, agent) join runs using (run_id) "
                   "where runs.condition = 'eval-solo' and a.role = 'absent'").fetchall()
    assert solo and all(row[2:6] == (0, 0, 0, 0) and row[6] == 20 for row in solo)
    assert con.sql("select count(*) from episodes e join eval_agents a using (run_id, agent) "
                   "where a.role = 'solo' and e.encounters > 0").fetchall()[0][0] == 0
    frozen = con.sql("select sum(e.zaps_fired) from episodes e join eval_agents a using (run_id, agent) "
                     "where a.role = 'frozen'").fetchall()[0][0]
    assert frozen == 0
    # the per-agent query carries the role, the summary query is listed
    roles = {row[0] for row in con.sql("select distinct role from (" + (
        __import__("karmic.lake", fromlist=["query_sql"]).query_sql("agent_episodes")) + ")").fetchall()}
    assert {"solo", "focal", "background", "frozen", "absent", None} <= roles
    lst = CliRunner().invoke(app, ["query", "--list", "--lake", str(lake)])
    assert "eval_summary" in lst.stdout and "welfare" in lst.stdout


def test_the_same_seed_plays_the_same_episodes(lake):
    def played():
        r = _eval(lake, "r1", *EP, "--scenario", "solo-frozen", "--no-references", "--seed", "3", "--json")
        assert r.exit_code == 0, r.output
        rid = json.loads(r.stdout.strip().splitlines()[-1])[0]["run_id"]
        return connect(lake, run=rid).sql(
            "select episode, agent, \"return\", apples, zaps_fired, times_hit, encounters from episodes order by all"
        ).fetchall()

    assert played() == played()


def test_policy_files_of_a_results_folder(lake, tmp_path):
    from pipelines.study_report import copy_policies

    runs = [{"run_id": rid, "status": "completed", "scripted": False, "condition": "baseline"} for rid in ("r1", "r2")]
    index = copy_policies(str(lake), tmp_path, runs)  # runs without kept policies: final.pt from the checkpoint
    assert {e["file"] for e in index} == {"policies/r1/final.pt", "policies/r2/final.pt"}
    out = tmp_path / "lake2"
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "policies" / "r1"), str(tmp_path / "policies" / "r2" / "final.pt"),
                                 *EP, "--scenario", "cross-play", "--lake", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert {(x["focal"], x["role"], x["policy"]) for x in rows} == {
        ("r1", "focal", "r1"), ("r1", "background", "r2"), ("r2", "focal", "r2"), ("r2", "background", "r1")}
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "policies" / "r1"), *EP, "--scenario", "solo",
                                 "--lake", str(out)])
    assert r.exit_code == 0, r.output
    assert "greedy" in r.stdout and "r1" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["/no/such/policy.pt"], "unknown policy"),
    (["no-such-run"], "unknown policy"),
    (["r1", "--preset", "karmic-small-id"], "takes observations (11, 11, 3)"),
    (["r1", "--episodes", "0"], "--episodes must be >= 1"),
    (["r1", "--scenario", "duel"], "unknown scenario"),
    (["r1", "--scenario", "cross-play"], "cross-play needs two policies"),
    (["r1", "r2", "--scenario", "cross-play", "--focal", "5"], "--focal 5"),
])
def test_bad_input_is_one_line_and_exit_2(lake, args, needle):
    before = sorted(p.name for p in (lake / "runs").iterdir())
    r = _eval(lake, *args)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert sorted(p.name for p in (lake / "runs").iterdir()) == before  # nothing written


def test_a_foreign_file_is_one_line(lake, tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a policy")
    r = _eval(lake, str(bad))
    assert r.exit_code == 2 and "not a karmic policy" in r.stderr


def _rows(lake, rid):
    con = connect(lake, run=rid)
    eps = con.sql("select * exclude (run_id) from episodes order by episode, agent").fetchall()
    evs = con.sql("select * exclude (run_id) from events order by episode, seq").fetchall()
    return eps, evs


def _play(lake, specs, scenario, episodes, seed=5, n_focal=1):
    from pipelines import evaluate as E

    sources = [E.resolve_source(s, lake) for s in specs]
    config = E.env_config_for(sources, grid_size=10, overrides={"max_steps": 20})
    sc = E.Scenario(scenario, sources[0], sources[1] if len(sources) > 1 else None, n_focal)
    return _rows(lake, E.run_scenario(lake, sc, config, episodes, seed))


@pytest.mark.parametrize("specs, scenario", [(["r1", "r2"], "cross-play"), (["r1", "greedy"], "cross-play"),
                                             (["random", "r2"], "cross-play"), (["r1"], "solo")])
def test_the_same_seed_writes_the_same_rows_bit_for_bit(lake, specs, scenario):
    """Episodes and events, every column but the run id, trained and scripted policies."""
    a = _play(lake, specs, scenario, 3)
    assert a == _play(lake, specs, scenario, 3)
    assert a != _play(lake, specs, scenario, 3, seed=6)
    eps, evs = a
    assert sorted({r[0] for r in eps}) == [0, 1, 2] and len(eps) == 3 * 5
    # each episode as before: its own episode number, global_step = episode * max_steps + t
    assert {(r[0], r[1]) for r in eps} == {(e, e * 20) for e in range(3)}
    assert evs and all(r[2] == r[0] * 20 + r[1] and 0 <= r[1] < 20 for r in evs)
    assert {r[0] for r in evs} == {0, 1, 2}


def test_batched_episodes_are_the_episodes_played_one_at_a_time(lake, monkeypatch):
    """Each episode is seeded on its own (environment and actions), so how many are played in one
    batch of environments does not change it: exact for scripted policies; a trained policy's
    network may round a logit differently on another batch size (not asserted)."""
    from pipelines import evaluate as E

    batched = _play(lake, ["greedy", "random"], "cross-play", 3)
    monkeypatch.setattr(E, "MAX_BATCH", 1)
    assert _play(lake, ["greedy", "random"], "cross-play", 3) == batched
    # and the first episode of three is the episode of a one-episode run
    one = _play(lake, ["greedy", "random"], "cross-play", 1)
    assert one[0] == batched[0][:5] and one[1] == [r for r in batched[1] if r[0] == 0]


def test_a_trained_policy_acts_only_for_its_agents(lake, monkeypatch):
    """cross-play with --focal 2: the focal policy sees 2 agents' observations per episode, the
    background 3; one forward pass per step for all episodes."""
    from pipelines import evaluate as E

    seen = []
    act = E._TrainedActor.act

    def spy(self, env, obs, t):
        out = act(self, env, obs, t)
        seen.append((tuple(self.agents), out.shape))
        return out

    monkeypatch.setattr(E._TrainedActor, "act", spy)
    _play(lake, ["r1", "r2"], "cross-play", 3, n_focal=2)
    assert set(seen) == {((0, 1), (3, 2)), ((2, 3, 4), (3, 3))} and len(seen) == 2 * 20


@pytest.mark.parametrize("tvt, n_agents", [(False, 0), (True, 0), (False, 5)])
def test_a_policy_loads_to_the_weights_a_built_network_would_have(tvt, n_agents):
    """agent_from_checkpoint builds on the meta device and takes the file's fp16 tensors: the same
    weights, bit for bit and in fp32, as load_state_dict into a network built the usual way."""
    import torch

    from karmic.agents.network import KarmicAgent
    from karmic.agents.policy import agent_from_checkpoint

    m = KarmicAgent((11, 11, 8), use_tvt=tvt, n_agents=n_agents, hidden=32)
    ck = {"agent_config": m.config(), "model": {k: v.half() for k, v in m.state_dict().items()}}
    got = agent_from_checkpoint(ck)
    want = KarmicAgent(**{**m.config(), "obs_shape": (11, 11, 8)})
    want.load_state_dict(ck["model"])
    g, w = got.state_dict(), want.state_dict()
    assert set(g) == set(w) and all(torch.equal(g[k], w[k]) and g[k].dtype == w[k].dtype for k in w)
    assert not any(t.is_meta for t in got.parameters())


def test_a_q_learner_acts_on_its_arg_max(lake, monkeypatch):
    """A DRQN policy (load_policy(...).greedy) takes the arg-max of its head: no uniforms drawn."""
    from karmic.agents import policy as P
    from pipelines import evaluate as E

    real = P.load_policy
    monkeypatch.setattr(P, "load_policy", lambda path, **kw: real(path, greedy=True, **kw))
    starts = []
    start = E._TrainedActor.start

    def spy(self, env, episodes):
        start(self, env, episodes)
        starts.append((self.greedy, self.u))

    monkeypatch.setattr(E._TrainedActor, "start", spy)
    a = _play(lake, ["r1", "r2"], "cross-play", 2)
    assert starts == [(True, None), (True, None)] and a == _play(lake, ["r1", "r2"], "cross-play", 2)
