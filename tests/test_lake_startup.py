"""Issue 34: `karmic sql` and `karmic query` start light, and a bare count comes from the commit log.

- Importing the CLI and running `sql` / `query` imports none of torch, numba, PettingZoo, polars,
  matplotlib (a test that fails the day someone adds a top-level import of one of them on that
  path); `import karmic` still registers the environment with PettingZoo when it is imported.
- `karmic sql "select count(*) from <table>"` (karmic.commands._fast) gives DuckDB's answer,
  column name and formats, without importing typer, DuckDB or Arrow; anything else goes through
  typer as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from karmic.commands._fast import parse_count
from karmic.lake import connect, fetch
from pipelines.simulate import simulate

HEAVY = ("torch", "numba", "pettingzoo", "gymnasium", "polars", "matplotlib", "karmic.envs", "karmic.training.ppo")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = tmp_path_factory.mktemp("startup")
    simulate(lake, grid_size=10, episodes=3, policy="random", seed=4, max_steps=60, run_id="a", flush_episodes=2)
    simulate(lake, grid_size=10, episodes=2, policy="random", seed=5, max_steps=60, run_id="b")
    return lake


def _py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [
    ["sql", "select run_id, count(*) from events group by 1"],
    ["sql", "select count(*) from events"],
    ["query", "retribution_ratio"],
    ["query", "zap_counts", "--run", "a"],
])
def test_sql_and_query_import_nothing_heavy(lake, args):
    code = (
        "import sys; from typer.testing import CliRunner; from karmic.cli import app; "
        f"r = CliRunner().invoke(app, {args + ['--lake', str(lake)]!r}); "
        "assert r.exit_code == 0, r.output; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = _py(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_import_karmic_still_registers_the_env_when_pettingzoo_comes():
    code = ("import sys, karmic; assert 'pettingzoo' not in sys.modules; import pettingzoo; "
            "env = pettingzoo.make('parallel', 'KarmicHarvest-v0', grid_size=10); "
            "print(type(env).__name__, pettingzoo.__loader__.__class__.__name__)")
    out = _py(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["raw_env", "SourceFileLoader"]
    # and where PettingZoo came first
    out = _py("import pettingzoo, karmic; pettingzoo.make('parallel', 'KarmicHarvest-v0', grid_size=10)")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("sql, want", [
    ("select count(*) from events", ("events", "count_star()")),
    ("  SELECT COUNT( * ) FROM Episodes ; ", ("episodes", "count_star()")),
    ("select count(*) as n from actions", ("actions", "n")),
    ("select count(*) n from events", ("events", "n")),
    ('select count(*) as "N x" from events', ("events", "N x")),
    ("select count(*) from runs", None),
    ("select count(*) from events where seq > 1", None),
    ("select count(*) + 1 from events", None),
    ("select count(seq) from events", None),
    ("select count(*) from events; select 1", None),
    ("select count(*) from events e", None),
])
def test_parse_count(sql, want):
    assert parse_count(sql) == want


def _karmic(*args: str) -> subprocess.CompletedProcess:
    # the console script's code path (karmic.commands._fast.main), as `python -m karmic.cli` takes it
    code = "import sys; from karmic.commands._fast import main; sys.argv[0] = 'karmic'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("sql", ["select count(*) from events", "select count(*) as n from episodes",
                                 "SELECT COUNT(*) FROM actions;"])
@pytest.mark.parametrize("run", [None, "a", "b"])
def test_count_from_the_log_is_duckdbs(lake, sql, run):
    con = connect(lake, run=run)
    cols, rows = fetch(con, sql)
    extra = ["--run", run] if run else []
    for cmd in (_karmic, lambda *a: subprocess.run([sys.executable, "-m", "karmic.cli", *a],
                                                   capture_output=True, text=True, timeout=120)):
        r = cmd("sql", sql, "--lake", str(lake), "--format", "json", *extra)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == [dict(zip(cols, rows[0], strict=True))]
    r = _karmic("sql", sql, f"--lake={lake}", "--format=csv", *extra)
    assert r.stdout.splitlines() == [cols[0], str(rows[0][0])]


def test_fast_count_imports_no_engine(lake):
    code = ("import sys; from karmic.commands._fast import run; "
            f"assert run(['sql', 'select count(*) from events', '--lake', {str(lake)!r}, '--format', 'csv']); "
            "print(sorted(m for m in ('typer', 'duckdb', 'pyarrow', 'numpy', 'pydantic') if m in sys.modules))")
    out = _py(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("args", [
    ["sql", "select count(*) from events", "--run", "nope"],        # typer: run not found
    ["sql", "select count(*) from events", "--format", "xml"],      # typer: --format error
    ["sql", "select count(*) from events", "--bogus"],              # typer: no such option
    ["sql", "--help"],
    ["sql", "select count(*) from runs"],                           # not a table the log counts
])
def test_everything_else_goes_through_typer(lake, args):
    from karmic.commands._fast import run

    assert run([*args, "--lake", str(lake)]) is False


def test_old_lake_without_log_is_counted_by_duckdb(tmp_path):
    simulate(tmp_path, grid_size=10, episodes=2, policy="random", seed=1, max_steps=40, run_id="o")
    import shutil

    shutil.rmtree(tmp_path / "_log")  # a lake from before the commit log
    from karmic.commands._fast import run

    assert run(["sql", "select count(*) from events", "--lake", str(tmp_path)]) is False
    r = _karmic("sql", "select count(*) from events", "--lake", str(tmp_path), "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.splitlines()[1]) == fetch(connect(tmp_path), "select count(*) from events")[1][0][0]


def test_views_bind_from_the_log_with_run_ids_from_paths(lake):
    con = connect(lake)
    assert dict(fetch(con, "select run_id, count(distinct episode) from episodes group by 1")[1]) == {"a": 3, "b": 2}
    # the path's run id, as the glob's hive partitioning gave it: the same rows both ways
    hidden = Path(lake) / "_log.hidden"
    (Path(lake) / "_log").rename(hidden)
    try:
        glob = fetch(connect(lake), "select * from events order by run_id, episode, seq")[1]
    finally:
        hidden.rename(Path(lake) / "_log")
    assert fetch(connect(lake), "select * from events order by run_id, episode, seq")[1] == glob
