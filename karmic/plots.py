"""Paper-style figures from query rows (matplotlib, Agg backend). No I/O beyond ``savefig(path)``.

Every function takes rows (dicts) exactly as a ``queries/*.sql`` file returned them, so every number
drawn comes from SQL. Conditions keep one colour, line style and marker across all figures, the
ones their record in the registry declares (``karmic.conditions``: Okabe-Ito palette, colour-blind
safe; line styles keep them apart in greyscale too); a name the registry does not know is grey.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from karmic import conditions as registry  # noqa: E402
from karmic.definitions import MIN_HITS  # noqa: E402

# Okabe & Ito (2008): the palette the registry's colours come from
OKABE_ITO = ("#D55E00", "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
UNKNOWN_STYLE = ("#555555", "-", "o")  # a condition the registry does not know
NONE_LABEL = "(no condition)"

METRIC_LABELS = {
    "predatory_zaps": "predatory zaps per episode",
    "predatory_rate": "predatory zaps per 1,000 agent-steps",
    "sustainability_share": "sustainability (mean step of eating / episode length)",
    "late_hits": "hits in the late window",
    "retribution_ratio": "retribution hits / all hits",
    "efficiency": "efficiency U (reward per step)",
    "equality": "equality E (1 - Gini of apples)",
    "sustainability": "sustainability S (mean step of eating, steps)",
    "peace": "peace P (agents on the board)",
    "predatory_hits_per_agent_step": "predatory hits per agent-step",
    "zaps_fired_per_agent_step": "zaps fired per agent-step",
    "apples_per_agent_step": "apples eaten per agent-step",
    "total_debt": "total ledger debt at episode end",
}
SYMBOLS = {"efficiency": "U", "equality": "E", "sustainability": "S", "peace": "P"}
UNITS = {
    "efficiency": "reward per step",
    "equality": "1 - Gini of apples",
    "sustainability": "mean step of eating (steps)",
    "peace": "agents on the board",
}

# The house style, applied inside each plot function (not to matplotlib's global state on import,
# which would make other figures of the same process depend on whether this module was imported).
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _styled(fn: Callable[..., Path]) -> Callable[..., Path]:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> Path:
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def label(condition: str | None) -> str:
    return NONE_LABEL if condition is None else str(condition)


def condition_order(conditions: Iterable[str | None]) -> list[str | None]:
    """The registry's display order (karmic.conditions), then names it does not know alphabetically."""
    found = set(conditions)
    known = [c for c in registry.names() if c in found]
    rest = sorted((c for c in found if c not in known), key=lambda c: label(c))
    return known + rest


def condition_style(c: str | None) -> tuple[str, str, str]:
    """(colour, line style, marker) of a condition: its record's, the same in every figure."""
    try:
        rec = registry.get_condition(c)  # type: ignore[arg-type]
    except ValueError:
        return UNKNOWN_STYLE
    return rec.color, rec.linestyle, rec.marker


