"""Studies: the file format and its errors, verdicts on hand-made metrics (known answers),
Holm, equivalence margins, pairing, `--from-results`, one driver per lake, a study killed
with SIGKILL that resumes to the same verdicts as an uninterrupted one, and a study run across
lakes that do not survive (`--carry`) to the same metrics and verdicts as one lake.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from karmic.cli import app
from karmic.lake import queries_dir
from pipelines.study import (
    METRICS,
    StudyError,
    StudyLock,
    carried_runs,
    manifest_for,
    mark_carried,
    parse_study,
    sync_manifest,
)
from pipelines.study_report import analyse, build_report
from pipelines.sweep import cell_run_id, is_done

ROOT = Path(__file__).resolve().parent.parent

# t(0.975, df): the tabulated quantiles the CIs use
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 8: 2.3060, 10: 2.2281}


def _write(tmp: Path, body: str, name: str = "s") -> Path:
    p = tmp / f"{name}.toml"
    p.write_text(textwrap.dedent(body))
    return p


HEAD = """
[study]
name = "known"
registered = "2026-12-01"
[factors]
conditions = ["baseline", "tvt", "random"]
grid_sizes = [10]
seeds = [1, 2, 3]
[[levels]]
name = "x"
[budget]
total_steps = 1000
[windows]
late = [0.8, 1.0]
mid = [0.4, 0.6]
"""


def _metrics(values: dict[tuple[str, str, int], list[float]], episodes: int = 11) -> pa.Table:
    """Hand-made metrics: per (condition, window, seed) the hits per agent-step of every episode
    in that window (100,000 agent-steps per episode; frac = episode / (episodes - 1))."""
    rows = []
    for (cond, _, seed) in {(c, w, s) for (c, w, s) in values}:
        run = f"known-x-{cond}-g10-s{seed}"
        for ep in range(episodes):
            frac = ep / (episodes - 1)
            win = "late" if frac >= 0.8 else ("mid" if 0.4 <= frac < 0.6 else None)
            v = values.get((cond, win, seed), [0.0])[0] if win else 0.0
            rows.append({"level": "x", "condition": cond, "grid_size": 10, "seed": seed,
                         "scripted": cond == "random", "run_id": run, "episode": ep, "global_step": ep * 100,
                         "n_agents": 5, "steps": 20000, "agent_steps": 100_000, "total_return": 0.0, "apples": 0,
                         "zaps_fired": 0, "hits": round(v * 100_000), "predatory_hits": round(v * 100_000),
                         "retribution_hits": 0, "frozen_steps": 0, "total_debt": 0.0,
                         "semantic_amount": 0.0, "semantic_on_target_amount": 0.0, "transported_amount": 0.0})
    return pa.Table.from_pylist(rows)


def _analyse(tmp: Path, predictions: str, values: dict) -> dict:
    study = parse_study(_write(tmp, HEAD + predictions))
    out = tmp / "res"
    out.mkdir(exist_ok=True)
    pq.write_table(_metrics(values), out / "metrics.parquet")
    return {v["id"]: v for v in analyse(study, out)["verdicts"]}


def _welch(a: list[float], b: list[float]) -> tuple[float, float, int]:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se = math.sqrt(va / len(a) + vb / len(b))
    df = (va / len(a) + vb / len(b)) ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return ma - mb, se, math.floor(df)


# --- the t tail: known answers ----------------------------------------------------------------------
def test_t_tail_matches_the_quantile_table():
    con = duckdb.connect()
    con.execute((queries_dir() / "study" / "_t_sf.sql").read_text())
    for df, t in T975.items():
        assert 2 * con.execute(f"select t_sf({t}, {df})").fetchone()[0] == pytest.approx(0.05, abs=2e-5)
    assert con.execute("select t_sf(0, 7)").fetchone()[0] == pytest.approx(0.5)
    assert con.execute("select t_sf(1.0, 1)").fetchone()[0] == pytest.approx(0.25)  # Cauchy: atan(1)/pi
    assert con.execute("select t_sf(-2.7764, 4)").fetchone()[0] == pytest.approx(0.975, abs=2e-5)


def test_metric_names_are_the_sql_views_metrics():
    sql = (queries_dir() / "study" / "_metric_values.sql").read_text()
    import re

    assert set(re.findall(r"\('([a-z_]+)',", sql)) == set(METRICS)


# --- verdicts on hand-made metrics -------------------------------------------------------------------
@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def test_greater_and_less_known_answers(tmp):
    a = [0.030, 0.032, 0.034]
    b = [0.010, 0.012, 0.011]
    vals = {("tvt", "late", s): [a[s - 1]] for s in (1, 2, 3)}
    vals |= {("baseline", "late", s): [b[s - 1]] for s in (1, 2, 3)}
    v = _analyse(tmp, """
[[predictions]]
id = "up"
metric = "hits_per_agent_step"
test = "greater"
a = { condition = "tvt" }
b = { condition = "baseline" }
[[predictions]]
id = "down"
metric = "hits_per_agent_step"
test = "less"
a = { condition = "tvt" }
b = { condition = "baseline" }
""", vals)
    diff, se, df = _welch(a, b)
    up = v["up"]
    assert up["diff"] == pytest.approx(diff)
    assert up["se"] == pytest.approx(se)
    assert up["df"] == df
    assert up["ci_low"] == pytest.approx(diff - T975[df] * se)
    assert up["ci_high"] == pytest.approx(diff + T975[df] * se)
    assert up["verdict"] == "supported"
    assert v["down"]["verdict"] == "contradicted"
    # the same effect predicted the wrong way round: its support p is large, its contradiction small
    assert v["down"]["p_support"] > 0.9 and v["down"]["p_contra"] < 0.01
    # Holm over 2 predictions: the smaller p doubled, the larger one at least that
    ps = sorted(x["p_support"] for x in v.values())
    holm = sorted(x["p_support_holm"] for x in v.values())
    assert holm[0] == pytest.approx(min(1, 2 * ps[0]))
    assert holm[1] == pytest.approx(max(holm[0], ps[1]))


def _greater(pid: str, metric: str, a: str, b: str) -> str:
    """One `greater` prediction of condition a over condition b, as study-file TOML."""
    return f"""
