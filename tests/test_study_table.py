"""`karmic study table`: the verdicts of a committed results folder as the front page's table, and
the README / docs blocks it fills, which must stay equal to the results they quote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from karmic.cli import app
from pipelines.study import find_study, parse_study
from pipelines.study_report import (
    TableBlock,
    cells_front_table,
    fill_table_blocks,
    front_table,
    results_front_table,
    table_blocks,
)

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _verdict(**kw):
    v = {"id": "x", "metric": "apples_per_agent_step", "verdict": "inconclusive", "a_condition": "tvt",
         "a_grid_size": 30, "a_level": "default", "a_window": "late", "b_condition": "baseline",
         "b_grid_size": 30, "b_level": "default", "b_window": "late", "b_value": None, "mean_a": 0.0147,
         "mean_b": 0.0551, "diff": -0.0404, "ci_low": -0.0555, "ci_high": -0.0253, "p_support_holm": 1.0,
         "p_contra_holm": 0.17, "n_a": 3, "n_b": 3}
    return v | kw


def test_a_row_says_what_decided_it_and_what_is_behind_each_side():
    st = parse_study(find_study("mechanism"))
    rows = front_table(st, [
        _verdict(id="harvest"),
        _verdict(id="down", verdict="contradicted", metric="sustainability", mean_a=73.75, mean_b=362.1,
                 diff=-288.3, ci_low=-323.2, ci_high=-253.4, p_contra_holm=0.0197, n_a=2),
        _verdict(id="const", b_value=0.9, b_condition=None, b_grid_size=None, n_b=None, verdict="supported",
                 p_support_holm=0.0),
        _verdict(id="solo", a_evaluation="solo", b_evaluation="solo-baseline"),
        _verdict(id="small", a_grid_size=10, b_grid_size=10, diff=None, mean_a=None, mean_b=None, n_a=0, n_b=0),
    ])
    assert rows[0].startswith("| prediction | metric | a / b |") and len(rows) == 7
    harvest, down, const, solo, small = rows[2:]
    assert harvest == ("| harvest | apples_per_agent_step | tvt / baseline | 0.015 / 0.055 | -0.04 [-0.056, -0.025] "
                       "| 1 | **inconclusive** | 3 / 3 | 750k |")
    # a contradiction shows the contradiction test's p; 100 and up as whole numbers, not 3.6e+02
    assert "| 74 / 362 | -288 [-323, -253] | 0.02 | **contradicted** | 2 / 3 |" in down
    assert "| tvt / 0.9 |" in const and "| 3 / - | 750k / - |" in const and "| 0 | **supported** |" in const
    assert "| solo / solo-baseline |" in solo and solo.endswith("| 10 ep |")
    assert "| no data |" in small and "| 0 / 0 | 300k |" in small
    method = front_table(st, [_verdict(id="m", b_condition="tvt", a_level="new", b_level="old")])[2]
    assert method.startswith("| m | apples_per_agent_step | tvt: new / old | 0.015 / 0.055 |")
    only30 = front_table(st, [_verdict(id="harvest"), _verdict(id="small", a_grid_size=10, b_grid_size=10)],
                         grid_size=30)
    assert [r.split(" | ")[0] for r in only30[2:]] == ["| harvest"]


def test_the_ablation_table_is_its_verdicts_in_the_study_files_order():
    st = parse_study(find_study("ablation"))
    verdicts = json.loads((ROOT / "results/ablation/verdicts.json").read_text())["predictions"]
    res = runner.invoke(app, ["study", "table", "ablation", "--grid", "10",
                              "--results", str(ROOT / "results/ablation")])
    assert res.exit_code == 0, res.output
    ids = [line.split(" | ")[0].lstrip("| ") for line in res.output.splitlines()[2:]]
    want = [p["id"] for p in st.predictions if any(v["id"] == p["id"] and v["a_grid_size"] == 10 for v in verdicts)]
    assert ids == want and len(ids) == 8
    supported = {v["id"] for v in verdicts if v["verdict"] == "supported" and v["a_grid_size"] == 10}
    assert {i for i, line in zip(ids, res.output.splitlines()[2:], strict=True) if "**supported**" in line} == supported


@pytest.mark.parametrize("args, needle", [
    (["ablation", "--grid", "7"], "no prediction at grid 7"),
    (["ablation", "--results", "/nonexistent"], "report the study first"),
    (["nosuchstudy"], "nosuchstudy"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    res = runner.invoke(app, ["study", "table", *args])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


def test_into_fills_only_its_studys_blocks_and_keeps_the_rest(tmp_path):
    doc = tmp_path / "page.md"
    text = ("intro\n<!-- karmic study table ablation --grid 30 -->\nstale\n<!-- end table -->\nmiddle\n"
            "<!-- karmic study table other -->\nkept as is\n<!-- end table -->\nend\n")
    doc.write_text(text)
    res = runner.invoke(app, ["study", "table", "ablation", "--results", str(ROOT / "results/ablation"),
                              "--into", str(doc)])
    assert res.exit_code == 0, res.output
    out = doc.read_text()
    st = parse_study(find_study("ablation"))
    body = "\n".join(results_front_table(st, ROOT / "results/ablation", grid_size=30)) + "\n"
    assert out == text.replace("stale\n", body)
    assert table_blocks(out) == [TableBlock("ablation", 30, body=body), TableBlock("other", body="kept as is\n")]
    again, n = fill_table_blocks(out, "ablation", lambda block: body.splitlines())
    assert (again, n) == (out, 1)
    bare = tmp_path / "bare.md"
    bare.write_text("no block here\n")
    res = runner.invoke(app, ["study", "table", "ablation", "--into", str(bare)])
    assert res.exit_code == 2 and "has no '<!-- karmic study table ablation" in res.output
    assert bare.read_text() == "no block here\n"


def test_the_committed_tables_equal_their_results():
    """A results folder committed without `karmic study table NAME --into FILE` fails here."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    seen = set()
    for page in pages:
        for block in table_blocks(page.read_text()):
            st = parse_study(find_study(block.name))
            want = "\n".join(block.render(st, ROOT / "results" / block.name)) + "\n"
            assert block.body == want, (f"{page.name}: a table of study {block.name} differs from "
                                        f"results/{block.name}; run: karmic study table {block.name} --into "
                                        f"{page.relative_to(ROOT)}")
            seen.add(block.cells)
    assert seen == {True, False}


