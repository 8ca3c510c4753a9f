"""A small lake's report degrades gracefully (issue 36): a one-bin run is visible (markers), the
late window is shaded on every learning curve, a scripted simulation is a line at its mean (not a
curve over training steps), tick labels and subtitles fit, 0 is written 0, and a lake with one grid
size gets a sentence instead of a scale table of dashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_metrics import ep_rows, write_run

from karmic import plots
from karmic.definitions import LATE_FRACTION
from pipelines import report as rp


def small_lake(root: Path) -> Path:
    """One grid size: two single-episode trained runs (one bin each) and a scripted simulation."""
    for cond, seed in (("baseline", 1), ("tvt", 1)):
        write_run(root, f"{cond}-1", condition=cond, grid_size=10, seed=seed,
                  episodes=ep_rows(0, 40, 20, [{"apples": 2}] * 3), events=[])
    write_run(root, "sim-1", condition="simulate-matchmaker-mixed-seeded", grid_size=10, seed=0,
              episodes=ep_rows(0, 0, 20, [{"apples": 1}] * 3) + ep_rows(1, 20, 20, [{"apples": 3}] * 3),
              events=[])
    import json

    for p in root.glob("runs/run_id=*/run.json"):
        meta = json.loads(p.read_text())
        meta["kind"] = "simulate" if "sim" in p.parent.name else "train"
        p.write_text(json.dumps(meta))
    return root


@pytest.fixture
def figures(tmp_path, monkeypatch):
    """make_report on the small lake, keeping every figure open for inspection."""
    kept = []
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: kept.append(fig))
    index = rp.make_report(small_lake(tmp_path / "lake"), tmp_path / "rep")
    return index, {Path(f._karmic_path).name if hasattr(f, "_karmic_path") else i: f for i, f in enumerate(kept)}, kept


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 + 2 and b.x0 < a.x1 + 2 and a.y0 < b.y1 and b.y0 < a.y1  # 2 px apart at least


def test_small_lake_figures(figures):
    index, _, kept = figures
    curves = [f for f in kept if any(ax.get_xlabel().startswith("training steps") for ax in f.axes)]
    assert len(curves) == 3  # aggression, debt, retribution ratio
    for fig in curves:
        ax = next(a for a in fig.axes if a.get_title() == "10x10 grid")
        # the late window, shaded
        spans = [p for a in fig.axes for p in a.patches if p.get_alpha() and abs(p.get_alpha() - 0.18) < 1e-9]
        assert spans, fig._suptitle.get_text()
        legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert f"late window (last {LATE_FRACTION:.0%} of steps)" in legend
        # the scripted simulation is a mean line, named as such, not a curve over training steps
        if "Retribution" not in fig._suptitle.get_text():
            assert any("scripted: mean, not trained" in t for t in legend)
            trained = [ln for ln in ax.lines if ln.get_marker() not in (None, "None", "")]
            assert len(trained) == 2  # baseline and tvt: one bin each, drawn with a marker
            assert all(len(ln.get_xdata()) == 1 for ln in trained)
    for fig in kept:  # nothing clipped or overlapping once drawn
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        page = fig.bbox
        t = fig._suptitle.get_window_extent(r) if fig._suptitle else None
        if t is not None:
            assert t.x0 >= page.x0 - 1 and t.x1 <= page.x1 + 1, fig._suptitle.get_text()
        for ax in fig.axes:
            labels = [lab.get_window_extent(r) for lab in ax.get_xticklabels() if lab.get_text()]
            for a, b in zip(labels, labels[1:], strict=False):
                assert not _boxes_overlap(a, b), [lab.get_text() for lab in ax.get_xticklabels()]
    page = index.read_text()
    assert "No 30x30 runs in this lake" in page and "e-17" not in page


def test_long_condition_names_wrap():
    assert plots._wrap_label("simulate-matchmaker-mixed-seeded").count("\n") >= 1
    assert rp._fmt(-5.551115123125783e-17) == "0" and rp._fmt(0.25) == "0.25"
