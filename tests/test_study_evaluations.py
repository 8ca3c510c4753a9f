"""Predictions on a study's evaluations (solo competence, cross-play) in the verdict family:
known answers on a hand-made evaluations.json (supported, contradicted, inconclusive; Welch and
paired; Holm over the training and evaluation predictions together), the file's errors, and end
to end on a tiny study: the report's summary table and evaluation figures, `--from-results`
rebuilding them from evaluations.json, and `--check-evaluations` playing the kept policies
again to the committed numbers (and catching a number that is not theirs).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_study import HEAD, T975, _driver, _marginal_values, _metrics, _write
from typer.testing import CliRunner

from karmic.cli import app
from pipelines.study import StudyError, parse_study
from pipelines.study_report import analyse, build_report, check_evaluations

ROOT = Path(__file__).resolve().parent.parent

EVALS = """
[[evaluations]]
id = "solo-tvt"
scenario = "solo"
focal = "tvt"
[[evaluations]]
id = "solo-base"
scenario = "solo"
focal = "baseline"
[[evaluations]]
id = "tvt-among-base"
scenario = "cross-play"
focal = "tvt"
background = "baseline"
[[evaluations]]
id = "base-among-base"
scenario = "cross-play"
focal = "baseline"
background = "baseline"
[[evaluations]]
id = "base-among-tvt"
scenario = "cross-play"
focal = "baseline"
background = "tvt"
"""


def _pred(pid: str, metric: str, test: str, a: str, b: str, margin: float | None = None) -> str:
    m = f"margin = {margin}\n" if margin is not None else ""
    return (f'\n[[predictions]]\nid = "{pid}"\nsource = "evaluation"\nmetric = "{metric}"\ntest = "{test}"\n{m}'
            f'a = {{ evaluation = "{a}" }}\nb = {{ evaluation = "{b}" }}\n')


# per evaluation, metric: the focal agents' value in seeds 1, 2, 3
FOCAL = {
    ("solo-tvt", "apples_per_agent_step"): [0.099, 0.100, 0.101],
    ("solo-base", "apples_per_agent_step"): [0.100, 0.100, 0.100],
    ("tvt-among-base", "apples_per_agent_step"): [0.05, 0.08, 0.11],
    ("base-among-base", "apples_per_agent_step"): [0.100, 0.100, 0.100],
    ("tvt-among-base", "hits_taken_per_agent_step"): [0.030, 0.031, 0.032],
    ("base-among-base", "hits_taken_per_agent_step"): [0.010, 0.010, 0.010],
}
PREDS = (
    _pred("solo-competent", "apples_per_agent_step", "not_less", "solo-tvt", "solo-base", 0.25)
    + _pred("focal-hit-no-more", "hits_taken_per_agent_step", "not_greater", "tvt-among-base", "base-among-base", 0.25)
    + _pred("focal-keeps-apples", "apples_per_agent_step", "not_less", "tvt-among-base", "base-among-base", 0.25)
    + _pred("solo-above-crowd", "apples_per_agent_step", "greater", "solo-tvt", "tvt-among-base")
    + _pred("no-rows-yet", "apples_per_agent_step", "not_less", "base-among-tvt", "base-among-base", 0.25)
    + '\n[[predictions]]\nid = "train"\nmetric = "hits_per_agent_step"\ntest = "greater"\n'
      'a = { condition = "tvt" }\nb = { condition = "baseline" }\n'
)


def _eval_rows() -> list[dict]:
    rows = []
    for ev in ("solo-tvt", "solo-base", "tvt-among-base", "base-among-base"):
        for i, seed in enumerate((1, 2, 3)):
            focal = {m: vals[i] for (e, m), vals in FOCAL.items() if e == ev}
            role = "solo" if ev.startswith("solo") else "focal"
            rows.append({"evaluation": ev, "grid_size": 10, "level": "x", "seed": seed, "role": role,
                         "policy": f"p-s{seed}", "run_id": f"r-{ev}-{seed}", **focal})
            if role == "focal":  # the background agents: not the focal's numbers, never read
                rows.append({"evaluation": ev, "grid_size": 10, "level": "x", "seed": seed, "role": "background",
                             "policy": f"b-s{seed}", "run_id": f"r-{ev}-{seed}", "apples_per_agent_step": 9.0,
                             "hits_taken_per_agent_step": 9.0})
    return rows


def _verdicts(tmp: Path, preds: str = PREDS, rows: list[dict] | None = None) -> dict:
    study = parse_study(_write(tmp, HEAD + EVALS + preds))
    out = tmp / "res"
    out.mkdir(exist_ok=True)
    pq.write_table(_metrics(_marginal_values((1, 2, 3))), out / "metrics.parquet")
    (out / "evaluations.json").write_text(json.dumps({"rows": _eval_rows() if rows is None else rows,
                                                      "skipped": []}))
    return {v["id"]: v for v in analyse(study, out)["verdicts"]}


def _t2_sf(x: float) -> float:
    """P(T > x), Student's t with 2 degrees of freedom (closed form)."""
    return 0.5 * (1 - x / math.sqrt(x * x + 2))