def _cell(cond, metric, mean, n=3, grid=30, level="default"):
    return {"condition": cond, "grid_size": grid, "level": level, "metric": metric, "mean": mean, "n_seeds": n,
            "win": "late", "sd": 0.0, "ci_low": mean, "ci_high": mean, "episodes": 10}


def test_cells_are_the_late_means_one_line_a_condition_in_the_study_files_order(tmp_path):
    st = parse_study(find_study("mechanism"))
    cells = [_cell("tvt", "apples_per_agent_step", 0.0147), _cell("tvt", "hits_per_zap", 0.0075),
             _cell("baseline", "apples_per_agent_step", 0.0556, n=4), _cell("baseline", "hits_per_zap", 0.048, n=4),
             _cell("random", "apples_per_agent_step", 0.0097), _cell("random", "hits_per_zap", 0.01),
             _cell("tvt", "apples_per_agent_step", 0.011, grid=10, n=2),
             {**_cell("tvt", "hits_per_zap", 9.0), "win": "early"}]
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    metrics = ("apples_per_agent_step", "hits_per_zap")
    assert cells_front_table(st, tmp_path, 30, metrics) == [
        "| condition | seeds | apples_per_agent_step | hits_per_zap |", "|---|---|---|---|",
        "| baseline | 4 | 0.056 | 0.048 |", "| tvt | 3 | 0.015 | 0.0075 |", "| random | 3 | 0.0097 | 0.01 |"]
    both = cells_front_table(st, tmp_path, None, metrics)
    assert both[0].startswith("| grid | condition | seeds |")
    assert both[-1] == "| 10x10 | tvt | 2 | 0.011 |  |"  # a metric a cell lacks is blank
    for grid, metric, needle in [(7, "hits_per_zap", "no cell at grid 7"), (30, "nope", "has no metric nope")]:
        res = runner.invoke(app, ["study", "table", "mechanism", "--cells", "--grid", str(grid), "--metrics", metric,
                                  "--results", str(tmp_path)])
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["study", "table", "mechanism", "--metrics", "hits_per_zap", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "needs --cells" in res.output


def test_hits_per_zap_is_in_every_committed_cells_json():
    """Accuracy beside predation: every committed study's cells carry it (rebuilt --from-results)."""
    for path in sorted((ROOT / "results").glob("*/cells.json")):
        assert any(c["metric"] == "hits_per_zap" for c in json.loads(path.read_text())), path


def _run(cond, level, seconds, steps=300000, attempts=1, grid=10, status="completed", **kw):
    return {"condition": cond, "grid_size": grid, "level": level, "seed": 1, "seconds": seconds, "global_step": steps,
            "attempts": attempts, "status": status, "scripted": False} | kw


def test_times_are_each_cells_single_attempt_runs_pace(tmp_path):
    st = parse_study(find_study("tvt-speed"))
    runs = [_run("tvt", "old", 500.0), _run("tvt", "old", 700.0, steps=280000),
            _run("tvt", "new", 300.0), _run("tvt", "new", 90.0, attempts=2),   # resumed: not timed
            _run("full", "old", 600.0, attempts=None),                          # attempts unrecorded
            _run("full", "new", 10.0, status=None),                             # never completed
            _run("random", "old", None, steps=None, scripted=True),
            _run("tvt", "old", 1500.0, steps=500000, grid=30)]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    res = runner.invoke(app, ["study", "table", "tvt-speed", "--times", "--grid", "10", "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        "| level | condition | runs timed | min a run | env-steps/s |", "|---|---|---|---|---|",
        "| old | tvt | 2 | 10.0 | 500 |",          # (300000/500 + 280000/700) / 2
        "| old | full | 0 of 1 |  |  |",
        "| new | tvt | 1 of 2 | 5.0 | 1,000 |"]
    both = TableBlock("tvt-speed", times=True).render(st, tmp_path)
    assert both[0].startswith("| grid | level |") and both[2] == "| 30x30 | old | tvt | 1 | 25.0 | 333 |"
    for args, needle in [(["--grid", "7"], "no completed trained run at grid 7"),
                         (["--cells"], "choose one"), (["--metrics", "hits_per_zap"], "goes with --cells")]:
        res = runner.invoke(app, ["study", "table", "tvt-speed", "--times", *args, "--results", str(tmp_path)])
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    doc = tmp_path / "page.md"
    doc.write_text("<!-- karmic study table tvt-speed --times --grid 10 -->\nstale\n<!-- end table -->\n")
    assert runner.invoke(app, ["study", "table", "tvt-speed", "--results", str(tmp_path), "--into", str(doc)]).exit_code == 0
    assert doc.read_text().splitlines()[1:-1] == [
        "| level | condition | runs timed | min a run | env-steps/s |", "|---|---|---|---|---|",
        "| old | tvt | 2 | 10.0 | 500 |", "| old | full | 0 of 1 |  |  |", "| new | tvt | 1 of 2 | 5.0 | 1,000 |"]


def test_seeds_are_each_runs_late_window_value_a_known_answer(tmp_path):
    """--seeds: a run's late value is sum(num) / sum(den) over its episodes with global_step /
    its last global_step >= 0.8, computed here from the episodes by hand, for two committed runs."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipelines.study_report import _fmt, seeds_front_table

    st = parse_study(find_study("tvt-speed"))
    runs = ["tvt-speed-old-tvt-g30-s1", "tvt-speed-new-tvt-g30-s3"]
    t = pq.read_table(ROOT / "results" / "tvt-speed" / "metrics.parquet")
    t = t.filter(pc.is_in(t["run_id"], value_set=__import__("pyarrow").array(runs)))
    pq.write_table(t, tmp_path / "metrics.parquet")
    want = ["| level | condition | seed | apples_per_agent_step | hits_per_zap |", "|---|---|---|---|---|"]
    for run in reversed(runs):  # the study file's order: level old before new
        r = t.filter(pc.equal(t["run_id"], run)).to_pydict()
        step = np.array(r["global_step"], float)
        late = step / step.max() >= 0.8
        apples = np.array(r["apples"])[late].sum() / np.array(r["agent_steps"])[late].sum()
        per_zap = np.array(r["hits"])[late].sum() / np.array(r["zaps_fired"])[late].sum()
        want.append(f"| {r['level'][0]} | tvt | {r['seed'][0]} | {_fmt(float(apples), 2)} | {_fmt(float(per_zap), 2)} |")
    want[2:] = sorted(want[2:], key=lambda line: line.startswith("| new"))
    assert seeds_front_table(st, tmp_path, 30, ("apples_per_agent_step", "hits_per_zap")) == want


@pytest.mark.parametrize("study", ["tvt-speed", "mechanism"])
def test_the_seeds_mean_is_the_cells_mean(study):
    """Every committed cell's mean over seeds (cells.json) is the mean of its --seeds rows."""
    from pipelines.study_report import _rows, _sql, analysis_connection

    st = parse_study(find_study(study))
    res = ROOT / "results" / study
    con = analysis_connection(st, res / "metrics.parquet")
    try:
        rows = _rows(con, _sql("seeds"))
    finally:
        con.close()
    seeds: dict[tuple, list[float]] = {}
    for r in rows:
        if r["value"] is not None:
            seeds.setdefault((r["grid_size"], r["level"], r["condition"], r["metric"]), []).append(r["value"])
    cells = [c for c in json.loads((res / "cells.json").read_text()) if c["win"] == "late" and c["mean"] is not None]
    assert cells
    for c in cells:
        got = seeds[(c["grid_size"], c["level"], c["condition"], c["metric"])]
        assert len(got) == c["n_seeds"]
        assert sum(got) / len(got) == pytest.approx(c["mean"], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "--cells"], "choose one"),
    (["--seeds", "--metrics", "nope"], "has no metric nope"),
    (["--seeds", "--grid", "7"], "no run at grid 7"),
])
def test_seeds_bad_input_is_one_line_and_exit_2(args, needle):
    res = runner.invoke(app, ["study", "table", "tvt-speed", *args])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