[[predictions]]
id = "{pid}"
metric = "{metric}"
test = "greater"
a = {{ condition = "{a}" }}
b = {{ condition = "{b}" }}
"""


def _marginal_values(random_seeds: tuple[int, ...]) -> dict:
    """tvt above baseline at p ~ 0.03 unadjusted (3 seeds each), random at 0.02."""
    a = [0.0300, 0.0310, 0.0320]
    b = [0.0271, 0.0281, 0.0291]
    vals = {("tvt", "late", s): [a[s - 1]] for s in (1, 2, 3)}
    vals |= {("baseline", "late", s): [b[s - 1]] for s in (1, 2, 3)}
    return vals | {("random", "late", s): [0.02] for s in random_seeds}


def test_holm_turns_a_marginal_effect_inconclusive(tmp):
    # p ~ 0.03 unadjusted: supported alone, not once four predictions share the 0.05
    vals = _marginal_values((1, 2, 3))
    one = _greater("p0", "hits_per_agent_step", "tvt", "baseline")
    alone = _analyse(tmp, one, vals)["p0"]
    assert 0.01 < alone["p_support"] < 0.05
    assert alone["verdict"] == "supported"
    more = one + "".join(_greater(f"q{i}", "apples_per_agent_step", "tvt", "baseline") for i in range(3))
    crowded = _analyse(tmp, more, vals)["p0"]
    assert crowded["p_support"] == pytest.approx(alone["p_support"])
    assert crowded["p_support_holm"] >= 0.05
    assert crowded["verdict"] == "inconclusive"
    assert "Holm does not" in crowded["note"]


def test_equivalence_needs_the_whole_ci_inside_the_margin(tmp):
    base = [0.0200, 0.0202, 0.0198]
    close = [0.0201, 0.0203, 0.0199]
    vals = {("baseline", "late", s): [base[s - 1]] for s in (1, 2, 3)}
    vals |= {("tvt", "late", s): [close[s - 1]] for s in (1, 2, 3)}
    v = _analyse(tmp, """
[[predictions]]
id = "wide"
metric = "hits_per_agent_step"
test = "equivalent"
margin = 0.10
a = { condition = "tvt" }
b = { condition = "baseline" }
[[predictions]]
id = "narrow"
metric = "hits_per_agent_step"
test = "equivalent"
margin_abs = 0.0001
a = { condition = "tvt" }
b = { condition = "baseline" }
""", vals)
    wide, narrow = v["wide"], v["narrow"]
    assert wide["margin"] == pytest.approx(0.1 * 0.02)
    assert -wide["margin"] < wide["ci_low"] and wide["ci_high"] < wide["margin"]
    assert wide["verdict"] == "supported"
    # the CI (about +-0.0004) is wider than a 0.0001 margin: not shown equivalent, not shown different
    assert narrow["ci_low"] < -narrow["margin"] or narrow["ci_high"] > narrow["margin"]
    assert narrow["verdict"] == "inconclusive"


def test_equivalence_contradicted_when_the_ci_lies_outside_the_margin(tmp):
    vals = {("baseline", "late", s): [0.020 + 0.0002 * s] for s in (1, 2, 3)}
    vals |= {("tvt", "late", s): [0.040 + 0.0002 * s] for s in (1, 2, 3)}
    v = _analyse(tmp, """
[[predictions]]
id = "same"
metric = "hits_per_agent_step"
test = "equivalent"
margin = 0.10
a = { condition = "tvt" }
b = { condition = "baseline" }
""", vals)["same"]
    assert v["ci_low"] > v["margin"]
    assert v["verdict"] == "contradicted"


def test_windows_of_one_cell_are_paired_by_seed(tmp):
    # late = mid + 0.001 in every seed, seeds far apart: paired, the difference is exact-ish
    mid = [0.010, 0.030, 0.050]
    vals = {("baseline", "mid", s): [mid[s - 1]] for s in (1, 2, 3)}
    vals |= {("baseline", "late", s): [mid[s - 1] + 0.001 + 0.0001 * s] for s in (1, 2, 3)}
    v = _analyse(tmp, """
[[predictions]]
id = "sustained"
metric = "hits_per_agent_step"
test = "not_less"
margin = 0.25
a = { condition = "baseline" }
b = { window = "mid" }
""", vals)["sustained"]
    assert v["paired"] is True
    assert v["df"] == 2
    d = [0.001 + 0.0001 * s for s in (1, 2, 3)]
    md = sum(d) / 3
    sd = math.sqrt(sum((x - md) ** 2 for x in d) / 2)
    assert v["diff"] == pytest.approx(md, abs=1e-9)
    assert v["se"] == pytest.approx(sd / math.sqrt(3), rel=1e-3)
    assert v["verdict"] == "supported"


def test_a_ratio_without_hits_is_inconclusive_with_a_note(tmp):
    vals = {("baseline", "late", s): [0.0] for s in (1, 2, 3)}
    vals |= {("tvt", "late", s): [0.0] for s in (1, 2, 3)}
    v = _analyse(tmp, """
[[predictions]]
id = "ratio"
metric = "retribution_ratio"
test = "greater"
a = { condition = "tvt" }
b = { condition = "baseline" }
""", vals)["ratio"]
    assert v["verdict"] == "inconclusive"
    assert v["note"] == "no data on one side"


def test_scripted_policy_uses_all_its_episodes(tmp):
    vals = {("baseline", "late", s): [0.02 + 0.001 * s] for s in (1, 2, 3)}
    vals |= {("random", "late", s): [0.01] for s in (1, 2, 3)}  # only its late episodes have hits
    v = _analyse(tmp, """
