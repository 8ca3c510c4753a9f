"""Figures and the ablation report, every number from the SQL in ``queries/``.

``make_plots(lake, out)`` writes the five PNGs (the ablation's figures); ``make_report(lake, out)`` writes
``out/index.html`` (one self-contained page: plots embedded as base64 PNG, the ablation and scale
tables, the runs' configs and the SQL behind each figure) and its Markdown twin ``out/report.md``
(which links the PNGs next to it).

Data flow: open the lake read-only with ``karmic.lake.connect``; optionally restrict it to some
runs by shadowing the ``events``/``episodes``/``runs`` views with filtered temp views; materialise
``episodes`` (small, read by every query) once as a temp table behind a view of the same name.
Figure 2 wraps the ledger's own query (``ledger_debt.sql``) in ``CURVE_SQL``, which bins it like
``aggression_curve.sql``; the report shows that SQL too. Where grid sizes meet in a figure the
counts are rates per agent-step (episodes are 500 steps at 10x10, 1000 at 30x30), and a
retribution ratio is drawn only from a bin with at least ``min_hits`` hits, with the hits shown
(``retribution_curve.sql``).
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from karmic.definitions import LATE_FRACTION, MIN_HITS, late_label

QUERY_DIR = Path(__file__).resolve().parents[1] / "queries"

# rates, where 10x10 (500-step episodes) and 30x30 (1000-step episodes) meet in one figure
SCALE_METRICS = (
    "predatory_rate",
    "retribution_ratio",
    "efficiency",
    "equality",
    "sustainability_share",
    "peace",
)
# a retribution ratio is drawn only from at least this many hits (`--min-hits`)
DEFAULT_MIN_HITS = MIN_HITS  # karmic.definitions: the one definition

CURVE_SQL = """\
-- {name} binned by global_step per condition, grid size and seed; the seed-null rows are the
-- mean over seeds with a 95% CI (same binning, t table and CI as queries/aggression_curve.sql).
with base as (
{base}
),
params as (
    select coalesce(try_cast(getvariable('n_bins') as bigint), 20) as n_bins
),
tq as (
    select lo, hi, t from t975  -- queries/_t975.sql
),
ep as (
    select run_id, episode, condition, grid_size, seed, global_step from episode_totals
),
widths as (
    select grid_size, greatest(1, ceil((max(global_step) + 1) / params.n_bins))::bigint as width
    from ep, params
    group by grid_size, params.n_bins
),
per_episode as (
    select
        ep.run_id, ep.condition, ep.grid_size, ep.seed,
        ep.global_step // widths.width as bin, widths.width,
        base.{value}::double as value
    from ep
    join widths using (grid_size)
    join base using (run_id, episode)
),
per_run as (
    select run_id, condition, grid_size, seed, bin, any_value(width) as width,
        count(value) as episodes, avg(value) as value
    from per_episode
    group by run_id, condition, grid_size, seed, bin
),
per_seed as (
    select condition, grid_size, seed, bin, any_value(width) as width,
        sum(episodes) as n, avg(value) as value
    from per_run
    where value is not null
    group by condition, grid_size, seed, bin
),
over_seeds as (
    select condition, grid_size, bin, any_value(width) as width, count(*) as n,
        avg(value) as value, stddev_samp(value) as sd
    from per_seed
    group by condition, grid_size, bin
)
select
    condition, grid_size, seed, bin, (bin + 0.5) * width as step, n, value,
    null::double as sd, null::double as ci_low, null::double as ci_high
from per_seed
union all
select
    o.condition, o.grid_size, null, o.bin, (o.bin + 0.5) * o.width, o.n, o.value,
    o.sd, o.value - tq.t * o.sd / sqrt(o.n), o.value + tq.t * o.sd / sqrt(o.n)