def test_evaluation_predictions_known_answers(tmp_path):
    v = _verdicts(tmp_path)
    # not_less, Welch (baseline's solo apples are the same in every seed: df = n_a - 1 = 2)
    solo = v["solo-competent"]
    se = 0.001 / math.sqrt(3)
    assert (solo["source"], solo["a_evaluation"], solo["b_evaluation"]) == ("evaluation", "solo-tvt", "solo-base")
    assert (solo["a_condition"], solo["b_condition"], solo["a_window"]) == ("tvt", "baseline", None)
    assert solo["paired"] is False and (solo["n_a"], solo["n_b"]) == (3, 3)
    assert solo["mean_b"] == pytest.approx(0.1) and solo["diff"] == pytest.approx(0.0, abs=1e-12)
    assert solo["margin"] == pytest.approx(0.25 * 0.1)
    assert solo["se"] == pytest.approx(se) and solo["df"] == 2
    assert solo["ci_low"] == pytest.approx(-T975[2] * se, abs=1e-9)
    assert solo["p_support"] == pytest.approx(2 * _t2_sf(0.025 / se), rel=1e-6)
    assert solo["verdict"] == "supported"
    # not_greater: hit 3.1x as often as the baseline focal, beyond 1.25x: contradicted
    hit = v["focal-hit-no-more"]
    assert hit["mean_b"] == pytest.approx(0.010)  # the background's 9.0 is never read
    assert hit["margin"] == pytest.approx(0.0025)
    assert hit["p_contra"] == pytest.approx(2 * _t2_sf((0.021 - 0.0025) / se), rel=1e-6)
    assert hit["ci_low"] > hit["margin"] and hit["verdict"] == "contradicted"
    # not_less with a CI straddling -margin: inconclusive
    keep = v["focal-keeps-apples"]
    assert keep["diff"] == pytest.approx(-0.02)
    assert keep["ci_low"] < -keep["margin"] < keep["ci_high"]
    assert keep["verdict"] == "inconclusive"
    # one focal condition's policies in two evaluations: paired by seed
    paired = v["solo-above-crowd"]
    assert paired["paired"] is True and paired["df"] == 2
    assert paired["diff"] == pytest.approx(0.1 - 0.08)
    assert paired["se"] == pytest.approx(0.029 / math.sqrt(3))  # sd of the per-seed differences 0.049, 0.02, -0.009
    # an evaluation with no rows yet: inconclusive, and still in the family
    assert v["no-rows-yet"]["verdict"] == "inconclusive" and v["no-rows-yet"]["note"] == "no data on one side"
    # Holm over all six predictions, training and evaluation alike
    ps = sorted((x["p_support"], k) for k, x in v.items() if x["p_support"] is not None)
    run = 0.0
    for i, (p, k) in enumerate(ps):
        run = max(run, min(1.0, (len(v) - i) * p))
        assert v[k]["p_support_holm"] == pytest.approx(run), k
    # the training prediction keeps its own keys only (its verdict is as it was before evaluations)
    assert "source" not in v["train"] and "a_evaluation" not in v["train"]