[[predictions]]
id = "above"
metric = "hits_per_agent_step"
test = "greater"
a = { condition = "baseline" }
b = { condition = "random" }
""", vals)["above"]
    # random's late episodes (3 of 11: frac 0.8, 0.9, 1) hold its hits; pooled over all 11
    assert v["mean_b"] == pytest.approx(0.01 * 3 / 11)


# --- bad study files: one line, exit 2, before anything trains -----------------------------------------
GOOD_PRED = """
[[predictions]]
id = "p"
metric = "hits_per_agent_step"
test = "greater"
a = { condition = "tvt" }
b = { condition = "baseline" }
"""


@pytest.mark.parametrize("body,needle", [
    (HEAD.replace("seeds = [1, 2, 3]", "seeds = [1]") + GOOD_PRED, "at least 2 seeds"),
    (HEAD + GOOD_PRED.replace("hits_per_agent_step", "hits_per_episode"), "unknown metric"),
    (HEAD + GOOD_PRED.replace('condition = "tvt"', 'condition = "tvtx"'), "is not in the study"),
    (HEAD + GOOD_PRED.replace('b = { condition = "baseline" }', 'b = { level = "nope" }'), "unknown level"),
    (HEAD + GOOD_PRED.replace("greater", "equivalent"), "needs exactly one of margin"),
    (HEAD + GOOD_PRED.replace('test = "greater"', 'test = "greater"\nmargin = 0.1'), "takes no margin"),
    (HEAD + GOOD_PRED.replace('b = { condition = "baseline" }', 'b = { window = "never" }'), "unknown window"),
    (HEAD.replace('"random"]', '"random", "robots"]') + GOOD_PRED, "unknown condition"),
    (HEAD.replace("[budget]", "[budget]\ntrain = { lr_typo = 1 }") + GOOD_PRED, "unknown training field"),
    (HEAD.replace('name = "x"', 'name = "x"\nenv = { regrowth_probs = [2.0] }') + GOOD_PRED, "regrowth_probs"),
    (HEAD + "[[predictions]\n", "not valid TOML"),
    ("import = 'os'\n" + HEAD + GOOD_PRED, "unknown key"),
])
def test_a_bad_study_file_is_one_line_and_exit_2(tmp, body, needle):
    p = _write(tmp, body)
    with pytest.raises(StudyError, match=needle):
        parse_study(p)
    res = CliRunner().invoke(app, ["study", "check", str(p)])
    assert res.exit_code == 2
    assert needle in res.output
    assert "Traceback" not in res.output


def test_the_committed_study_files_parse():
    for p in sorted((ROOT / "studies").glob("*.toml")):
        st = parse_study(p)
        assert st.predictions, p
        assert st.cells(), p


def test_a_second_driver_refuses_while_the_first_is_alive(tmp):
    lake = str(tmp / "lake")
    with StudyLock(lake, "known"):
        with pytest.raises(StudyError, match="already running"):
            StudyLock(lake, "known").acquire()
    StudyLock(lake, "known").acquire()  # released: free again


def test_a_lock_left_by_a_dead_driver_is_taken_over(tmp):
    lake = str(tmp / "lake")
    lk = StudyLock(lake, "known")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lk.path.parent.mkdir(parents=True)
    import socket

    lk.path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    lk.acquire()
    assert json.loads(lk.path.read_text())["pid"] == os.getpid()
    lk.release()
    assert not lk.path.exists()


# --- end to end: run, kill -9, resume; the same verdicts as an uninterrupted study ------------------------
E2E = """
[study]
name = "e2e"
registered = "2026-12-01"
[factors]
conditions = ["baseline", "random"]
grid_sizes = [10]
seeds = [1, 2]
[[levels]]
name = "x"
env = { max_steps = 20 }
[budget]
total_steps = 160
episodes = 2
train = { num_envs = 2, num_steps = 20, seq_len = 10, hidden = 32, latent = 16, checkpoint_every = 1 }
[windows]
late = [0.5, 1.0]
mid = [0.0, 0.5]
[[predictions]]
id = "above-random"
metric = "zaps_fired_per_agent_step"
test = "greater"
a = { condition = "baseline" }
b = { condition = "random" }
[[predictions]]
id = "sustained"
metric = "apples_per_agent_step"
test = "not_less"
margin = 0.5
a = { condition = "baseline" }
b = { window = "mid" }
"""


def _driver(study: Path, lake: Path, workers: int = 1, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "karmic.cli", "study", "run", str(study), "--lake", str(lake),
                             "--workers", str(workers), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=None if env is None else {**os.environ, **env})


@pytest.fixture(scope="module")
def e2e_clean(tmp_path_factory) -> tuple[Path, Path]:
    """The E2E study run once, uninterrupted, on one lake: (study file, lake); read, never written."""
    tmp = tmp_path_factory.mktemp("e2e_clean")
    study = _write(tmp, E2E, "e2e")
    p = _driver(study, tmp / "clean", workers=2)
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out
    return study, tmp / "clean"


def _episode_rows(lake: Path) -> dict[str, list[tuple]]:
    """Each cell's episodes, from its finished run: a scripted cell killed mid-simulation is
    simulated again under ``<run id>-rN`` (its partial run stays in the lake, never appended to),
    so the cell is keyed by the run id without that suffix."""
    files = str(lake / "episodes" / "run_id=*" / "*.parquet")
    rows = duckdb.sql(f"select run_id, episode, agent, \"return\", apples, zaps_fired from read_parquet('{files}', "
                      "hive_partitioning = false) order by all").fetchall()
    done = {rid: is_done(str(lake), rid) for rid in {r[0] for r in rows}}
    out: dict[str, list[tuple]] = {}
    for r in rows:
        if done[r[0]]:
            out.setdefault(cell_run_id(r[0]), []).append(r[1:])
    return out


def test_study_killed_with_sigkill_resumes_to_the_uninterrupted_verdicts(tmp, e2e_clean):
    study, clean = e2e_clean
    killed = tmp / "killed"

    # kill the driver (and with it, by PR_SET_PDEATHSIG, its worker) once a trained run has a checkpoint
    p = _driver(study, killed)
    deadline = time.monotonic() + 120
    ckpts = killed / "checkpoints"
    while time.monotonic() < deadline and not list(ckpts.glob("run_id=*/ckpt-*.pt")):
        time.sleep(0.2)
    assert list(ckpts.glob("run_id=*/ckpt-*.pt")), "no checkpoint appeared"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)
    p = _driver(study, killed)
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out
    assert "already running" not in out

    # a worker killed with SIGKILL: the driver retries the cell, which resumes from its checkpoint
    worker_killed = tmp / "worker_killed"
    p = _driver(study, worker_killed)
    deadline = time.monotonic() + 120
    victim = None
    while time.monotonic() < deadline and victim is None:
        if list((worker_killed / "checkpoints").glob("run_id=*/ckpt-*.pt")):
            kids = subprocess.run(["pgrep", "-P", str(p.pid), "-f", "spawn_main"], capture_output=True,
                                  text=True).stdout.split()
            victim = int(kids[0]) if kids else None
        time.sleep(0.2)
    assert victim is not None, "no worker to kill"
    os.kill(victim, signal.SIGKILL)
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out
    assert "retry" in out

    # no episode written twice, none lost, and every event and episode as in the clean study
    a = _episode_rows(clean)
    for lake in (killed, worker_killed):
        b = _episode_rows(lake)
        assert a.keys() == b.keys()
        for rid in a:
            assert len(set(b[rid])) == len(b[rid]), f"{rid}: an episode written twice"
            assert a[rid] == b[rid], rid
    st = parse_study(study)
    ra = build_report(st, str(clean), tmp / "res_clean", episodes=False)
    rb = build_report(st, str(killed), tmp / "res_killed", episodes=False)
    assert ra["verdicts"] == rb["verdicts"]

    # the report travels: rebuilt from results/ alone, byte for byte
    # (files and policies/: the kept policies, which --from-results leaves as they are)
    before = {str(f.relative_to(tmp)): f.read_bytes() for f in (tmp / "res_clean").rglob("*") if f.is_file()}
    res = CliRunner().invoke(app, ["study", "report", str(study), "--from-results", "--out", str(tmp / "res_clean")])
    assert res.exit_code == 0, res.output
    after = {str(f.relative_to(tmp)): f.read_bytes() for f in (tmp / "res_clean").rglob("*") if f.is_file()}
    assert before.keys() == after.keys()
    assert any("/policies/" in name for name in before)
    for name in ("verdicts.json", "report.md", "cells.json", "fig_hits_per_agent_step.png"):
        assert before[f"res_clean/{name}"] == after[f"res_clean/{name}"], name
    assert all(before[n] == after[n] for n in before if "/policies/" in n)

    # a late episode of each trained cell, re-simulated from the action log and checked, as a GIF
    rg = build_report(st, str(clean), tmp / "res_gif", episodes=True)
    assert rg["verdicts"] == ra["verdicts"]
    gif = tmp / "res_gif" / "episode_g10_x_baseline.gif"
    assert gif.is_file() and gif.read_bytes()[:6] == b"GIF89a"
    assert "episode_g10_x_baseline.gif" in (tmp / "res_gif" / "report.md").read_text()

    # status reads the lake: every cell done
    res = CliRunner().invoke(app, ["study", "status", str(study), "--lake", str(killed), "--format", "json"])
    assert res.exit_code == 0, res.output
    states = [r["state"] for r in json.loads(res.stdout.splitlines()[0])]
    assert states == ["done"] * 4


# --- across lakes that do not survive: completed cells carried in results/ (`--carry`) --------------------
def _status(study: Path, lake: Path, *args: str) -> dict[str, str]:
    res = CliRunner().invoke(app, ["study", "status", str(study), "--lake", str(lake), "--format", "json", *args])
    assert res.exit_code == 0, res.output
    return {r["run_id"]: r["state"] for r in json.loads(res.stdout.splitlines()[0])}


def test_a_study_across_two_lakes_carries_its_completed_cells_to_the_one_lake_results(tmp, e2e_clean):
    clean_study, clean = e2e_clean
    study = _write(tmp, E2E, "e2e")
    st = parse_study(study)
    res, lake_a, lake_b = tmp / "results" / "e2e", tmp / "lake_a", tmp / "lake_b"
    late = "e2e-x-baseline-g10-s2"

    # session 1: one cell does not finish (its first attempt fails after one update, no retry)
    p = _driver(study, lake_a, 1, "--retries", "0", env={"KARMIC_SWEEP_FAIL": "x-baseline-g10-s2:9"})
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 1, out
    ra = build_report(st, str(lake_a), res, episodes=True)
    assert ra["carried"] == []
    runs = {r["run_id"]: r for r in json.loads((res / "runs.json").read_text())}
    assert runs[late]["status"] not in ("completed", "finished")
    assert all(r["plan"] and r["carried"] is False for r in runs.values())
    assert runs["e2e-x-baseline-g10-s1"]["plan"]["total_steps"] == 160
    assert runs["e2e-x-random-g10-s1"]["plan"]["policy"] == "random"
    gif = res / "episode_g10_x_baseline.gif"
    gif_bytes = gif.read_bytes()

    # session 2, a fresh lake: only the unfinished cell trains; status says where the others are
    lake_b.mkdir()
    assert set(_status(study, lake_b, "--carry", "--results", str(res)).values()) == {"carried", "missing"}
    p = _driver(study, lake_b, 1, "--carry", "--results", str(res))
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out
    assert f"3 cell(s) carried from {res}" in out
    assert [d.name for d in (lake_b / "runs").iterdir()] == [f"run_id={late}"]
    states = _status(study, lake_b)  # the manifest marks them: no --carry needed to see it
    assert states.pop(late) == "done" and set(states.values()) == {"carried"}
    # the next run without --carry plans them again: carrying is decided per run
    assert {e["status"] for e in sync_manifest(st, str(lake_b))["tasks"] if e["run_id"] != late} == {"pending"}

    # the report from lake B keeps lake A's rows: the union, as one uninterrupted lake makes it
    rb = build_report(st, str(lake_b), res, episodes=True)
    assert rb["carried"] == sorted(set(runs) - {late})
    merged = {r["run_id"]: r for r in json.loads((res / "runs.json").read_text())}
    assert {rid for rid, r in merged.items() if r["carried"]} == set(rb["carried"])
    assert all(merged[rid]["seconds"] == runs[rid]["seconds"] for rid in rb["carried"])
    assert gif.read_bytes() == gif_bytes  # made from lake A, which is gone: kept as it was
    rc = build_report(parse_study(clean_study), str(clean), tmp / "res_clean", episodes=False)
    assert rb["verdicts"] == rc["verdicts"]
    assert pq.read_table(res / "metrics.parquet").equals(pq.read_table(tmp / "res_clean" / "metrics.parquet"))

    # the merged folder travels: --from-results rebuilds the same verdicts and report
    before = {n: (res / n).read_bytes() for n in ("verdicts.json", "report.md", "cells.json")}
    r = CliRunner().invoke(app, ["study", "report", str(study), "--from-results", "--out", str(res)])
    assert r.exit_code == 0, r.output
    assert before == {n: (res / n).read_bytes() for n in before}
    assert "3 carried from earlier lakes" in before["report.md"].decode()

    # lake A again: its own completed runs come from it; lake B's run is carried the other way
    again = build_report(st, str(lake_a), res, episodes=False)
    assert again["carried"] == [late] and again["verdicts"] == rc["verdicts"]
    assert pq.read_table(res / "metrics.parquet").equals(pq.read_table(tmp / "res_clean" / "metrics.parquet"))

    # a changed study file: no row of another plan is carried in, only the lake's own runs stay
    changed = parse_study(_write(tmp, E2E.replace("max_steps = 20", "max_steps = 40"), "e2e"))
    build_report(changed, str(lake_b), res, episodes=False)
    assert set(pq.read_table(res / "metrics.parquet").column("run_id").to_pylist()) == {late}


def test_a_changed_study_file_carries_no_cell_of_another_plan(tmp, e2e_clean):
    study, clean = e2e_clean
    st = parse_study(study)
    res = tmp / "res"
    build_report(st, str(clean), res, episodes=False)
    assert len(carried_runs(st, res).runs) == 4
    empty = tmp / "empty"
    empty.mkdir()

    # a new budget: the trained cells' plans change, the scripted cells' do not
    budget = _write(tmp, E2E.replace("total_steps = 160", "total_steps = 200"), "budget")
    c = carried_runs(parse_study(budget), res)
    assert sorted(c.runs) == ["x-random-g10-s1", "x-random-g10-s2"]
    assert sorted(c.stale) == ["e2e-x-baseline-g10-s1", "e2e-x-baseline-g10-s2"]
    # a new ecology: nothing carries, in the driver's manifest or in status
    eco = _write(tmp, E2E.replace("max_steps = 20", "max_steps = 40"), "eco")
    c = carried_runs(parse_study(eco), res)
    assert not c.runs and len(c.stale) == 4
    assert mark_carried(sync_manifest(parse_study(eco), str(empty)), c, str(empty)) == []
    r = CliRunner().invoke(app, ["study", "status", str(eco), "--lake", str(empty), "--carry", "--results", str(res)])
    assert r.exit_code == 0, r.output
    assert "0 cell(s) carried" in r.output and "4 completed there under another plan" in r.output
    assert "carried," not in r.output.splitlines()[-1]

    # a completed run keeps the plan it ran with in the manifest, while its task gets the new one
    m = sync_manifest(parse_study(budget), str(clean))
    base = next(e for e in m["tasks"] if e["key"] == "x-baseline-g10-s1")
    assert (base["plan"]["total_steps"], base["config"]["total_steps"]) == (160, 200)


def test_a_constant_side_is_a_one_sample_test(tmp):
    a = [0.95, 0.97, 0.99]
    vals = {("tvt", "late", s): [a[s - 1]] for s in (1, 2, 3)}
    v = _analyse(tmp, """
