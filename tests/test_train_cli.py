"""`karmic train` user errors: one line on stderr, exit 2, nothing written (no env needed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from karmic.cli import app

TINY = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10",
        "--hidden", "32", "--set", "max_steps=20", "--threads", "1"]


def _tb_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--mode", "nope"], "unknown --mode"),
        (["--grid-size", "2"], "--grid-size"),
        (["--seeds", "1,x"], "--seeds"),
        (["--resume", "no-such-run"], "no checkpoint"),
        (["--set", "max_steps"], "KEY=VALUE"),
        pytest.param(["--tensorboard"], "needs the tensorboard package",
                     marks=pytest.mark.skipif(_tb_installed(), reason="tensorboard installed")),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, msg):
    res = CliRunner().invoke(app, ["train", "--lake", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
    assert msg in res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


