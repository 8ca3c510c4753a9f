"""`karmic plot` / `karmic report`: files written, content drawn from the queries, bad input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_metrics import apple, ep_rows, write_run
from test_metrics_ablation import hit
from typer.testing import CliRunner

from karmic.cli import app
from pipelines import report as rp

CONDITIONS = ("baseline", "tvt", "matchmaker", "full")


def small_lake(root: Path, seeds: int = 2, episodes: int = 6) -> Path:
    rng = random.Random(3)
    for ci, cond in enumerate(CONDITIONS):
        for grid in (10, 30):
            for seed in range(seeds):
                eps, evs = [], []
                for e in range(episodes):
                    per = [{"apples": rng.randint(0, 9), "frozen_steps": rng.randint(0, 30)}] * 3
                    eps += ep_rows(e, e * 100, 100, per)
                    seq = 0
                    for _ in range(rng.randint(0, 4 - ci)):
                        a, b = rng.sample(range(3), 2)
                        evs.append(hit(e, seq, a, b) | {"global_step": e * 100 + seq})
                        seq += 1
                    evs.append(apple(e, rng.randint(0, 99), 0, e * 100) | {"seq": seq})
                write_run(
                    root,
                    f"{cond}-{grid}-{seed}",
                    condition=cond,
                    grid_size=grid,
                    seed=seed,
                    episodes=eps,
                    events=evs,
                )
    return root


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    return small_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="module")
def built(lake: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    index = rp.make_report(lake, out)
    assert index == out / "index.html"
    return out


def test_report_writes_self_contained_html_and_markdown(built: Path) -> None:
    page = (built / "index.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # plots embedded, no external files
    assert "src='aggression" not in page
    for text in ("Ablation table", "Scale comparison table", "config of baseline-10-0"):
        assert text in page
    assert rp.load_query("aggression_curve").splitlines()[0] in page  # the SQL behind figure 1
    md = (built / "report.md").read_text()
    assert "![Aggression" in md and "| grid | metric |" in md and "```sql" in md
    for png in ("aggression_curve.png", "scale_comparison.png", "social_outcomes.png"):
        data = (built / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_ablation_table_is_the_ablation_query(lake: Path, tmp_path: Path) -> None:
    data = rp.collect(lake, tmp_path)
    con = rp.open_lake(lake)
    # no variable set: the SQL's own default must be the report's (karmic.definitions, issue 36)
    # floats from DuckDB's parallel aggregation may differ in the last digits between two runs
    expected = rp._rows(con, rp.load_query("ablation"))
    assert len(data.ablation) == len(expected)
    for got, want in zip(data.ablation, expected, strict=True):
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == (pytest.approx(v, rel=1e-9, abs=1e-12) if isinstance(v, float) else v), k
    assert data.counts["runs"] == 16
    # 4 conditions x 2 grids x 6 metrics (retribution_ratio may be missing where no hits)
    assert {(r["condition"], r["grid_size"]) for r in data.ablation} == {
        (c, g) for c in CONDITIONS for g in (10, 30)
    }


def test_run_filter_restricts_every_view(lake: Path, tmp_path: Path) -> None:
    data = rp.collect(lake, tmp_path, runs=["tvt-10-0", "tvt-10-1"])
    assert data.counts["runs"] == 2
    assert {r["run_id"] for r in data.runs} == {"tvt-10-0", "tvt-10-1"}
    assert {r["condition"] for r in data.ablation} == {"tvt"}


runner = CliRunner()


def test_cli_report_prints_the_path(lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = runner.invoke(app, ["report", "--lake", str(lake), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out / "index.html")


def test_cli_plot_writes_pngs(lake: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["plot", "--lake", str(lake), "--out", str(tmp_path), "--run", "full-30-1"]
    )
    assert res.exit_code == 0, res.output
    assert len(list(tmp_path.glob("*.png"))) >= 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "--lake", "{missing}"], "lake not found"),
        (["plot", "--lake", "{empty}"], "has no episodes"),
        (["report", "--lake", "{lake}", "--run", "nope"], "run not found"),
        (["report", "--lake", "{lake}", "--late-fraction", "0"], "late-fraction"),
    ],
)
def test_cli_bad_input_one_line_exit_2(
    lake: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "lake": lake}
    args = [a.format(**paths) for a in args] + ["--out", str(tmp_path / "o")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_cli_torn_file_one_line_exit_2(tmp_path: Path) -> None:
    lake = small_lake(tmp_path / "lake", seeds=1, episodes=2)
    (lake / "events" / "run_id=full-10-0" / "part-9.parquet").write_bytes(b"not parquet")
    res = runner.invoke(app, ["report", "--lake", str(lake), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