[[predictions]]
id = "share"
metric = "hits_per_agent_step"
test = "greater"
a = { condition = "tvt" }
b = { value = 0.9 }
""", vals)["share"]
    m = sum(a) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in a) / 2)
    assert v["mean_b"] == pytest.approx(0.9)
    assert v["diff"] == pytest.approx(m - 0.9)
    assert v["df"] == 2
    assert v["ci_low"] == pytest.approx(m - 0.9 - T975[2] * sd / math.sqrt(3))
    assert v["verdict"] == "supported"


def test_a_study_with_a_pending_ecology_checks_but_does_not_run(tmp):
    p = _write(tmp, HEAD.replace("[factors]", '[ecology]\npending = "the calibration has not finished"\n[factors]')
               + GOOD_PRED)
    assert CliRunner().invoke(app, ["study", "check", str(p)]).exit_code == 0
    res = CliRunner().invoke(app, ["study", "run", str(p), "--lake", str(tmp / "lake")])
    assert res.exit_code == 2
    assert "pending (the calibration has not finished)" in res.output
    assert not (tmp / "lake").exists()


def test_a_grid_with_a_pending_ecology_is_left_out_of_the_plan_the_others_run(tmp):
    body = HEAD.replace("grid_sizes = [10]", "grid_sizes = [10, 30]").replace(
        "[factors]", '[ecology]\npresets = { 10 = "small" }\npending = { 30 = "calibration at 30x30 running" }\n[factors]')
    st = parse_study(_write(tmp, body + GOOD_PRED.replace('condition = "tvt"', 'condition = "tvt", grid_size = 10')))
    assert st.runnable_grids == [10]
    assert st.preset(10) == "small"
    tasks = manifest_for(st)["tasks"]
    assert tasks and {t["grid_size"] for t in tasks} == {10}
    # every condition of seed 1 before any of seed 2: a study stopped part-way has whole replicates
    assert [(t["seed"], t["mode"]) for t in tasks[:4]] == [(1, "baseline"), (1, "tvt"), (1, "random"), (2, "baseline")]
    # status: the pending grid's cells are `pending` and not in the steps left
    from pipelines.study_status import study_status

    (tmp / "lake").mkdir()
    _, rows, summary = study_status(st, str(tmp / "lake"))
    assert {r[4] for r in rows if r[2] == 30} == {"pending"} and {r[4] for r in rows if r[2] == 10} == {"missing"}
    assert f"{2 * 3 * 1000:,} env steps left" in summary  # baseline and tvt x 3 seeds at grid 10 only
    # a pending table must name grids of the study and say why
    for bad in ('pending = { 20 = "x" }', 'pending = { 30 = "" }', "pending = 3"):
        with pytest.raises(StudyError, match="pending"):
            parse_study(_write(tmp, body.replace('pending = { 30 = "calibration at 30x30 running" }', bad) + GOOD_PRED.replace('condition = "tvt"', 'condition = "tvt", grid_size = 10')))
    # a preset is still required for every grid that is not pending
    with pytest.raises(StudyError, match="no preset for grid size"):
        parse_study(_write(tmp, body.replace('pending = { 30 = "calibration at 30x30 running" }', "") + GOOD_PRED.replace('condition = "tvt"', 'condition = "tvt", grid_size = 10')))


def test_status_of_a_missing_lake_or_a_bad_format_is_one_line(tmp):
    for args in (["--lake", str(tmp / "nope")], ["--lake", str(tmp), "--format", "xml"]):
        res = CliRunner().invoke(app, ["study", "status", str(ROOT / "studies" / "demo.toml"), *args])
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output
    assert not (tmp / "nope").exists()


def _decide(cells: list[tuple], levels: list[tuple[int, str]], seeds: int = 3) -> list[dict]:
    """queries/study/decision.sql over hand-made cells (grid, level, condition, metric, win, mean, n)."""
    con = duckdb.connect()
    con.register("study_cells", pa.Table.from_pylist(
        [dict(zip(("grid_size", "level", "condition", "metric", "win", "mean", "n_seeds"), c, strict=True))
         for c in cells]))
    con.register("study_levels", pa.Table.from_pylist([{"grid_size": g, "level": lv} for g, lv in levels]))
    con.register("study_decision_rule", pa.Table.from_pylist([{
        "metric": "pred", "condition": "baseline", "window": "late", "above": "random",
        "sustained_window": "mid", "sustained_ratio": 0.75, "floor_metric": "apples",
        "floor_condition": "greedy", "seeds": seeds}]))
    cur = con.execute((queries_dir() / "study" / "decision.sql").read_text())
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _level(g, lv, late, mid, rand, apples, greedy, n=3):
    return [(g, lv, "baseline", "pred", "late", late, n), (g, lv, "baseline", "pred", "mid", mid, n),
            (g, lv, "random", "pred", "late", rand, n), (g, lv, "baseline", "apples", "late", apples, n),
            (g, lv, "greedy", "apples", "late", greedy, n)]


def test_the_decision_rule_picks_the_highest_level_that_passes_all_three_criteria():
    cells = (_level(10, "fades", 9.0, 20.0, 1.0, 5.0, 1.0)       # highest rate, fails (b): 9 < 0.75 x 20
             + _level(10, "tame", 0.5, 0.5, 1.0, 5.0, 1.0)       # fails (a): below random
             + _level(10, "good", 3.0, 3.5, 2.0, 5.0, 1.0)       # passes: 3 > 2, 3 >= 2.625, 5 > 1
             + _level(10, "good2", 2.5, 2.5, 2.0, 5.0, 1.0)      # passes, lower rate
             + _level(10, "collapse", 4.0, 4.0, 2.0, 0.5, 1.0))  # fails (c)
    rows = {r["level"]: r for r in _decide(cells, [(10, lv) for lv in ("fades", "tame", "good", "good2", "collapse")])}
    assert [lv for lv, r in rows.items() if r["chosen"]] == ["good"]
    assert rows["fades"]["sustained_ok"] is False and rows["fades"]["above_ok"] is True
    assert rows["tame"]["above_ok"] is False
    assert rows["collapse"]["floor_ok"] is False
    assert rows["good2"]["passes"] is True and rows["good2"]["chosen"] is False
    assert all(r["final"] for r in rows.values())


def test_the_decision_rule_with_no_passing_level_takes_the_highest_rate_and_is_not_final_while_a_level_is_missing():
    cells = _level(30, "a", 1.0, 5.0, 2.0, 5.0, 1.0) + _level(30, "b", 0.2, 0.2, 2.0, 5.0, 1.0, n=2)
    rows = {r["level"]: r for r in _decide(cells, [(30, "a"), (30, "b"), (30, "c")])}
    assert rows["a"]["chosen"] and not rows["a"]["passes"]
    assert rows["c"]["n_seeds"] == 0 and rows["c"]["rate"] is None and not rows["c"]["chosen"]
    assert not any(r["final"] for r in rows.values())


@pytest.mark.parametrize("table,needle", [
    ('[decision]\nmetric = "hits_per_episode"\ncondition = "baseline"\nabove = "random"\n'
     'sustained = { window = "mid", ratio = 0.75 }\nfloor = { metric = "apples_per_agent_step", condition = "random" }',
     "unknown metric"),
    ('[decision]\nmetric = "hits_per_agent_step"\ncondition = "baseline"\nabove = "greedy"\n'
     'sustained = { window = "mid", ratio = 0.75 }\nfloor = { metric = "apples_per_agent_step", condition = "random" }',
     "not in the study's conditions"),
    ('[decision]\nmetric = "hits_per_agent_step"\ncondition = "baseline"\nabove = "random"\n'
     'sustained = { window = "early", ratio = 0.75 }\nfloor = { metric = "apples_per_agent_step", condition = "random" }',
     "unknown window"),
    ('[decision]\nmetric = "hits_per_agent_step"\ncondition = "baseline"\nabove = "random"',
     "needs sustained"),
])
def test_a_bad_decision_table_is_one_line(tmp, table, needle):
    with pytest.raises(StudyError, match=needle):
        parse_study(_write(tmp, HEAD + table + "\n" + GOOD_PRED))


def test_the_frozen_presets_are_the_levels_the_calibration_chose():
    """karmic-small and karmic-big must be exactly the ecology study's chosen levels (results/ecology/
    decision.json, built by queries/study/decision.sql), and the ablation must run on it."""
    from karmic.envs import make_config
    from pipelines.study import Cell

    chosen = [r for r in json.loads((ROOT / "results" / "ecology" / "decision.json").read_text())["levels"]
              if r["grid_size"] == 10 and r["chosen"]]
    assert [(r["level"], r["passes"], r["final"]) for r in chosen] == [("lean-exclusion", True, True)]
    big = [r for r in json.loads((ROOT / "results" / "ecology" / "decision.json").read_text())["levels"]
           if r["grid_size"] == 30 and r["chosen"]]
    assert [(r["level"], r["passes"], r["final"]) for r in big] == [("matched", True, True)]
    eco = parse_study(ROOT / "studies" / "ecology.toml")
    for preset, g, level in (("karmic-small", 10, "lean-exclusion"), ("karmic-big", 30, "matched")):
        cell = Cell("baseline", g, level, 1)
        assert make_config(preset) == make_config(eco.preset(g), grid_size=g, **eco.env_overrides(cell))
    abl = parse_study(ROOT / "studies" / "ablation.toml")
    assert (abl.preset(10), abl.preset(30)) == ("karmic-small", "karmic-big")
    assert abl.runnable_grids == [10, 30]


def _close(a, b, rel: float = 1e-9) -> bool:
    """JSON values equal, floats to ``rel`` (DuckDB's parallel sums may differ in the last bits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)
    return a == b


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "results").iterdir()
                                        if (p / "metrics.parquet").is_file() and (p / "runs.json").is_file()))