class Styles:
    """Colour, line style and marker per condition (the registry's), and the conditions' order."""

    def __init__(self, conditions: Iterable[str | None]):
        self.order = condition_order(conditions)
        self._style = {c: condition_style(c) for c in self.order}

    def color(self, c: str | None) -> str:
        return self._style.get(c, condition_style(c))[0]

    def linestyle(self, c: str | None) -> str:
        return self._style.get(c, condition_style(c))[1]

    def marker(self, c: str | None) -> str:
        return self._style.get(c, condition_style(c))[2]


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _grid_title(g) -> str:
    return "grid size unknown" if g is None else f"{g}x{g} grid"


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def _wrap_label(text: str, width: int = 12) -> str:
    """A tick label broken at hyphens / spaces so neighbours never overlap
    (`simulate-matchmaker-mixed` -> three short lines)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width=width, break_on_hyphens=True)) or text


def _xticklabels(ax, labels: Sequence[str]) -> None:
    if len(labels) > 6:  # more names than a panel's width holds side by side, even wrapped
        ax.set_xticklabels(labels, fontsize=8, rotation=35, ha="right", rotation_mode="anchor")
        return
    wrapped = [_wrap_label(x) for x in labels]
    ax.set_xticklabels(wrapped, fontsize=8 if any("\n" in w for w in wrapped) else None)


def wrapped_suptitle(fig, text: str, fontsize: float = 11) -> None:
    """A title whose lines are wrapped to the figure's width (a long subtitle is never clipped)."""
    import textwrap

    chars = max(40, int(fig.get_figwidth() * 72 / (fontsize * 0.6)))
    lines = [w for line in text.split("\n") for w in (textwrap.wrap(line, chars) or [""])]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def _late_span(ax, xs: Sequence[float], late_fraction: float | None):
    """Shade the late window (karmic.definitions) on a learning curve: the last ``late_fraction``
    of the panel's training steps. Returns the legend handle, or None."""
    from matplotlib.patches import Patch

    xs = [x for x in xs if not math.isnan(x)]
    if late_fraction is None or not xs or max(xs) <= 0:
        return None
    hi = max(xs)
    ax.axvspan((1 - late_fraction) * hi, hi, color="#999999", alpha=0.18, lw=0, zorder=0)
    return Patch(color="#999999", alpha=0.35, label=f"late window (last {late_fraction:.0%} of steps)")