def test_seeds_without_a_report_is_one_line(tmp_path):
    res = runner.invoke(app, ["study", "table", "tvt-speed", "--seeds", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "report the study first" in res.output


def test_a_seeds_block_round_trips():
    text = ("<!-- karmic study table tvt-speed --seeds --grid 10 --metrics apples_per_agent_step -->\n"
            "stale\n<!-- end table -->\n")
    (block,) = table_blocks(text)
    assert block.seeds and block.grid == 10 and block.metrics == ("apples_per_agent_step",)
    st = parse_study(find_study("tvt-speed"))
    filled, n = fill_table_blocks(text, "tvt-speed", lambda b: b.render(st, ROOT / "results" / "tvt-speed"))
    assert n == 1 and "| old | tvt | 1 |" in filled and "stale" not in filled


@pytest.mark.parametrize("kind", ["--cells", "--seeds"])
def test_results_written_before_a_metric_existed_get_the_default_columns_they_have(kind):
    """results/ecology predates encounters and transport: its default table leaves those out,
    and asking for one by name is one line."""
    res = runner.invoke(app, ["study", "table", "ecology", kind])
    assert res.exit_code == 0, res.output
    head = res.output.splitlines()[0]
    assert "apples_per_agent_step" in head and "encounters_per_agent_step" not in head
    res = runner.invoke(app, ["study", "table", "ecology", kind, "--metrics", "encounters_per_agent_step"])
    assert res.exit_code == 2 and "has no metric encounters_per_agent_step" in res.output


def test_seeds_from_a_damaged_metrics_file_is_one_line(tmp_path):
    (tmp_path / "metrics.parquet").write_bytes(b"not parquet")
    res = runner.invoke(app, ["study", "table", "tvt-speed", "--seeds", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "unreadable" in res.output and "Traceback" not in res.output