def test_the_committed_results_rebuild_from_themselves(tmp_path, name):
    """What results/<study>/ holds is what today's code makes of its metrics.parquet alone (the
    `--from-results` path a fresh clone takes): same verdicts, cells and decision."""
    import shutil

    out = tmp_path / name
    shutil.copytree(ROOT / "results" / name, out)
    study = parse_study(ROOT / "studies" / f"{name}.toml")
    build_report(study, None, out, from_results=True)
    for f in ("verdicts.json", "cells.json", "decision.json"):
        if (ROOT / "results" / name / f).is_file():
            want = json.loads((ROOT / "results" / name / f).read_text())
            assert _close(json.loads((out / f).read_text()), want), f"results/{name}/{f} differs"


def test_the_scale_figure_needs_two_grids_and_one_level_per_grid(tmp_path):
    """fig_scale.png: late means [CI] per condition at the small and the big grid; not drawn where
    the two points would differ by more than the grid (several levels) or where there is one grid."""
    from pipelines.study_report import SCALE_METRICS, draw_scale_figure

    def cells(levels):
        return [{"grid_size": g, "level": lv, "condition": c, "metric": m, "win": "late", "mean": 0.1 * (i + 1),
                 "ci_low": 0.05, "ci_high": 0.5, "n_seeds": 5}
                for g in (10, 30) for lv in levels for i, c in enumerate(("baseline", "tvt")) for m in SCALE_METRICS]

    ablation = parse_study(ROOT / "studies" / "ablation.toml")
    p = draw_scale_figure(ablation, cells(["default"]), tmp_path)
    assert p == tmp_path / "fig_scale.png" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert draw_scale_figure(ablation, cells(["default", "lean"]), tmp_path / "x") is None
    assert draw_scale_figure(ablation, [], tmp_path / "x") is None
    assert draw_scale_figure(parse_study(ROOT / "studies" / "precision.toml"), cells(["fp32"]), tmp_path / "x") is None