from over_seeds as o
left join tq on o.n - 1 >= tq.lo and o.n - 1 < tq.hi
order by grid_size, condition, seed nulls first, bin
"""

# candidate value columns of the ledger engineer's per-episode queries, first found wins
LEDGER_VALUE_COLUMNS = {
    "ledger_debt": ("total_debt", "debt", "ledger_debt"),
    "retribution_ratio": ("retribution_ratio", "ratio"),
}


class ReportError(ValueError):
    """Bad input for plot/report (missing or empty lake, unknown run): one line for the user."""


def load_query(name: str) -> str:
    from karmic.lake import queries_dir

    path = queries_dir() / f"{name}.sql"
    if not path.is_file():
        raise ReportError(f"query {name!r} not found in {path.parent}")
    return path.read_text().strip().rstrip(";")


def describe_query(sql: str) -> str:
    first = sql.lstrip().splitlines()[0] if sql.strip() else ""
    return first.removeprefix("--").strip()


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    sql: dict[str, str]  # label -> SQL text that produced the numbers
    path: Path | None = None
    note: str | None = None


@dataclass
class ReportData:
    lake: Path
    figures: list[Figure] = field(default_factory=list)
    ablation: list[dict] = field(default_factory=list)
    scale: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _rows(con, sql: str) -> list[dict]:
    rel = con.sql(sql)
    cols = rel.columns
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def _connect(lake: Path):
    try:
        from karmic.lake import connect
    except ImportError:  # the lake module not there yet: the same three views, read-only
        import duckdb

        con = duckdb.connect()
        for view in ("events", "episodes"):
            con.execute(
                f"create view {view} as select * from read_parquet('{lake}/{view}/*/*.parquet', "
                "hive_partitioning = true, union_by_name = true)"
            )
        con.execute(f"create view runs as select * from read_json_auto('{lake}/runs/*/run.json')")
        return con
    return connect(lake)


def open_lake(lake: Path, runs: Sequence[str] | None = None, *, materialize: bool = True):
    """Connect read-only to the lake, check it has episodes, restrict to ``runs`` if given."""
    from pipelines.storage import resolve

    lake = resolve(lake)  # a directory or an s3:// prefix
    if not lake.is_dir():
        raise ReportError(f"lake not found: {lake}")
    if not any((lake / "episodes").glob("*/*.parquet")):
        raise ReportError(
            f"lake {lake} has no episodes yet; run `karmic simulate` or `karmic train`"
        )
    con = _connect(lake)
    db = con.sql("select current_database()").fetchall()[0][0]
    where = ""
    if runs:
        known = {r[0] for r in con.sql("select distinct run_id from episodes").fetchall()}
        missing = [r for r in runs if r not in known]
        if missing:
            raise ReportError(f"run not found in {lake}: {missing[0]}")
        where = "run_id in (" + ", ".join("'" + r.replace("'", "''") + "'" for r in runs) + ")"
    # the queries read episodes many times: materialise it once as a temp table; temp views of
    # the same names shadow the lake's views. Events stay in Parquet: DuckDB's filtered scan of
    # them is faster than copying the hit and apple rows into memory first (measured).
    for view, cond in (("runs", None), ("episodes", "true"), ("events", None)):
        clauses = [c for c in (where, cond if materialize else None) if c]
        if not clauses:
            continue
        src = f"select * from {db}.main.{view} where " + " and ".join(clauses)
        if materialize and cond is not None:
            con.execute(f"create temp table {view}_m as {src}")
            src = f"select * from temp.main.{view}_m"
        con.execute(f"create temp view {view} as {src}")
    if materialize:
        # five figures and the tables read the ledger classification: walk the hits once
        con.execute("create temp table ledger_hits_m as select * from ledger_hits")
        con.execute("create temp view ledger_hits as select * from temp.main.ledger_hits_m")
    return con


def _check_params(late_fraction: float, n_bins: int, min_hits: int = DEFAULT_MIN_HITS) -> None:
    if not 0 < late_fraction <= 1:
        raise ReportError(f"--late-fraction must be in (0, 1], got {late_fraction}")
    if n_bins < 1:
        raise ReportError(f"--bins must be >= 1, got {n_bins}")
    if min_hits < 1:
        raise ReportError(f"--min-hits must be >= 1, got {min_hits}")


def _set_params(con, late_fraction: float, n_bins: int, min_hits: int = DEFAULT_MIN_HITS) -> None:
    _check_params(late_fraction, n_bins, min_hits)
    con.execute(f"set variable late_fraction = {float(late_fraction)!r}")
    con.execute(f"set variable n_bins = {int(n_bins)}")
    con.execute(f"set variable min_hits = {int(min_hits)}")
    con.execute("set variable \"by\" = 'episode'")  # retribution_ratio.sql: one row per episode


def _ledger_curve_sql(con, name: str) -> tuple[str | None, str | None]:
    """CURVE_SQL around queries/<name>.sql, or (None, why not) if that query is not usable."""
    from karmic.lake import queries_dir

    path = queries_dir() / f"{name}.sql"
    if not path.is_file():
        return None, f"queries/{name}.sql does not exist yet"
    base = load_query(name)
    cols = con.sql(base).columns
    value = next((c for c in LEDGER_VALUE_COLUMNS[name] if c in cols), None)
    if value is None or "run_id" not in cols or "episode" not in cols:
        return None, f"queries/{name}.sql has no (run_id, episode, value) columns: {cols}"
    indented = "\n".join("    " + line if line else line for line in base.splitlines())
    if name == "ledger_debt":
        # one row per (debtor, creditor) with debt > 0: sum per episode; no row = no debt
        indented = (
            "    select e.run_id, e.episode, coalesce(sum(d.debt), 0) as total_debt\n"
            "    from (select distinct run_id, episode from episodes) as e\n"
            f"    left join (\n{indented}\n    ) as d using (run_id, episode)\n"
            "    group by e.run_id, e.episode"
        )
        value = "total_debt"
    return CURVE_SQL.format(name=name, base=indented, value=value), None


def collect(
    lake: Path,
    out: Path,
    *,
    runs: Sequence[str] | None = None,
    late_fraction: float = LATE_FRACTION,
    n_bins: int = 20,
    materialize: bool = True,
    min_hits: int = DEFAULT_MIN_HITS,
) -> ReportData:
    """Run the queries, draw the five figures into ``out`` and return everything the report shows."""
    from karmic import plots

    t0 = time.perf_counter()
    _check_params(late_fraction, n_bins, min_hits)
    con = open_lake(lake, runs, materialize=materialize)
    _set_params(con, late_fraction, n_bins, min_hits)
    data = ReportData(lake=lake)
    data.params = {"late_fraction": late_fraction, "n_bins": n_bins, "runs": list(runs or []),
                   "min_hits": min_hits}
    data.timings["load"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)

    def timed(key: str, sql: str) -> list[dict]:
        t = time.perf_counter()
        rows = _rows(con, sql)
        data.timings[key] = time.perf_counter() - t
        return rows

    data.runs = timed("runs", "select * from runs order by run_id")
    data.counts = dict(
        zip(
            ("runs", "episodes", "agent_episodes"),
            con.sql(
                "select count(distinct run_id), count(distinct (run_id, episode)), count(*) "
                "from episodes"
            ).fetchall()[0],
            strict=True,
        )
    )
    conditions = {r[0] for r in con.sql("select distinct condition from episodes").fetchall()}
    styles = plots.Styles(conditions)
    # scripted simulations have no training axis: the curves draw them as a line at their mean
    scripted = {r[0] for r in con.sql(
        "select distinct e.condition from episodes e join runs r using (run_id) "
        "where r.kind is distinct from 'train' and e.condition not in "
        "(select e2.condition from episodes e2 join runs r2 using (run_id) where r2.kind = 'train')"
    ).fetchall()}
    curve_kw = {"scripted": scripted, "late_fraction": late_fraction}

    # (1) aggression curves
    sql = load_query("aggression_curve")
    rows = timed("aggression_curve", sql)
    fig = Figure(
        "aggression",
        "Aggression: predatory zaps per 1,000 agent-steps",
        "Predatory zaps (ZAP_HIT classified as predation by the ledger rule) per 1,000 agent-steps "
        "(column predatory_rate) against training steps, mean over seeds with a 95% CI band, per "
        "grid size: a rate, because episodes are 500 steps at 10x10 and 1000 at 30x30 (the SQL "
        "also returns predatory_zaps per episode).",
        {"queries/aggression_curve.sql": sql},
    )
    fig.path = plots.plot_curves(
        rows,
        "predatory_rate",
        "predatory zaps per 1,000 agent-steps",
        "Aggression over training",
        out / "aggression_curve.png",
        styles,
        ci=("rate_ci_low", "rate_ci_high"),
        **curve_kw,
    )
    data.figures.append(fig)

    # (2) debt dynamics, from the ledger's query; (3) retribution ratio, pooled per bin
    for name, key, title, ylabel in (
        (
            "ledger_debt",
            "debt",
            "Debt dynamics: total ledger debt",
            "total ledger debt (zap units)",
        ),
    ):
        curve_sql, why = _ledger_curve_sql(con, name)
        fig = Figure(
            key,
            title,
            f"{ylabel} at each episode against training steps (episodes binned, mean over seeds, "
            "95% CI band). Debt is a stock, not a count per step: each grid size has its own "
            "y-axis, since longer episodes (1000 steps at 30x30, 500 at 10x10) carry more hits.",
            {f"queries/{name}.sql wrapped by pipelines/report.py CURVE_SQL": curve_sql or ""},
            note=why,
        )
        if curve_sql is not None:
            rows = timed(name, curve_sql)
            fig.path = plots.plot_curves(
                rows, "value", ylabel, title + " over training", out / f"{name}.png", styles,
                sharey=False, **curve_kw,
            )
        data.figures.append(fig)

    sql = load_query("retribution_curve")
    rows = timed("retribution_curve", sql)
    fig = Figure(
        "retribution",
        "Retribution ratio",
        f"Retribution hits / all hits, pooled over each bin's episodes per seed, against training "
        f"steps (mean over seeds, 95% CI band); a point only where a seed has at least "
        f"{min_hits} hits in the bin (min_hits), the hits per bin (all seeds) below it, faded where "
        f"no seed reaches {min_hits}.",
        {"queries/retribution_curve.sql": sql},
    )
    fig.path = plots.plot_ratio_curves(rows, out / "retribution_ratio.png", styles, **curve_kw)
    data.figures.append(fig)

    # (4) scale comparison and (5) social outcomes, late in training
    scale_sql = load_query("scale_comparison")
    data.scale = timed("scale_comparison", scale_sql)
    fig = Figure(
        "scale",
        "Scale comparison: 10x10 against 30x30",
        f"Late-training value ({late_label(late_fraction)}) of each metric per "
        "condition at both grid sizes, mean over seeds with 95% CI. Counts are rates (predatory "
        "zaps per 1,000 agent-steps, mean step of eating / episode length), since episodes are "
        f"500 steps at 10x10 and 1000 at 30x30; the retribution ratio is drawn only with at least "
        f"{min_hits} late hits (labelled with the count).",
        {"queries/scale_comparison.sql": scale_sql},
    )
    fig.path = plots.plot_scale(
        data.scale, out / "scale_comparison.png", styles, SCALE_METRICS, min_hits=min_hits
    )
    data.figures.append(fig)

    ablation_sql = load_query("ablation")
    data.ablation = timed("ablation", ablation_sql)
    fig = Figure(
        "outcomes",
        "Social outcomes U, E, S, P",
        "Efficiency (reward per step), equality, sustainability (as a share of the episode "
        "length where grid sizes meet) and peace (Perolat et al. 2017) late in training "
        f"({late_label(late_fraction)}), mean over seeds with 95% CI.",
        {"queries/ablation.sql": ablation_sql},
    )
    fig.path = plots.plot_outcomes(data.ablation, out / "social_outcomes.png", styles)
    data.figures.append(fig)
    data.timings["total"] = time.perf_counter() - t0
    con.close()
    return data


def make_plots(lake: Path, out: Path, **kw) -> list[Path]:
    data = collect(lake, out, **kw)
    return [f.path for f in data.figures if f.path is not None]


# ----------------------------------------------------------------------------- rendering


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) < 1e-12:  # float noise of a sum that is 0 (-5.55e-17)
        return "0"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def _ci(lo, hi) -> str:
    return "–" if lo is None or hi is None else f"[{_fmt(lo)}, {_fmt(hi)}]"


ABLATION_HEADER = (
    "grid",
    "metric",
    "condition",
    "n seeds",
    "mean",
    "sd",
    "95% CI",
    "diff vs baseline",
    "diff 95% CI",
)
SCALE_HEADER = (
    "metric",
    "condition",
    "small n",
    "small mean [95% CI]",
    "big n",
    "big mean [95% CI]",
    "big - small",
    "diff 95% CI",
)


def ablation_cells(rows: Sequence[dict]) -> list[tuple[str, ...]]:
    return [
        (
            _fmt(r["grid_size"]),
            r["metric"],
            str(r["condition"]),
            _fmt(r["n_seeds"]),
            _fmt(r["mean"]),
            _fmt(r["sd"]),
            _ci(r["ci_low"], r["ci_high"]),
            _fmt(r["diff"]),
            _ci(r["diff_ci_low"], r["diff_ci_high"]),
        )
        for r in rows
    ]


def scale_cells(rows: Sequence[dict]) -> list[tuple[str, ...]]:
    return [
        (
            r["metric"],
            str(r["condition"]),
            _fmt(r["small_n"]),
            f"{_fmt(r['small_mean'])} {_ci(r['small_ci_low'], r['small_ci_high'])}",
            _fmt(r["big_n"]),
            f"{_fmt(r['big_mean'])} {_ci(r['big_ci_low'], r['big_ci_high'])}",
            _fmt(r["diff"]),
            _ci(r["diff_ci_low"], r["diff_ci_high"]),
        )
        for r in rows
    ]


def scale_gap(rows: Sequence[dict]) -> str | None:
    """Why there is no scale table (a table of dashes says nothing): a grid size without runs."""
    if not rows:
        return "No rows: the scale comparison needs late-training episodes at both grid sizes."
    small, big = rows[0].get("small_grid", 10), rows[0].get("big_grid", 30)
    missing = [f"{g}x{g}" for side, g in (("small", small), ("big", big))
               if not any(r.get(f"{side}_mean") is not None for r in rows)]
    if not missing:
        return None
    return (f"No {' or '.join(missing)} runs in this lake: the scale comparison needs both "
            f"{small}x{small} and {big}x{big} runs (the figure above shows the grid there is).")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _config_json(r: dict) -> str:
    return json.dumps(r.get("config"), default=str, indent=1, sort_keys=True)


RUN_HEADER = ("run_id", "condition", "grid", "seed", "status")


def _run_cells(runs: Sequence[dict]) -> list[tuple[str, ...]]:
    return [
        tuple(_fmt(r.get(k)) for k in ("run_id", "condition", "grid_size", "seed", "status"))
        for r in runs
    ]


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #eee} pre{background:#f6f6f6;padding:.6em;overflow-x:auto;
font-size:12px} figure{margin:1.5em 0} figcaption{font-size:14px;color:#444}
.note{color:#a33}
"""


