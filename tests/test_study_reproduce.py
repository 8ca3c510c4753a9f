"""`karmic study reproduce`: committed cells run again from their recorded plans, in a scratch
lake, give the committed metrics.parquet rows; a changed row, an unknown cell, a lake that already
holds the run and a cell without a plan are each reported, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent

STUDY = """
[study]
name = "rep"
registered = "2026-12-05"
[factors]
conditions = ["baseline", "tvt", "yoked", "random"]
grid_sizes = [10]
seeds = [1, 2]
[budget]
total_steps = 160
episodes = 2
train = { num_envs = 2, num_steps = 20, seq_len = 10, hidden = 32, latent = 16, memory_size = 40 }
[windows]
late = [0.5, 1.0]
[[levels]]
name = "x"
env = { max_steps = 20 }
[[predictions]]
id = "p"
metric = "zaps_fired_per_agent_step"
test = "greater"
a = { condition = "baseline" }
b = { condition = "random" }
"""


def _cli(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "karmic.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny study run and reported once: (study file, results folder); tests copy the folder."""
    tmp = tmp_path_factory.mktemp("rep")
    study = tmp / "rep.toml"
    study.write_text(textwrap.dedent(STUDY))
    out = tmp / "results"
    run = _cli("study", "run", str(study), "--lake", str(tmp / "lake"), "--workers", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    rep = _cli("study", "report", str(study), "--lake", str(tmp / "lake"), "--out", str(out), "--no-episodes")
    assert rep.returncode == 0, rep.stdout + rep.stderr
    return study, out


def _copy(results: tuple[Path, Path], tmp_path: Path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(results[1], dst)
    return dst


def test_cells_run_again_give_the_committed_rows_a_yoked_cell_with_its_partner(results, tmp_path):
    study, _ = results
    res = _copy(results, tmp_path)
    p = _cli("study", "reproduce", str(study), "baseline-g10-s1", "x-yoked-g10-s1", "rep-x-random-g10-s2",
             "--results", str(res), "--scratch", str(tmp_path / "scratch"))
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    # the yoked cell of seed 1 replays the tvt cell of seed 2: that one runs first, and is compared too
    assert [ln.split(":")[0] for ln in lines] == ["x-baseline-g10-s1", "x-tvt-g10-s2", "x-yoked-g10-s1",
                                                  "x-random-g10-s2"]
    # 160 env steps of 20-step episodes at 2 envs: 8 episodes a trained cell; the random policy's 2
    assert all(f"reproduced: {n} episodes, every column of metrics.parquet equal" in ln
               for ln, n in zip(lines, (8, 8, 8, 2), strict=True)), lines
    # what each run was made with and runs under now: the same torch, commit and CPU here
    assert "torch " in lines[0] and "commit " in lines[0] and lines[0].count("(both)") == 3, lines[0]
    yoked = next(r for r in json.loads((res / "runs.json").read_text()) if r["condition"] == "yoked" and r["seed"] == 1)
    assert yoked["yoke_run"] == "rep-x-tvt-g10-s2"  # the report records the partner the run replayed
    runs = {r["run_id"] for r in json.loads((res / "runs.json").read_text())}
    kept = {d.name.split("=", 1)[1] for d in (tmp_path / "scratch" / "runs").iterdir()}
    assert kept == {"rep-x-baseline-g10-s1", "rep-x-tvt-g10-s2", "rep-x-yoked-g10-s1", "rep-x-random-g10-s2"} <= runs


def test_a_changed_row_is_named_by_episode_and_column_and_exits_1(results, tmp_path):
    study, _ = results
    res = _copy(results, tmp_path)
    t = pq.read_table(res / "metrics.parquet")
    target = pc.and_(pc.equal(t.column("run_id"), "rep-x-baseline-g10-s2"), pc.equal(t.column("episode"), 3))
    assert pc.sum(target.cast(pa.int64())).as_py() == 1
    apples = pc.if_else(target, pc.add(t.column("apples"), 1), t.column("apples"))
    t = t.set_column(t.column_names.index("apples"), "apples", apples)
    pq.write_table(t, res / "metrics.parquet")
    p = _cli("study", "reproduce", str(study), "baseline-g10-s2", "--results", str(res))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "x-baseline-g10-s2: DIFFERS (1 difference(s)" in p.stdout
    assert "episode 3: apples = " in p.stdout and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == f"error: 1 of 1 cell(s) differ from {res}/metrics.parquet"


@pytest.mark.parametrize("case", ["unknown", "no-plan", "not-run", "lake-holds-it", "no-results"])
def test_bad_input_is_one_line_and_exit_2(results, tmp_path, case):
    study, _ = results
    res = _copy(results, tmp_path)
    cell, extra = "baseline-g10-s1", []
    if case == "unknown":
        cell, says = "baseline-g10-s9", "no cell 'baseline-g10-s9' in runs.json"
    elif case in ("no-plan", "not-run"):  # runs.json's entry of the cell without its plan, or not run
        field = "plan" if case == "no-plan" else "status"
        runs = json.loads((res / "runs.json").read_text())
        (res / "runs.json").write_text(json.dumps(
            [{**r, field: None} if r["run_id"] == "rep-x-baseline-g10-s1" else r for r in runs]))
        says = ("x-baseline-g10-s1: runs.json records no plan" if case == "no-plan" else
                "x-baseline-g10-s1: the results hold no completed run of it (status not run)")
    elif case == "lake-holds-it":
        extra, says = ["--scratch", str(results[0].parent / "lake")], "already holds run rep-x-baseline-g10-s1"
    else:
        shutil.rmtree(res)
        says = "no " + str(res / "metrics.parquet")
    p = _cli("study", "reproduce", str(study), cell, "--results", str(res), *extra)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip().splitlines() == [f"error: {p.stderr.strip()[7:]}"] and says in p.stderr
    assert "Traceback" not in p.stderr


def test_the_comparison_skips_columns_newer_than_the_committed_rows():
    from pipelines.study_reproduce import compare_rows

    want = [{"episode": 0, "apples": 3, "transported_amount": None, "x": 1.0}]
    assert compare_rows(want, [{"episode": 0, "apples": 3, "transported_amount": 2.5, "x": 1.0 + 1e-13}]) == []
    assert compare_rows(want, [{"episode": 0, "apples": 4, "transported_amount": 2.5, "x": 1.1}]) == [
        "episode 0: apples = 3 committed, 4 now", "episode 0: x = 1.0 committed, 1.1 now"]
    assert compare_rows(want, [])[0] == "episodes differ: 1 committed, 0 now; not made again: [0]"


def test_a_run_records_the_code_commit_and_the_cpu_it_was_made_with():
    from pipelines.writer import versions

    v = versions()
    assert v.get("cpu")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert v["commit"].removesuffix("-dirty") == head.stdout.strip()


@pytest.mark.slow  # one 300k-step 10x10 run: ~6 min on 2 cores (`make test-slow`)
def test_a_committed_mechanism_cell_trains_again_to_its_committed_rows(tmp_path):
    """The committed results are what this code makes: a 10x10 `baseline` cell of the mechanism
    study, trained again from its plan, gives every row of results/mechanism/metrics.parquet."""
    p = _cli("study", "reproduce", "mechanism", "baseline-g10-s201", "random-g10-s201",
             "--scratch", str(tmp_path / "scratch"), timeout=3600)  # 4 min alone, >10 beside a study
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("reproduced: ") == 2, p.stdout


def test_the_report_counts_the_builds_commits_and_cpus_its_runs_were_made_with():
    from pipelines.study_report import made_with_section

    v = lambda **k: {"versions": k, "status": "completed"}  # noqa: E731
    runs = [v(torch="2.13.0+cpu", commit="abc", cpu="Xeon"), v(torch="2.13.0+cpu", cpu="Xeon"),
            v(torch="2.13.0+cu130"), {**v(commit="abc", cpu="EPYC"), "scripted": True},
            {"status": None, "versions": None}]  # a cell not run yet: not counted
    lines = made_with_section(runs)
    assert lines[0] == "## Made with" and lines[-1] == ""
    assert lines[4:-1] == ["- torch: 2.13.0+cpu (2 runs), 2.13.0+cu130 (1 run)",
                           "- code commit: abc (2 runs), not recorded (2 runs)",
                           "- CPU: Xeon (2 runs), EPYC (1 run), not recorded (1 run)"]
    assert made_with_section([v(), {"carried": True, "versions": None}]) == []