def test_holm_counts_the_predictions_that_have_no_data_yet(tmp):
    # the family is the pre-registered one: a prediction whose cells are missing (an interim
    # report) is inconclusive and still takes its share of the 0.05, so interim verdicts are
    # never more generous than the complete study's
    vals = _marginal_values((1,))  # random has one seed: no CI, no p-value
    body = _greater("p0", "hits_per_agent_step", "tvt", "baseline") + "".join(
        _greater(f"q{i}", "hits_per_agent_step", "random", "baseline") for i in range(3))
    v = _analyse(tmp, body, vals)
    assert all(v[f"q{i}"]["p_support"] is None for i in range(3))
    assert all(v[f"q{i}"]["verdict"] == "inconclusive" for i in range(3))
    assert 0.01 < v["p0"]["p_support"] < 0.05
    assert v["p0"]["p_support_holm"] == pytest.approx(min(1.0, 4 * v["p0"]["p_support"]))
    assert v["p0"]["verdict"] == "inconclusive"


def test_a_study_keeps_each_trained_runs_policies_and_the_report_copies_them(tmp, e2e_clean):
    """Every trained run keeps final.pt and late_start.pt (fp16 weights only) in the lake; the report
    copies them under results/<study>/policies/; --from-results works without them."""
    import torch

    from karmic.agents.policy import load_policy
    from pipelines.checkpoints import latest_checkpoint, list_policies, load_checkpoint

    study, clean = e2e_clean
    rid = "e2e-x-baseline-g10-s1"
    names = {p.name for p in list_policies(clean, rid)}
    assert names == {"final.pt", "late_start.pt"}
    assert not list_policies(clean, "e2e-x-random-g10-s1")  # scripted: nothing to keep
    res = tmp / "res"
    build_report(parse_study(study), str(clean), res, episodes=False)
    final = torch.load(res / "policies" / rid / "final.pt", weights_only=False)
    late = torch.load(res / "policies" / rid / "late_start.pt", weights_only=False)
    assert late["global_step"] >= 80 > late["global_step"] - 2 * 20  # the first update at 0.5 x 160
    assert final["global_step"] == 160 and final["condition"] == "baseline"
    assert {str(v.dtype) for v in final["model"].values() if v.is_floating_point()} == {"torch.float16"}
    ck = load_checkpoint(latest_checkpoint(clean, rid))["model"]
    assert all(torch.equal(final["model"][k], ck[k].half()) for k in ck)
    assert "optimizer" not in final
    index = json.loads((res / "policies" / "index.json").read_text())
    assert {(e["run_id"], e["name"]) for e in index} == {(f"e2e-x-baseline-g10-s{s}", n) for s in (1, 2)
                                                         for n in ("final", "late_start")}
    pol = load_policy(res / "policies" / rid / "final.pt")
    assert pol.act(torch.zeros(1, 5, 11, 11, 3, dtype=torch.uint8).numpy()).shape == (1, 5)
    import shutil

    shutil.rmtree(res / "policies")
    r = CliRunner().invoke(app, ["study", "report", str(study), "--from-results", "--out", str(res)])
    assert r.exit_code == 0, r.output