def _scripted_line(ax, c, values: Sequence[float], styles: Styles):
    """A scripted policy (a simulation, not trained) is no curve over training steps: one dotted
    line at the mean over its episodes, across the panel."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return None
    return ax.axhline(sum(vals) / len(vals), color=styles.color(c), ls=":", lw=1.8)


@_styled
def plot_curves(
    rows: Sequence[dict],
    value: str,
    ylabel: str,
    title: str,
    path: Path,
    styles: Styles,
    *,
    ylim_zero: bool = True,
    ci: tuple[str, str] = ("ci_low", "ci_high"),
    sharey: bool = True,
    scripted: Iterable[str | None] = (),
    late_fraction: float | None = None,
) -> Path:
    """Curves against training steps, one panel per grid size, conditions overlaid.

    Rows with ``seed`` null carry the mean over seeds and its 95% CI (band, columns ``ci``). A
    condition with a single seed has no band; its line is that seed's curve. A curve of few bins
    has markers (a one-bin run is a point, visible). ``scripted`` conditions (simulations, no
    training axis) are a dotted line at their mean; ``late_fraction`` shades the late window.
    """
    scripted = set(scripted)
    grids = sorted({r["grid_size"] for r in rows}, key=lambda g: (g is None, g))
    n = max(1, len(grids))
    fig, axes = plt.subplots(
        1, n, figsize=(max(8.0, 5.4 * n + 0.4), 4.6), squeeze=False, sharey=sharey
    )
    if not grids:
        _empty(axes[0][0])
    handles: dict[str, object] = {}
    for ax, g in zip(axes[0], grids, strict=False):
        in_grid = [r for r in rows if r["grid_size"] == g]
        late = _late_span(ax, [_num(r["step"]) for r in in_grid if r["condition"] not in scripted],
                          late_fraction)
        if late is not None:
            handles.setdefault("_late", (late, late.get_label()))
        for c in styles.order:
            agg = sorted(
                (r for r in in_grid if r["condition"] == c and r["seed"] is None),
                key=lambda r: r["step"],
            )
            if not agg:
                continue
            col, ls = styles.color(c), styles.linestyle(c)
            xs = [r["step"] for r in agg]
            n_seeds = max(r["n"] for r in agg)
            if c in scripted:
                line = _scripted_line(ax, c, [_num(r[value]) for r in agg], styles)
                if line is not None:
                    handles.setdefault(label(c), (line, f"{label(c)} (scripted: mean, not trained)"))
                continue
            few = len(xs) <= 8
            (line,) = ax.plot(xs, [_num(r[value]) for r in agg], color=col, ls=ls, lw=2,
                              marker=styles.marker(c) if few else None, ms=6)
            lo = [_num(r[ci[0]]) for r in agg]
            hi = [_num(r[ci[1]]) for r in agg]
            if any(not math.isnan(v) for v in lo):
                ax.fill_between(xs, lo, hi, color=col, alpha=0.15, lw=0)
            key = f"{label(c)} ({n_seeds} seed{'s' if n_seeds != 1 else ''})"
            handles.setdefault(label(c), (line, key))
        ax.set_title(_grid_title(g))
        ax.set_xlabel("training steps (environment steps)")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        if ylim_zero:
            ax.set_ylim(bottom=0)
    for ax in axes[0] if not sharey else axes[0][:1]:
        ax.set_ylabel(ylabel)
    if handles:
        fig.legend(
            [h for h, _ in handles.values()],
            [k for _, k in handles.values()],
            loc="lower center",
            ncol=min(4 if max(len(k) for _, k in handles.values()) < 22 else 2, len(handles)),
            frameon=False,
        )
    wrapped_suptitle(fig, f"{title}\nline: mean over seeds, band: 95% CI", fontsize=11)
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(handles) / 2) if handles else 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _point_panel(ax, entries: list[tuple[str, float, float, float, str, str]], ylabel: str) -> None:
    """entries: (x label, mean, lo, hi, colour, marker) drawn as points with CI whiskers."""
    for i, (_, m, lo, hi, col, mk) in enumerate(entries):
        ax.plot([i], [m], marker=mk, color=col, ms=7, ls="none")
        if not (math.isnan(lo) or math.isnan(hi)):
            ax.errorbar([i], [m], yerr=[[m - lo], [hi - m]], color=col, capsize=4, lw=1.5)
    ax.set_xticks(range(len(entries)))
    _xticklabels(ax, [e[0] for e in entries])
    ax.set_xlim(-0.6, len(entries) - 0.4)
    ax.set_ylabel(ylabel)


@_styled
def plot_scale(
    rows: Sequence[dict],
    path: Path,
    styles: Styles,
    metrics: Sequence[str],
    *,
    min_hits: int = MIN_HITS,
    note: str = "",
) -> Path:
    """Small grid against big grid per condition (scale_comparison.sql rows), one panel per metric.

    The retribution ratio is drawn only where its late window holds at least ``min_hits`` hits
    (the ``late_hits`` rows) and each point is labelled with that count. ``note`` ends the title
    (a study says there how many seeds and steps are behind the points)."""
    ncol = 3 if len(metrics) > 4 else 2
    nrow = math.ceil(len(metrics) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.5 * nrow), squeeze=False)
    small = next((r["small_grid"] for r in rows), 10)
    big = next((r["big_grid"] for r in rows), 30)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        mine = {r["condition"]: r for r in rows if r["metric"] == metric}
        hits = {r["condition"]: r for r in rows if r["metric"] == "late_hits"}
        gated = metric == "retribution_ratio"
        conds = [c for c in styles.order if c in mine]
        if not conds:
            _empty(ax)
            ax.set_title(metric)
            continue
        for j, (side, offset, face) in enumerate((("small", -0.15, "white"), ("big", 0.15, None))):
            for i, c in enumerate(conds):
                r = mine[c]
                m = _num(r[f"{side}_mean"])
                lo, hi = _num(r[f"{side}_ci_low"]), _num(r[f"{side}_ci_high"])
                n_hits = _num(hits[c][f"{side}_mean"]) if c in hits else math.nan
                col = styles.color(c)
                if gated:
                    if not math.isnan(n_hits):
                        y = 0.02 if math.isnan(m) or n_hits < min_hits else m
                        ax.annotate(
                            f"{n_hits:.0f} hits", (i + offset, y), textcoords="offset points",
                            xytext=(0, 6), ha="center", va="bottom", fontsize=7, color=col,
                            rotation=90,
                        )
                    if math.isnan(n_hits) or n_hits < min_hits:
                        continue
                if math.isnan(m):
                    continue
                ax.plot(
                    [i + offset],
                    [m],
                    marker="o" if j == 0 else "s",
                    ms=7,
                    color=col,
                    mfc=face or col,
                    ls="none",
                )
                if not (math.isnan(lo) or math.isnan(hi)):
                    ax.errorbar([i + offset], [m], yerr=[[m - lo], [hi - m]], color=col, capsize=3)
        ax.set_xticks(range(len(conds)))
        _xticklabels(ax, [label(c) for c in conds])
        ax.set_xlim(-0.6, len(conds) - 0.4)
        name = METRIC_LABELS.get(metric, metric)
        if gated:
            name += f"\n(drawn where a seed has >= {min_hits} late hits on average)"
            ax.set_ylim(-0.05, 1.05)
        ax.set_title(name, fontsize=9 if gated else 10)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    handles = [
        plt.Line2D(
            [], [], marker="o", mfc="white", color="#333333", ls="none", label=f"{small}x{small}"
        ),
        plt.Line2D([], [], marker="s", color="#333333", ls="none", label=f"{big}x{big}"),
    ]
    fig.legend(handles=handles, loc="lower center", frameon=False, ncol=2)
    missing = [
        f"no {g}x{g} runs in this lake"
        for side, g in (("small", small), ("big", big))
        if not any(r[f"{side}_mean"] is not None for r in rows)
    ]
    wrapped_suptitle(
        fig,
        f"Scale comparison, late training: {small}x{small} vs {big}x{big} grid\n"
        "mean over seeds, whiskers: 95% CI" + "".join(f"; {m}" for m in missing) + (f"\n{note}" if note else ""),
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


@_styled
def plot_outcomes(rows: Sequence[dict], path: Path, styles: Styles) -> Path:
    """Social outcomes U, E, S, P late in training (ablation.sql rows), per condition and grid.

    Where several grid sizes share the S panel, S is drawn as a share of the episode length
    (``sustainability_share``): their episodes differ in length (500 steps at 10x10, 1000 at 30x30).
    """
    metrics = ("efficiency", "equality", "sustainability", "peace")
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=True):
        mine = [r for r in rows if r["metric"] == metric]
        grids = sorted({r["grid_size"] for r in mine}, key=lambda g: (g is None, g))
        unit = UNITS[metric]
        if metric == "sustainability" and len(grids) > 1:
            share = [r for r in rows if r["metric"] == "sustainability_share"]
            if share:
                mine, unit = share, "mean step of eating / episode length"
        entries = []
        for g in grids:
            for c in styles.order:
                r = next((r for r in mine if r["grid_size"] == g and r["condition"] == c), None)
                if r is None:
                    continue
                name = label(c)
                entries.append(
                    (
                        name,
                        _num(r["mean"]),
                        _num(r["ci_low"]),
                        _num(r["ci_high"]),
                        styles.color(c),
                        styles.marker(c),
                    )
                )
        if entries:
            _point_panel(ax, entries, unit)
            if len(grids) > 1:  # one group of conditions per grid size, separated and labelled
                start = 0
                for g in grids:
                    k = sum(
                        1 for r in mine if r["grid_size"] == g and r["condition"] in styles.order
                    )
                    if start:
                        ax.axvline(start - 0.5, color="#888888", lw=0.8)
                    ax.text(
                        start + (k - 1) / 2,
                        1.0,
                        _grid_title(g),
                        transform=ax.get_xaxis_transform(),
                        ha="center",
                        va="bottom",
                        fontsize=9,
                        color="#333333",
                    )
                    start += k
                ax.tick_params(axis="x", labelsize=8)
        else:
            _empty(ax)
        ax.set_title(f"{metric.capitalize()} ({SYMBOLS[metric]})", pad=16 if len(grids) > 1 else 6)
    wrapped_suptitle(
        fig,
        "Social outcomes late in training (Perolat et al. 2017)\n"
        "mean over seeds, whiskers: 95% CI (none when n = 1 seed)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path


@_styled
def plot_ratio_curves(
    rows: Sequence[dict], path: Path, styles: Styles, *, title: str = "Retribution ratio",
    scripted: Iterable[str | None] = (), late_fraction: float | None = None,
) -> Path:
    """A pooled ratio against training steps (retribution_curve.sql rows), one column per grid size.

    Top: the mean over seeds with its 95% CI, drawn only at bins where at least one seed has
    ``min_hits`` hits (a gap elsewhere). Bottom: the hits behind each bin (summed over seeds), the
    threshold as a dashed line, so a reader sees how much evidence each point carries.
    ``scripted`` conditions are a dotted line at their mean ratio; ``late_fraction`` shades the
    late window.
    """
    scripted = set(scripted)
    grids = sorted({r["grid_size"] for r in rows}, key=lambda g: (g is None, g))
    n = max(1, len(grids))
    min_hits = next((r["min_hits"] for r in rows if r.get("min_hits") is not None), MIN_HITS)
    fig, axes = plt.subplots(
        2, n, figsize=(max(8.0, 5.4 * n + 0.4), 6.4), squeeze=False, sharex="col",
        gridspec_kw={"height_ratios": (2.2, 1)},
    )
    if not grids:
        _empty(axes[0][0])
        _empty(axes[1][0])
    handles: dict[str, object] = {}
    n_cond = max(1, len(styles.order))
    for col, g in enumerate(grids):
        top, bottom = axes[0][col], axes[1][col]
        in_grid = [r for r in rows if r["grid_size"] == g and r["seed"] is None]
        trained = [_num(r["step"]) for r in in_grid if r["condition"] not in scripted]
        for ax in (top, bottom):
            late = _late_span(ax, trained, late_fraction)
        if late is not None:
            handles.setdefault("_late", (late, late.get_label()))
        steps = sorted({_num(r["step"]) for r in in_grid if r["condition"] not in scripted})
        gap = min((b - a for a, b in zip(steps, steps[1:], strict=False)), default=1.0) or 1.0
        width = 0.8 * gap / n_cond
        for i, c in enumerate(styles.order):
            agg = sorted((r for r in in_grid if r["condition"] == c), key=lambda r: r["step"])
            if not agg:
                continue
            colr, ls, mk = styles.color(c), styles.linestyle(c), styles.marker(c)
            xs = [_num(r["step"]) for r in agg]
            ys = [_num(r["retribution_ratio"]) for r in agg]
            if c in scripted:
                line = _scripted_line(top, c, ys, styles)
                if line is not None:
                    handles.setdefault(label(c), (line, f"{label(c)} (scripted: mean, not trained)"))
                continue
            (line,) = top.plot(xs, ys, color=colr, ls=ls, lw=2, marker=mk, ms=4)
            lo = [_num(r["ci_low"]) for r in agg]
            hi = [_num(r["ci_high"]) for r in agg]
            if any(not math.isnan(v) for v in lo):
                top.fill_between(xs, lo, hi, color=colr, alpha=0.15, lw=0)
            hits = [_num(r["hits"]) for r in agg]
            off = (i - (n_cond - 1) / 2) * width
            bottom.bar(
                [x + off for x in xs], hits, width=width,
                color=[matplotlib.colors.to_rgba(colr, 1.0 if r["n"] else 0.3) for r in agg],
            )
            handles.setdefault(label(c), (line, label(c)))
        bottom.axhline(min_hits, color="#333333", ls="--", lw=1)
        bottom.text(
            0.0, min_hits, f" {min_hits} hits", va="bottom", ha="left", fontsize=8,
            color="#333333", transform=bottom.get_yaxis_transform(),
        )
        top.set_title(_grid_title(g))
        top.set_ylim(-0.02, 1.02)
        bottom.set_xlabel("training steps (environment steps)")
        bottom.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    axes[0][0].set_ylabel("retribution hits / all hits")
    axes[1][0].set_ylabel("hits in bin (all seeds)")
    if handles:
        fig.legend(
            [h for h, _ in handles.values()], [k for _, k in handles.values()],
            loc="lower center", frameon=False,
            ncol=min(4 if max(len(k) for _, k in handles.values()) < 22 else 2, len(handles)),
        )
    wrapped_suptitle(
        fig,
        f"{title} over training\nline: mean over seeds of each seed's pooled ratio, band: 95% CI; "
        f"a point only where a seed has >= {min_hits} hits in the bin (faded bars: no such seed)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05 * math.ceil(len(handles) / 2) if handles else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
