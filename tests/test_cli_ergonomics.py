"""The CLI as a newcomer meets it (issue 36): every option has help and shows its default, `karmic
--version`, `karmic runs` with whole ids and one status vocabulary, a read-only lake or --out is
one line and exit 2 with nothing written, and bad input (an option a query ignores, a malformed
parameter, a folder that is not a lake) is refused instead of answered."""

from __future__ import annotations

import errno
import inspect
import json
import os
from pathlib import Path

import pytest
import typer
from test_metrics import ep_rows, write_run
from typer.models import ParameterInfo
from typer.testing import CliRunner

from karmic import __version__
from karmic.cli import app

WIDE = {"COLUMNS": "250"}


def _cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env or WIDE)


def _commands():
    """(argv prefix, click command) of every command and subcommand."""
    root = typer.main.get_command(app)
    out = []
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):
            out += [([name, sub], c) for sub, c in cmd.commands.items()]
        else:
            out.append(([name], cmd))
    return out


def test_every_option_has_help_and_its_default_is_shown():
    for argv, cmd in _commands():
        page = _cli(*argv, "--help").output
        for p in cmd.params:
            if p.param_type_name != "option" or p.hidden:
                continue
            assert p.help, f"karmic {' '.join(argv)} {p.opts[0]} has no help"
            assert p.help.split()[0].strip("\\") in page, (argv, p.opts[0])
            if isinstance(p.show_default, str):  # a written default: shown, not eaten as markup
                assert f"[default: ({p.show_default})]" in page or f"[default: {p.show_default}]" in page, (argv, p.opts[0])
            elif p.default not in (None, False) and not p.is_flag and p.show_default is not False:
                assert "[default: " in page, (argv, p.opts[0])


def test_no_help_text_writes_its_default_as_markup():
    def walk(t: typer.Typer):
        for c in t.registered_commands:
            for p in inspect.signature(c.callback).parameters.values():
                if isinstance(p.default, ParameterInfo) and p.default.help:
                    assert "[default" not in p.default.help.replace("\\[", ""), p.name
        for g in t.registered_groups:
            walk(g.typer_instance)

    walk(app)


def test_version():
    res = _cli("--version")
    assert res.exit_code == 0 and res.output.strip() == f"karmic {__version__}"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    for i in range(2):
        res = _cli("simulate", "--policy", "mixed", "--episodes", "1", "--max-steps", "20", "--seed", str(i),
                   "--lake", str(lake))
        assert res.exit_code == 0, res.output
    write_run(lake, "baseline-g10-s1-0123456789abcdef-a-very-long-training-run-id", condition="baseline",
              grid_size=10, seed=1, episodes=ep_rows(0, 0, 20, [{"apples": 1}] * 3), events=[])
    p = next(lake.glob("runs/run_id=baseline*/run.json"))
    p.write_text(json.dumps({**json.loads(p.read_text()), "kind": "train", "status": "completed"}))
    return lake


def test_runs_lists_whole_ids_kinds_and_one_status_vocabulary(lake, monkeypatch):
    res = _cli("runs", "--lake", str(lake), "--format", "json")
    rows = json.loads(res.output)
    assert {r["kind"] for r in rows} == {"simulate", "train"}
    assert {r["status"] for r in rows} == {"completed"}  # simulations too (was "finished")
    sims = [r for r in rows if r["kind"] == "simulate"]
    assert all(r["condition"] == "mixed" and r["steps"] == 20 and r["episodes"] == 1 for r in sims)
    # a table at 80 columns on a terminal: the ids are whole, other columns give way
    import sys

    from karmic.commands._output import print_rows

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    cols = list(rows[0])
    import contextlib
    import io

    buf = io.StringIO()
    buf.isatty = lambda: True
    with contextlib.redirect_stdout(buf):
        print_rows(cols, [tuple(r.values()) for r in rows])
    for r in rows:
        assert r["run_id"] in buf.getvalue()
    assert _cli("runs", "--kind", "sim", "--lake", str(lake)).exit_code == 2
    assert len(json.loads(_cli("runs", "--kind", "train", "--lake", str(lake), "--format", "json").output)) == 1


def test_old_finished_status_reads_as_completed(tmp_path):
    write_run(tmp_path, "old", condition="x", grid_size=10, seed=0, episodes=[], events=[])  # status "finished"
    rows = json.loads(_cli("runs", "--lake", str(tmp_path), "--format", "json").output)
    assert rows[0]["status"] == "completed"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