EVALS = """
[[evaluations]]
id = "alone"
scenario = "solo"
focal = "baseline"
episodes = 1
[[evaluations]]
id = "among-random"
scenario = "cross-play"
focal = "baseline"
background = "random"
n_focal = 2
episodes = 1
policy = "late_start"
"""


def test_a_study_declares_evaluations_and_the_report_includes_them(tmp, e2e_clean):
    import shutil

    study, clean = e2e_clean
    lake = tmp / "lake"
    shutil.copytree(clean, lake)  # evaluations write eval runs: not into the shared lake
    st = parse_study(_write(tmp, E2E + EVALS, "e2e"))
    assert [e["id"] for e in st.evaluations] == ["alone", "among-random"]
    assert manifest_for(st)["tasks"] == manifest_for(parse_study(study))["tasks"]  # nothing new to train
    res = tmp / "res"
    build_report(st, str(lake), res, episodes=False)
    data = json.loads((res / "evaluations.json").read_text())
    assert data["skipped"] == []
    got = {(r["evaluation"], r["seed"], r["role"], r["policy"]) for r in data["rows"]}
    assert got == {("alone", s, "solo", f"baseline-s{s}") for s in (1, 2)} | {
        ("among-random", s, role, p) for s in (1, 2) for role, p in (("focal", f"baseline-s{s}"), ("background", "random"))}
    assert all(r["policy_file"] == ("final" if r["evaluation"] == "alone" else "late_start") for r in data["rows"])
    md = (res / "report.md").read_text()
    assert "## Evaluations" in md and "| among-random | cross-play | 10 | x | focal | baseline | 2 |" in md
    evals = lambda: sorted(p.name for p in (lake / "eval_agents").iterdir())  # noqa: E731
    before = evals()
    assert len(before) == 4
    build_report(st, str(lake), res, episodes=False)
    assert evals() == before  # finished eval runs are reused, not played again
    assert json.loads((res / "evaluations.json").read_text()) == data
    r = CliRunner().invoke(app, ["study", "report", str(tmp / "e2e.toml"), "--from-results", "--out", str(res)])
    assert r.exit_code == 0, r.output
    assert (res / "report.md").read_text() == md


@pytest.mark.parametrize("body, needle", [
    ('[[evaluations]]\nid = "a"\nscenario = "duel"\nfocal = "baseline"', "scenario must be one of"),
    ('[[evaluations]]\nid = "a"\nscenario = "solo"\nfocal = "random"', "focal must be a trained condition"),
    ('[[evaluations]]\nid = "a"\nscenario = "cross-play"\nfocal = "baseline"', "cross-play needs background"),
    ('[[evaluations]]\nid = "a"\nscenario = "solo"\nfocal = "baseline"\npolicy = "best"', "policy must be one of"),
])
def test_a_bad_evaluation_is_one_line(tmp, body, needle):
    with pytest.raises(StudyError, match=needle):
        parse_study(_write(tmp, E2E + body, "e2e"))


def test_selectivity_welfare_and_matchmaker_metrics_known_answers(tmp):
    """The mechanism study's metrics from hand-made episodes: ratios pool the window's episodes
    (sum num / sum den), welfare values average the episodes that have one (a null equality or
    sustainability counts in neither sum), and an episode without encounters recorded is left out
    of the per-encounter rate."""
    study = parse_study(_write(tmp, HEAD + """
[[predictions]]
id = "p"
metric = "hits_per_agent_step"
test = "greater"
a = { condition = "tvt" }
b = { condition = "baseline" }
"""))
    # late window of a 11-episode run: episodes 8, 9 and 10 (frac >= 0.8)
    late = {8: dict(pred=2, zaps=10, enc=40, eq=0.5, sus=100.0, rp=2, hb=1),
            9: dict(pred=4, zaps=30, enc=None, eq=None, sus=None, rp=0, hb=0),
            10: dict(pred=6, zaps=20, enc=60, eq=0.8, sus=300.0, rp=2, hb=2)}
    rows = []
    for cond in ("tvt", "baseline"):
        for seed in (1, 2, 3):
            for ep in range(11):
                e = late.get(ep, dict(pred=9, zaps=9, enc=9, eq=0.1, sus=9.0, rp=9, hb=0))
                rows.append({"level": "x", "condition": cond, "grid_size": 10, "seed": seed, "scripted": False,
                             "run_id": f"known-x-{cond}-g10-s{seed}", "episode": ep, "global_step": ep * 100,
                             "n_agents": 5, "steps": 200, "agent_steps": 1000, "total_return": 0.0, "apples": 0,
                             "zaps_fired": e["zaps"], "hits": e["pred"], "predatory_hits": e["pred"],
                             "retribution_hits": 0, "frozen_steps": 0, "total_debt": 0.0, "semantic_amount": 0.0,
                             "semantic_on_target_amount": 0.0, "equality": e["eq"], "equality_apples": e["eq"],
                             "sustainability": e["sus"], "encounters": e["enc"], "rigged_pairs": e["rp"],
                             "rigged_pairs_hit_back": e["hb"], "transported_amount": 0.0})
    out = tmp / "res"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), out / "metrics.parquet")
    analyse(study, out)  # binds the study views over metrics.parquet
    con = duckdb.connect()
    con.execute(f"create view study_metrics as select * from read_parquet('{out / 'metrics.parquet'}')")
    con.execute("create view study_windows as select 'late' as name, 0.8 as lo, 1.0 as hi")
    for name in ("_metric_values", "_seed_values"):
        con.execute((queries_dir() / "study" / f"{name}.sql").read_text())
    got = dict(con.execute("select metric, value from study_seed_values where condition = 'tvt' and seed = 1 "
                           "and metric in ('predatory_hits_per_zap', 'hits_per_zap', 'predatory_hits_per_encounter', "
                           "'encounters_per_agent_step', 'equality', 'sustainability', 'rigged_hit_back_share')"
                           ).fetchall())
    assert got["predatory_hits_per_zap"] == pytest.approx(12 / 60)
    assert got["hits_per_zap"] == pytest.approx(12 / 60)  # every hit of this lake is predatory
    assert got["predatory_hits_per_encounter"] == pytest.approx((2 + 6) / (40 + 60))
    assert got["encounters_per_agent_step"] == pytest.approx(100 / 2000)
    assert got["equality"] == pytest.approx((0.5 + 0.8) / 2)
    assert got["sustainability"] == pytest.approx(200.0)
    assert got["rigged_hit_back_share"] == pytest.approx(3 / 4)


