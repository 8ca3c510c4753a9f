"""The replay GIF a newcomer opens (issue 36): larger by default, a legend for the cell colours, a
caption that fits the frame, and `--every N` frame sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from karmic.cli import app
from karmic.envs import render


def _sim(lake: Path) -> str:
    res = CliRunner().invoke(app, ["simulate", "--policy", "mixed", "--episodes", "1", "--max-steps", "50",
                                   "--seed", "2", "--lake", str(lake)])
    assert res.exit_code == 0, res.output
    rows = json.loads(CliRunner().invoke(app, ["runs", "--lake", str(lake), "--format", "json"]).output)
    return rows[0]["run_id"]


def test_every_samples_frames_and_the_gif_is_larger_with_a_legend(tmp_path):
    lake = tmp_path / "lake"
    rid = _sim(lake)
    for every, frames in ((1, 51), (5, 11), (7, 9)):  # 0, 7, ..., 49 and the last step, 50
        out = tmp_path / f"e{every}.gif"
        res = CliRunner().invoke(app, ["replay", rid, "0", "--lake", str(lake), "--out", str(out),
                                       "--every", str(every)])
        assert res.exit_code == 0, res.output
        im = Image.open(out)
        assert im.n_frames == frames
        assert im.size[0] >= 480  # 10x10: 40 px cells (was 288 px wide)
    # the legend row: a swatch of each board colour below the caption
    rgb = np.asarray(Image.open(tmp_path / "e1.gif").convert("RGB"))
    board_h = 12 * 40
    band = rgb[board_h:].reshape(-1, 3)
    for name, colour in render.LEGEND:
        if name != "hit":
            assert (band == colour).all(axis=1).any(), name
    res = CliRunner().invoke(app, ["replay", rid, "0", "--lake", str(lake), "--every", "0"])
    assert res.exit_code == 2 and "--every must be >= 1" in res.output


def test_caption_lines_never_exceed_the_frame():
    d = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = render._font(14)
    words = [f"{i} hits {i + 1} (apples near)" for i in range(40)] + ["x" * 200]
    for width in (120, 300, 480):
        lines = render._wrap(d, font, words, width, 3)
        assert 1 <= len(lines) <= 3 and lines[-1].endswith("…")
        assert all(d.textlength(x, font=font) <= width for x in lines), (width, lines)
    assert render._wrap(d, font, ["a", "b"], 300, 2) == ["a, b"]
