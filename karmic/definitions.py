"""Definitions every report shares, in one place (issue 36): what "late training" is and how many
hits a retribution ratio needs. ``karmic report``, ``karmic study report``, the SQL views
(``queries/_late_seed_metrics.sql``, ``queries/retribution_curve.sql``, whose defaults
``karmic.lake.create_shared_views`` sets from here) and the study files all read these, so the
same runs get one "late" value. Pure constants: importable from every layer.
"""

from __future__ import annotations

LATE_FRACTION = 0.2
"""Late training = an episode whose global_step is at least ``(1 - LATE_FRACTION)`` times its
run's last global_step: the last 20% of each run's env steps. 0.2 is the window the ablation study
pre-registered (studies/ablation.toml) and the README's results use; a run's late window then lies
on the flat part of its learning curve (see that file's notes)."""

LATE_WINDOW = (round(1.0 - LATE_FRACTION, 10), 1.0)
"""The same window as a study's ``[windows] late = [lo, hi]`` (fractions of a run's steps)."""

MIN_HITS = 20
"""A retribution ratio (retribution hits / all hits) is drawn only from a bin or window with at
least this many hits: a ratio of a handful of hits jumps between 0 and 1."""


def late_label(fraction: float = LATE_FRACTION) -> str:
    """How every output names the window: 'late = the last 20% of each run's env steps'."""
    default = "" if abs(fraction - LATE_FRACTION) < 1e-12 else f"; the default is {LATE_FRACTION:.0%}"
    return f"late = the last {fraction:.0%} of each run's env steps (late_fraction {fraction:g}{default})"


def window_fraction(window: tuple[float, float] | list[float]) -> float | None:
    """A study window ``[lo, 1.0]`` as a late fraction (``1 - lo``); None for a window that does not
    end at the run's end."""
    lo, hi = float(window[0]), float(window[1])
    return round(1.0 - lo, 10) if hi >= 1.0 else None


__all__ = ["LATE_FRACTION", "LATE_WINDOW", "MIN_HITS", "late_label", "window_fraction"]
