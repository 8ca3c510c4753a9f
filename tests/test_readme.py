"""The README's commands run as written: its usage block (```bash usage) is executed on a fresh,
small lake, and every `karmic` line of its other bash blocks parses against the CLI as it is
(right command, options it has), without running."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def blocks(info: str) -> list[str]:
    """The fenced blocks of the README whose info string is exactly `info`."""
    return re.findall(rf"^```{re.escape(info)}\n(.*?)^```", README.read_text(), re.S | re.M)


def test_the_readme_is_a_front_page() -> None:
    assert len(README.read_text().splitlines()) <= 200
    assert len(blocks("bash usage")) == 1


def test_the_usage_block_runs_as_written(tmp_path: Path) -> None:
    (usage,) = blocks("bash usage")
    bindir = Path(sys.executable).parent
    if shutil.which("karmic", path=str(bindir)) is None:
        pytest.skip(f"no karmic script beside {sys.executable} (pip install -e .)")
    lake = tmp_path / "lake"
    env = dict(
        os.environ,
        KARMIC_LAKE=str(lake),
        PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", usage],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, (
        f"README usage block failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    # it did what it says: a simulated and a trained run in the lake, a report beside it
    runs = sorted(p.name for p in (lake / "runs").glob("run_id=*"))  # not runs/_compacted (karmic lake compact)
    assert len(runs) == 2 and any(r.startswith("run_id=sim-") for r in runs), runs
    assert any(r.startswith("run_id=tvt-") for r in runs), runs
    assert "ledger check passed" in res.stdout
    assert (tmp_path / "reports" / "first" / "index.html").exists()


def _karmic_lines() -> list[list[str]]:
    out = []
    for block in blocks("bash") + blocks("bash usage"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["karmic"]:
                out.append(words[1:])
    return out


def test_every_karmic_line_of_the_readme_parses() -> None:
    import typer

    from karmic.cli import app

    root = typer.main.get_command(app)
    lines = _karmic_lines()
    assert len(lines) >= 10
    for words in lines:
        cmd, rest, path = root, list(words), ["karmic"]
        while getattr(cmd, "commands", None):
            assert rest and rest[0] in cmd.commands, f"unknown command: {' '.join(path + rest[:1])}"
            path.append(rest[0])
            cmd = cmd.commands[rest.pop(0)]
        # parses the options and arguments as the CLI would, without running the command
        ctx = cmd.make_context(" ".join(path), rest, resilient_parsing=False)
        ctx.close()