def test_not_greater_is_supported_within_the_margin(tmp_path):
    rows = [r | {"hits_taken_per_agent_step": 0.011 + 0.0001 * r["seed"]} if r["evaluation"] == "tvt-among-base"
            and r["role"] == "focal" else r for r in _eval_rows()]
    hit = _verdicts(tmp_path, rows=rows)["focal-hit-no-more"]
    assert hit["diff"] == pytest.approx(0.0012) and hit["ci_high"] < hit["margin"]
    assert hit["verdict"] == "supported"


def test_without_evaluations_json_the_evaluation_predictions_wait_inconclusive(tmp_path):
    study = parse_study(_write(tmp_path, HEAD + EVALS + PREDS))
    out = tmp_path / "res"
    out.mkdir()
    pq.write_table(_metrics(_marginal_values((1, 2, 3))), out / "metrics.parquet")
    v = {x["id"]: x for x in analyse(study, out)["verdicts"]}
    assert all(v[k]["verdict"] == "inconclusive" and v[k]["note"] == "no data on one side"
               for k in v if k != "train")
    # the family is still six: the training prediction's p is multiplied by 6
    assert v["train"]["p_support_holm"] == pytest.approx(min(1.0, 6 * v["train"]["p_support"]))


@pytest.mark.parametrize("pred, needle", [
    (_pred("p", "apples_per_agent_step", "not_less", "solo-nope", "solo-base", 0.25), "not an [[evaluations]] id"),
    (_pred("p", "predatory_hits_per_agent_step", "greater", "solo-tvt", "solo-base"), "unknown evaluation metric"),
    (_pred("p", "apples_per_agent_step", "greater", "solo-tvt", "solo-tvt"), "same evaluation"),
    (_pred("p", "apples_per_agent_step", "not_greater", "solo-tvt", "solo-base"), "needs exactly one of margin"),
    (_pred("p", "apples_per_agent_step", "greater", "solo-tvt", "solo-base").replace("evaluation = \"solo-base\"",
                                                                                    "condition = \"baseline\""),
     "unknown key"),
    (_pred("p", "apples_per_agent_step", "greater", "solo-tvt", "solo-base").replace('"evaluation"\n', '"eval"\n'),
     "unknown source"),
])
def test_a_bad_evaluation_prediction_is_one_line(tmp_path, pred, needle):
    with pytest.raises(StudyError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_study(_write(tmp_path, HEAD + EVALS + pred))


def test_the_mechanism_study_puts_solo_and_cross_play_in_the_holm_family():
    """studies/mechanism.toml: predictions 5 and 6 read its evaluations with the criteria stated
    before the study ran: solo apples >= 75% of baseline's; a tvt focal among baseline agents
    keeps >= 75% of a baseline focal's apples and is hit <= 1.25x as often."""
    st = parse_study(ROOT / "studies" / "mechanism.toml")
    ev = {p["id"]: p for p in st.predictions if p.get("source") == "evaluation"}
    assert {k: (p["metric"], p["test"], p["margin"], p["a"]["evaluation"], p["b"]["evaluation"], p["a"]["grid_size"])
            for k, p in ev.items()} == {
        "tvt-solo-competent-30": ("apples_per_agent_step", "not_less", 0.25, "solo", "solo-baseline", 30),
        "tvt-focal-keeps-apples-30": ("apples_per_agent_step", "not_less", 0.25, "tvt-among-baseline",
                                      "baseline-among-baseline", 30),
        "tvt-focal-not-hit-more-30": ("hits_taken_per_agent_step", "not_greater", 0.25, "tvt-among-baseline",
                                      "baseline-among-baseline", 30),
    }
    assert len(st.predictions) == 19


def test_the_mechanism_study_file_reads_made_up_evaluations_into_a_family_of_19(tmp_path):
    """The study file as it is, on made-up numbers (no training rows of its cells, so its 16
    training predictions wait): the three evaluation predictions read their 5 seeds at 30x30 and
    share Holm's family with all 19."""
    st = parse_study(ROOT / "studies" / "mechanism.toml")
    made_up = {"solo": (0.060, 0.0), "solo-baseline": (0.062, 0.0), "tvt-among-baseline": (0.050, 0.010),
               "baseline-among-baseline": (0.052, 0.011)}
    rows = [{"evaluation": ev, "grid_size": 30, "level": "default", "seed": seed, "role": "solo" if "solo" in ev
             else "focal", "apples_per_agent_step": apples + 0.001 * k, "hits_taken_per_agent_step": hits + 0.0001 * k}
            for ev, (apples, hits) in made_up.items() for k, seed in enumerate(st.seeds)]
    out = tmp_path / "res"
    out.mkdir()
    pq.write_table(_metrics(_marginal_values((1, 2, 3))), out / "metrics.parquet")  # other cells: no rows here
    (out / "evaluations.json").write_text(json.dumps({"rows": rows, "skipped": []}))
    v = {x["id"]: x for x in analyse(st, out)["verdicts"]}
    assert len(v) == 19
    ev = [k for k, x in v.items() if x.get("source") == "evaluation"]
    assert sorted(ev) == ["tvt-focal-keeps-apples-30", "tvt-focal-not-hit-more-30", "tvt-solo-competent-30"]
    assert all(v[k]["n_a"] == v[k]["n_b"] == 5 and v[k]["verdict"] == "supported" for k in ev)
    run = 0.0
    for i, (p, k) in enumerate(sorted((v[k]["p_support"], k) for k in ev)):  # the only p-values: ranks 1-3 of 19
        run = max(run, min(1.0, (19 - i) * p))
        assert v[k]["p_support_holm"] == pytest.approx(run), k
    assert all(x["verdict"] == "inconclusive" and x["note"] == "no data on one side" for k, x in v.items() if k not in ev)


# --- end to end: a tiny study with evaluations -----------------------------------------------------------
TINY = """
[study]
name = "evtiny"
registered = "2026-12-04"
[factors]
conditions = ["baseline", "hit-cost"]
grid_sizes = [10]
seeds = [1, 2]
[[levels]]
name = "x"
env = { max_steps = 20 }
[budget]
total_steps = 160
train = { num_envs = 2, num_steps = 20, seq_len = 10, hidden = 32, latent = 16, checkpoint_every = 1 }
[windows]
late = [0.5, 1.0]
[[predictions]]
id = "zaps"
metric = "zaps_fired_per_agent_step"
test = "greater"
a = { condition = "hit-cost" }
b = { condition = "baseline" }
[[predictions]]
id = "solo-competent"
source = "evaluation"
metric = "apples_per_agent_step"
test = "not_less"
margin = 0.25
a = { evaluation = "solo-hc" }
b = { evaluation = "solo-base" }
[[predictions]]
id = "focal-not-hit-more"
source = "evaluation"
metric = "hits_taken_per_agent_step"
test = "not_greater"
margin = 0.25
a = { evaluation = "hc-among-base" }
b = { evaluation = "base-among-base" }
[[evaluations]]
id = "solo-hc"
scenario = "solo"
focal = "hit-cost"
episodes = 1
[[evaluations]]
id = "solo-base"
scenario = "solo"
focal = "baseline"
episodes = 1
[[evaluations]]
id = "hc-among-base"
scenario = "cross-play"
focal = "hit-cost"
background = "baseline"
episodes = 1
[[evaluations]]
id = "base-among-base"
scenario = "cross-play"
focal = "baseline"
background = "baseline"
episodes = 1
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("evtiny")
    study = _write(tmp, TINY, "evtiny")
    p = _driver(study, tmp / "lake", workers=2)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    return study, tmp / "lake"


def test_the_report_puts_evaluation_verdicts_in_its_summary_and_draws_the_evaluation_figures(tmp_path, tiny):
    study, lake = tiny
    res = tmp_path / "res"
    build_report(parse_study(study), str(lake), res, episodes=False)
    verdicts = {v["id"]: v for v in json.loads((res / "verdicts.json").read_text())["predictions"]}
    assert verdicts["solo-competent"]["source"] == "evaluation"
    assert (verdicts["solo-competent"]["n_a"], verdicts["focal-not-hit-more"]["n_b"]) == (2, 2)
    md = (res / "report.md").read_text()
    for fig in ("fig_solo_competence.png", "fig_cross_play.png", "fig_apples_per_agent_step.png",
                "fig_predatory_hits_per_agent_step.png"):
        assert (res / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
        assert f"]({fig})" in md, fig
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "All 3 predictions, 2 of them on the evaluations" in summary
    for pid in verdicts:
        assert f"| {pid} |" in summary
    assert "| 2 / 2 | 160 env steps, late window |" in summary  # seeds and steps per cell
    assert "| 2 / 2 | 1 episode, final policy |" in summary
    # --from-results rebuilds the verdicts, report and figures from evaluations.json, and the
    # kept policies play again to the same numbers
    before = {p.name: p.read_bytes() for p in res.iterdir() if p.is_file()}
    r = CliRunner().invoke(app, ["study", "report", str(study), "--from-results", "--out", str(res),
                                 "--check-evaluations"])
    assert r.exit_code == 0, r.output
    n_rows = len(json.loads((res / "evaluations.json").read_text())["rows"])
    assert n_rows == 2 * (1 + 1 + 2 + 2)  # seeds x (solo: one role; cross-play: focal and background)
    assert f"{n_rows} row(s) played again" in r.output and "all equal" in r.output
    after = {p.name: p.read_bytes() for p in res.iterdir() if p.is_file()}
    assert after == before
    # a number that is not the policies': the check names it and exits 1
    data = json.loads((res / "evaluations.json").read_text())
    data["rows"][0]["apples_per_agent_step"] += 0.5
    (res / "evaluations.json").write_text(json.dumps(data))
    r = CliRunner().invoke(app, ["study", "report", str(study), "--from-results", "--out", str(res),
                                 "--check-evaluations"])
    assert r.exit_code == 1, r.output
    assert "differs:" in r.output and "apples_per_agent_step" in r.output
    # no policies to play: every row is missing, one line each, and the cells are skipped now
    shutil.rmtree(res / "policies")
    n, problems = check_evaluations(parse_study(study), res)
    assert n == 0 and problems[0].startswith("skipped: [] in evaluations.json")
    assert len(problems) == 1 + n_rows and all("not played again" in x for x in problems[1:])
    n, problems = check_evaluations(parse_study(study), res, seeds={2})  # one seed: its rows only
    assert n == 0 and len(problems) == 1 + n_rows // 2
    assert all(" s2" in x for x in problems) and not any(" s1" in x for x in problems)


def test_a_grid_with_no_finished_cell_is_not_played_nor_skipped(tmp_path):
    """A released grid none of whose cells has run yet (the mechanism study's 10x10 half after
    its release) is left out, as a pending one: a report written before the release and a check
    run after it agree. A grid with a finished cell and no policy file lists it as skipped."""
    from pipelines.study_report import play_evaluations

    study = parse_study(_write(tmp_path, TINY, "evtiny"))
    assert play_evaluations(study, str(tmp_path / "lake"), tmp_path, runs=[]) == ([], [])
    runs = [{"condition": "baseline", "grid_size": 10, "level": study.levels[0].name, "seed": study.seeds[0],
             "run_id": "r", "status": "completed"}]
    rows, skipped = play_evaluations(study, str(tmp_path / "lake"), tmp_path, runs=runs)
    assert rows == [] and skipped and all("no final.pt" in x for x in skipped)


def _committed_with_evaluations() -> list[str]:
    return sorted(p.name for p in (ROOT / "results").iterdir()
                  if (p / "evaluations.json").is_file() and (p / "policies").is_dir())


@pytest.mark.slow
@pytest.mark.parametrize("name", _committed_with_evaluations())
def test_the_committed_kept_policies_play_again_to_the_committed_evaluations(name):
    """results/<study>/policies/ played again (a scratch lake) give results/<study>/evaluations.json:
    the solo and cross-play numbers are the kept policies' (`--check-evaluations` checks every
    seed; this test the lowest seed of each evaluation, about 30 s of CPU per 30x30 episode)."""
    st = parse_study(ROOT / "studies" / f"{name}.toml")
    n, problems = check_evaluations(st, ROOT / "results" / name, seeds={min(st.seeds)})
    assert n and not problems, problems[:20]