def test_a_metrics_parquet_from_before_transported_amount_still_analyses(tmp):
    """results/ written before the transported_amount column (issue 33): the verdicts of the
    other metrics are unchanged, the new metric reads as unknown."""
    a, b = [0.030, 0.032, 0.034], [0.010, 0.012, 0.011]
    vals = {("tvt", "late", s): [a[s - 1]] for s in (1, 2, 3)} | {("baseline", "late", s): [b[s - 1]] for s in (1, 2, 3)}
    preds = """
[[predictions]]
id = "up"
metric = "hits_per_agent_step"
test = "greater"
a = { condition = "tvt" }
b = { condition = "baseline" }
"""
    study = parse_study(_write(tmp, HEAD + preds))
    out = tmp / "res"
    out.mkdir()
    pq.write_table(_metrics(vals).drop(["transported_amount"]), out / "metrics.parquet")
    old = {v["id"]: v for v in analyse(study, out)["verdicts"]}
    assert old["up"]["verdict"] == "supported"
    assert old["up"]["diff"] == pytest.approx(_analyse(tmp, preds, vals)["up"]["diff"])


def test_figures_draw_a_ci_only_on_three_seeds_and_say_when_a_grid_has_no_runs(tmp_path, monkeypatch):
    """With 2 seeds a 95% t-interval is +-12.7 SE and hides every line: curves get their band, and
    the scale figure its whiskers, only where >= MIN_BAND_SEEDS seeds stand behind the point; a
    grid without runs is a panel that says so."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from karmic import plots
    from pipelines import study_report as SR

    study = parse_study(ROOT / "studies" / "mechanism.toml")
    bands, whiskers, empties = [], [], []
    real_fill, real_err, real_empty = Axes.fill_between, Axes.errorbar, plots._empty
    monkeypatch.setattr(Axes, "fill_between", lambda ax, x, *a, **k: bands.append(list(x)) or real_fill(ax, x, *a, **k))
    monkeypatch.setattr(Axes, "errorbar", lambda ax, x, *a, **k: whiskers.append(list(x)) or real_err(ax, x, *a, **k))
    monkeypatch.setattr(plots, "_empty", lambda ax, text="no data": empties.append(text) or real_empty(ax, text))

    def curve(cond, n, step):
        return {"metric": "apples_per_agent_step", "grid_size": 30, "level": "default", "condition": cond,
                "step": step, "mean": 0.05, "ci_low": 0.01, "ci_high": 0.09, "n_seeds": n, "den_total": 100}

    curves = [curve("baseline", 5, s) for s in (1000, 2000)] + [curve("tvt", 2, s) for s in (1000, 2000)] + \
             [curve("sham", n, s) for n, s in ((3, 1000), (2, 2000))]
    SR.draw_figures(study, curves, tmp_path)
    assert sorted(bands) == [[1000], [1000, 2000]]  # sham's 3-seed point, baseline's line; tvt none
    assert empties == ["no 10x10 runs yet"]

    def cell(cond, n):
        return {"grid_size": 30, "level": "default", "condition": cond, "metric": "apples_per_agent_step",
                "win": "late", "mean": 0.05, "ci_low": 0.01, "ci_high": 0.09, "n_seeds": n}

    whiskers.clear()
    SR.draw_scale_figure(study, [cell("baseline", 5), cell("tvt", 2)], tmp_path)
    assert len(whiskers) == 1  # baseline's, not tvt's
    # the evaluation figures: a point is drawn either way, its whiskers only on >= 3 seeds
    evs = [e for e in study.evaluations if e["scenario"] == "solo"][:2]
    cells = [{"evaluation": e["id"], "grid_size": 30, "level": "default", "metric": "apples_per_agent_step",
              "mean": 0.1, "ci_low": 0.05, "ci_high": 0.15, "n_seeds": n} for e, n in zip(evs, (5, 2), strict=True)]
    calls = []
    monkeypatch.setattr(Axes, "errorbar", lambda ax, x, y, yerr=None, **k: calls.append(yerr) or real_err(
        ax, x, y, yerr=yerr, **k))
    SR.draw_eval_figures(study, cells, [], tmp_path)
    assert len(calls) == 2 and calls[0] is not None and calls[1] is None


def test_the_eta_uses_each_kind_of_cells_pace_else_all_finished_else_the_running_cells():
    from pipelines.study_status import eta_line

    # 1,000 steps in 10 s finished -> 100 env-steps/s per worker; 60,000 left at 2 workers: 5 min
    fast, slow = ("baseline", 10), ("tvt", 30)
    assert eta_line({fast: 60_000}, {fast: (1_000, 10.0)}, [(5, 1000.0)], 2) == (
        "ETA 5 min at 100 env-steps/s per worker x 2")
    # each kind at its own pace: 30,000 at 100/s (300 s) + 30,000 at 10/s (3,000 s), 2 workers: 27.5 min
    line = eta_line({fast: 30_000, slow: 30_000}, {fast: (1_000, 10.0), slow: (1_000, 100.0)}, [], 2)
    assert line == "ETA 28 min at 18 env-steps/s per worker x 2"
    # a kind with no finished cell takes the pace of all finished ones: 2,000 steps in 110 s
    line = eta_line({fast: 0, ("sham", 30): 11_000}, {fast: (1_000, 10.0), slow: (1_000, 100.0)}, [], 1)
    assert line.startswith("ETA 10 min at 18 env-steps/s per worker x 1 (kinds of cell with none finished")
    # nothing finished in this lake (a resumed study on a new lake): the running cells' pace
    line = eta_line({fast: 60_000}, {}, [(3_000, 60.0), (1_000, 20.0)], 1)
    assert line == "ETA 20 min at 50 env-steps/s per worker x 1 (the running cells' pace so far)"
    assert eta_line({fast: 60_000}, {}, [(0, 30.0)], 2).startswith("ETA unknown")
    assert eta_line({fast: 60_000}, {}, [], 2).startswith("ETA unknown")
    assert eta_line({fast: 0}, {}, [], 2) == "nothing left to run"
    from datetime import UTC, datetime

    at = datetime(2026, 12, 5, 23, 50, tzinfo=UTC)  # and the clock time it points at, past midnight
    assert eta_line({fast: 60_000}, {fast: (1_000, 10.0)}, [], 1, now=at).startswith("ETA 10 min (~00:00 UTC) at 100")
    assert eta_line({}, {}, [], 2) == "nothing left to run"
