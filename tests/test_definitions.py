"""One definition of "late" and of min_hits (issue 36): `karmic report`, `karmic study report`, the
SQL views and the study files all read karmic.definitions, and every output names the window."""

from __future__ import annotations

from pathlib import Path

from test_report import small_lake
from test_study import HEAD, _write
from typer.testing import CliRunner

from karmic.cli import app
from karmic.definitions import LATE_FRACTION, LATE_WINDOW, MIN_HITS, late_label
from karmic.lake import connect
from pipelines import report as rp
from pipelines.study import parse_study
from pipelines.study_report import study_late_label


def test_the_window_and_its_label():
    assert LATE_WINDOW == (1 - LATE_FRACTION, 1.0)
    assert "last 20%" in late_label(0.2) and "default" not in late_label(LATE_FRACTION)
    assert "the default is" in late_label(0.1)


def test_the_sql_defaults_are_the_definitions(tmp_path: Path):
    lake = small_lake(tmp_path / "lake", seeds=2, episodes=10)
    con = connect(lake)
    unset = con.sql("select * from late_seed_metrics order by all").fetchall()
    con.execute(f"set variable late_fraction = {LATE_FRACTION}")
    assert con.sql("select * from late_seed_metrics order by all").fetchall() == unset
    con.execute("set variable late_fraction = 0.5")
    assert con.sql("select * from late_seed_metrics order by all").fetchall() != unset
    rows = connect(lake).sql("select distinct min_hits from (" + rp.load_query("retribution_curve").rstrip().rstrip(";") + ")").fetchall()
    assert rows == [(MIN_HITS,)]


def test_report_and_study_share_the_late_window(tmp_path: Path):
    data = rp.collect(small_lake(tmp_path / "lake", seeds=2, episodes=4), tmp_path / "out")
    assert data.params["late_fraction"] == LATE_FRACTION and data.params["min_hits"] == MIN_HITS
    no_windows = HEAD.replace("[windows]\nlate = [0.8, 1.0]\nmid = [0.4, 0.6]\n", "")
    assert "[windows]" not in no_windows
    st = parse_study(_write(tmp_path, no_windows))
    assert st.windows["late"] == LATE_WINDOW
    assert study_late_label(st) == late_label(LATE_FRACTION)
    own = parse_study(_write(tmp_path, HEAD.replace("late = [0.8, 1.0]", "late = [0.5, 1.0]"), "own"))
    assert "last 50%" in study_late_label(own) and "study's own window" in study_late_label(own)


def test_outputs_name_the_window(tmp_path: Path):
    out = tmp_path / "rep"
    rp.make_report(small_lake(tmp_path / "lake", seeds=2, episodes=4), out)
    for f in ("index.html", "report.md"):
        assert late_label(LATE_FRACTION).replace("'", "&#x27;" if f.endswith("html") else "'") in (out / f).read_text()
    help_text = CliRunner().invoke(app, ["report", "--help"], terminal_width=200).output
    assert "0.2" in help_text and str(MIN_HITS) in help_text
