"""`karmic train` as a researcher configures it (issue 36): every TrainConfig / DRQNConfig field is
a flag generated from the dataclass, a --config TOML key, or --set; errors name what was typed;
run.json records it; a too-short --mode all is refused; Ctrl-C prints the exact resume command."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

import karmic.commands.train as tc
from karmic.cli import app
from karmic.training.config import DRQNConfig, TrainConfig, field_docs

TINY = ["--grid-size", "10", "--num-envs", "2", "--num-steps", "20", "--seq-len", "10",
        "--hidden", "32", "--set", "max_steps=20", "--threads", "1"]


def _run(*args: str):
    return CliRunner().invoke(app, ["train", *args], env={"COLUMNS": "250"})


def _run_json(lake: Path) -> dict:
    (p,) = (lake / "runs").glob("run_id=*/run.json")
    return json.loads(p.read_text())


def test_every_config_field_is_a_flag_with_its_docstring_and_default():
    out = _run("--help").output
    docs = {**field_docs(DRQNConfig), **field_docs(TrainConfig)}
    for f in {*dataclasses.fields(TrainConfig), *dataclasses.fields(DRQNConfig)}:
        if f.name in tc.NOT_FLAGS:
            continue
        assert tc.flag(f.name) in out, f.name
        assert docs[f.name].split()[0] in out, f.name
    assert "[default: 0.99]" in out  # gamma
    assert "ppo 0.0003, drqn 0.0001" in out  # lr: the learner decides


def test_set_and_flags_and_config_file_reach_the_run_and_run_json(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('gamma = 0.95\nclip_coef = 0.3\nupdate_epochs = 2\n[env]\nmax_steps = 20\n')
    lake = tmp_path / "lake"
    res = _run("--config", str(cfg), "--clip-coef", "0.1", "--set", "gae_lambda=0.9",
               "--total-steps", "40", "--lake", str(lake), *TINY)
    assert res.exit_code == 0, res.output
    run = _run_json(lake)
    tcfg = run["train_config"]
    assert (tcfg["gamma"], tcfg["clip_coef"], tcfg["update_epochs"], tcfg["gae_lambda"]) == (0.95, 0.1, 2, 0.9)
    assert tcfg["env_overrides"] == {"max_steps": 20}
    assert run["launch"]["config_file"] == str(cfg) and "gamma = 0.95" in run["launch"]["config_file_text"]
    assert shlex.split(run["launch"]["command"])[:2] == ["karmic", "train"]


@pytest.mark.parametrize("args, msg", [
    (["--set", "gamma=abc"], "--set gamma=abc: gamma must be a number"),
    (["--set", "gama=0.9"], "--set gama=0.9: no training or environment field 'gama' (did you mean gamma?)"),
    (["--gamma", "2"], "--gamma must be in (0, 1]"),
    (["--set", "max_steps=-3"], "--set max_steps=-3: must be >= 1"),
    (["--num-steps", "30"], "--num-steps (30) must be a multiple of --seq-len (25)"),
    (["--n-step", "3"], "--n-step: a drqn option (--algo drqn)"),
    (["--preset", "nope"], "--preset: unknown preset"),
    (["--mode", "all", "--total-steps", "8000"], "the matchmaker acts from the second round"),
    (["--resume", "x", "--gamma", "0.5"], "drop --gamma"),
])
def test_errors_name_what_the_user_typed(tmp_path, args, msg):
    res = _run("--lake", str(tmp_path), *args)
    assert res.exit_code == 2, res.output
    assert msg in res.output and "Traceback" not in res.output
    assert "HarvestConfig" not in res.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("body, msg", [
    ("gama = 0.9\n", "unknown key 'gama' (did you mean gamma?)"),
    ('lr = "fast"\n', "lr must be a number"),
    ("gamma = [\n", "not valid TOML"),
    ("env = 3\n", "[env] must be a table"),
])
def test_a_bad_config_file_is_one_line(tmp_path, body, msg):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    lake = tmp_path / "lake"
    res = _run("--config", str(p), "--lake", str(lake))
    assert res.exit_code == 2 and msg in res.output and f"--config {p}" in res.output, res.output
    assert not lake.exists()


def test_ctrl_c_says_interrupted_and_the_exact_resume_command(tmp_path, monkeypatch):
    real = tc._progress

    def stopping(label, total):
        progress, on_update = real(label, total)
        calls = []

        def on(info):
            on_update(info)
            calls.append(1)
            if len(calls) == 2:  # after the first round's checkpoint
                raise KeyboardInterrupt

        return progress, on

    monkeypatch.setattr(tc, "_progress", stopping)
    lake = tmp_path / "lake"
    res = _run("--total-steps", "160", "--checkpoint-every", "1", "--lake", str(lake), *TINY)
    assert res.exit_code == 130
    line = next(ln for ln in res.output.splitlines() if ln.startswith("interrupted"))
    cmd = line.split("resume with: ", 1)[1]
    assert _run_json(lake)["status"] == "interrupted"
    monkeypatch.setattr(tc, "_progress", real)
    again = CliRunner().invoke(app, shlex.split(cmd)[1:])
    assert again.exit_code == 0, again.output
    assert _run_json(lake)["status"] == "completed"


def test_progress_never_shows_nan():
    progress, on_update = tc._progress("x", 10)
    on_update({"global_step": 1, "total_steps": 10, "steps_per_s": 1.0,
               "mean_return": float("nan"), "zaps_per_episode": float("nan")})
    fields = progress.tasks[0].fields
    assert "nan" not in fields["ret"] and "nan" not in fields["zaps"]