READ_ONLY = Path("/sys/karmic-test-lake")


@pytest.mark.skipif(os.access("/sys", os.W_OK) and os.getuid() != 0, reason="needs a folder no one may write")
@pytest.mark.parametrize("argv", [
    ["simulate", "--episodes", "1", "--lake", str(READ_ONLY)],
    ["train", "--total-steps", "40", "--lake", str(READ_ONLY)],
])
def test_a_read_only_lake_is_one_line_and_exit_2(argv):
    res = _cli(*argv)
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [res.output.strip()] and "cannot write" in res.output
    assert "Traceback" not in res.output


def test_report_and_replay_to_a_read_only_out(lake):
    if os.path.exists("/sys/karmic-x") or not os.path.isdir("/sys"):
        pytest.skip("no read-only folder")
    res = _cli("report", "--lake", str(lake), "--out", "/sys/karmic-report")
    assert res.exit_code == 2 and "cannot write /sys/karmic-report" in res.output, res.output
    run = json.loads(_cli("runs", "--lake", str(lake), "--kind", "simulate", "--format", "json").output)[0]["run_id"]
    res = _cli("replay", run, "0", "--lake", str(lake), "--out", "/sys/karmic.gif")
    assert res.exit_code == 2 and "cannot write /sys/karmic.gif" in res.output, res.output


def test_a_lake_that_turns_read_only_leaves_nothing_half_written(lake, monkeypatch):
    import pipelines.writer as writer

    before = _files(lake)

    def erofs(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(lake / "runs"))

    monkeypatch.setattr(writer, "write_json_atomic", erofs)
    res = _cli("simulate", "--episodes", "1", "--max-steps", "20", "--lake", str(lake))
    assert res.exit_code == 2 and "Read-only file system" in res.output and "Traceback" not in res.output
    assert _files(lake) == before


@pytest.mark.parametrize("argv, msg", [
    (["query", "zap_counts", "--by", "episode"], "--by: query zap_counts does not read by"),
    (["query", "zap_counts", "--param", "n_bins=5"], "--param n_bins=5: query zap_counts does not read n_bins"),
    (["query", "aggression_curve", "--param", "n_bins=abc"], "--param n_bins=abc: must be an integer"),
    (["query", "ablation", "--param", "late_fraction=x"], "must be a number"),
    (["query", "retribution_ratio", "--by", "run"], "--by: must be one of episode"),
])
def test_query_refuses_what_it_would_ignore(lake, argv, msg):
    res = _cli(*argv, "--lake", str(lake))
    assert res.exit_code == 2 and msg in res.output, res.output


def test_a_folder_that_is_not_a_lake_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for argv in (["runs"], ["query", "zap_counts"], ["sql", "select count(*) from events"]):
        res = _cli(*argv, "--lake", str(tmp_path))
        assert res.exit_code == 2 and "not a lake" in res.output, (argv, res.output)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("runs", "--lake", str(empty)).exit_code == 0  # an empty folder is an empty lake


@pytest.mark.parametrize("argv, msg", [
    (["simulate", "--preset", "nope"], "error: --preset: unknown preset 'nope'"),
    (["simulate", "--grid-size", "300"], "error: --grid-size: 300 is outside [5, 200]"),
    (["sweep", "--modes", "baseline", "--set", "nonsense=1"], "error: --set nonsense=1: no such field"),
    (["sweep", "--modes", "baseline", "--set", "max_steps=abc"], "error: --set max_steps=abc: must be an integer"),
])
def test_environment_errors_name_the_flag_typed(tmp_path, argv, msg):
    res = _cli(*argv, "--lake", str(tmp_path / "lake"))
    assert res.exit_code == 2 and msg in res.output and "HarvestConfig" not in res.output, res.output
    assert "Traceback" not in res.output


def test_a_policy_name_in_a_wide_table_is_never_cut(capsys):
    """karmic evaluate's table names policies by run id: printed whole at any table width."""
    from karmic.commands._output import print_rows

    name = "mechanism-budget-default-baseline-g30-s101"
    cols = ["scenario", "focal", "background", "policy"] + [f"metric_{i}_per_agent_step" for i in range(8)]
    print_rows(cols, [("solo", name, "", name, *([0.123456] * 8))])
    out = capsys.readouterr().out
    assert out.count(name) == 2