def _params_line(data: ReportData) -> str:
    p = data.params
    runs = ", ".join(p.get("runs") or []) or "all"
    return (
        f"Parameters: {late_label(p.get('late_fraction', LATE_FRACTION))}, "
        f"{p.get('n_bins', 20)} bins of global_step per curve (n_bins); a "
        f"retribution ratio from at least {p.get('min_hits', DEFAULT_MIN_HITS)} hits (min_hits); "
        f"runs: {runs}. 95% CIs: t over seeds; differences: Welch."
    )


def render_html(data: ReportData, title: str) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Lake <code>{html.escape(str(data.lake))}</code>: {data.counts.get('runs', 0)} runs, "
        f"{data.counts.get('episodes', 0)} episodes. Every number below comes from the SQL shown "
        "with it (DuckDB over the Parquet lake).</p>",
        f"<p>{html.escape(_params_line(data))}</p>",
    ]
    for i, f in enumerate(data.figures, 1):
        parts.append(f"<figure id='{f.name}'><h2>{i}. {html.escape(f.title)}</h2>")
        if f.path is not None:
            b64 = base64.b64encode(f.path.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(f.title)}' src='data:image/png;base64,{b64}'>")
        if f.note:
            parts.append(f"<p class='note'>Not drawn: {html.escape(f.note)}.</p>")
        parts.append(f"<figcaption>{html.escape(f.caption)}</figcaption>")
        for lab, sql in f.sql.items():
            if sql:
                parts.append(
                    f"<details><summary>SQL: {html.escape(lab)}</summary>"
                    f"<pre>{html.escape(sql)}</pre></details>"
                )
        parts.append("</figure>")
    late = html.escape(late_label(data.params.get("late_fraction", LATE_FRACTION)))
    parts.append(f"<h2>Ablation table (late training)</h2><p>{late}</p>")
    parts.append(_html_table(ABLATION_HEADER, ablation_cells(data.ablation)))
    parts.append("<h2>Scale comparison table</h2>")
    gap = scale_gap(data.scale)
    parts.append(f"<p>{html.escape(gap)}</p>" if gap else _html_table(SCALE_HEADER, scale_cells(data.scale)))
    parts.append("<h2>Runs</h2>")
    parts.append(_html_table(RUN_HEADER, _run_cells(data.runs)))
    for r in data.runs:
        parts.append(
            f"<details><summary>config of {html.escape(str(r.get('run_id')))}</summary>"
            f"<pre>{html.escape(_config_json(r))}</pre></details>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(data: ReportData, title: str) -> str:
    parts = [
        f"# {title}",
        "",
        f"Lake `{data.lake}`: {data.counts.get('runs', 0)} runs, "
        f"{data.counts.get('episodes', 0)} episodes. Every number comes from the SQL shown with it.",
        "",
        _params_line(data),
        "",
    ]
    for i, f in enumerate(data.figures, 1):
        parts += [f"## {i}. {f.title}", ""]
        if f.path is not None:
            parts += [f"![{f.title}]({f.path.name})", ""]
        if f.note:
            parts += [f"Not drawn: {f.note}.", ""]
        parts += [f.caption, ""]
        for lab, sql in f.sql.items():
            if sql:
                parts += [
                    "<details><summary>SQL: " + lab + "</summary>",
                    "",
                    "```sql",
                    sql,
                    "```",
                    "",
                    "</details>",
                    "",
                ]
    parts += [
        "## Ablation table (late training)",
        "",
        late_label(data.params.get("late_fraction", LATE_FRACTION)) + ".",
        "",
        _md_table(ABLATION_HEADER, ablation_cells(data.ablation)),
        "",
    ]
    gap = scale_gap(data.scale)
    parts += ["## Scale comparison table", "", gap or _md_table(SCALE_HEADER, scale_cells(data.scale)), ""]
    parts += ["## Runs", "", _md_table(RUN_HEADER, _run_cells(data.runs)), ""]
    for r in data.runs:
        parts += [
            f"<details><summary>config of {r.get('run_id')}</summary>",
            "",
            "```json",
            _config_json(r),
            "```",
            "",
            "</details>",
            "",
        ]
    return "\n".join(parts)


def make_report(
    lake: Path,
    out: Path,
    *,
    runs: Sequence[str] | None = None,
    late_fraction: float = LATE_FRACTION,
    n_bins: int = 20,
    title: str | None = None,
    min_hits: int = DEFAULT_MIN_HITS,
) -> Path:
    """Write out/index.html (self-contained) and out/report.md; return the HTML path."""
    out = Path(out)
    data = collect(
        lake, out, runs=runs, late_fraction=late_fraction, n_bins=n_bins, min_hits=min_hits
    )
    from pipelines.storage import resolve

    title = title or f"Karmic-RL ablation report: {resolve(lake).resolve().name}"
    index = out / "index.html"
    index.write_text(render_html(data, title))
    (out / "report.md").write_text(render_markdown(data, title))
    return index
