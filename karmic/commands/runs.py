"""``karmic runs``: the lake's runs, one line each, with the id the next command needs."""

from __future__ import annotations

import typer

from karmic.commands._common import LAKE_OPTION, KarmicError, lake_path, user_errors

# env steps done: each (run, episode) is one env's episode, its length the max of `steps`
RUNS_SQL = """
with eps as (
    select run_id, episode, max(steps) as len from episodes group by run_id, episode
),
done as (
    select run_id, count(*) as episodes, sum(len)::bigint as steps from eps group by run_id
)
select r.run_id, r.kind,
       case when r.kind = 'train' then r.condition else coalesce(r.policy, r.condition) end as condition,
       case when r.kind = 'train' then r.algo end as algo,
       r.grid_size as grid, r.seed,
       coalesce(d.episodes, 0) as episodes, coalesce(d.steps, 0) as steps,
       r.status, r.started_at
from runs r left join done d using (run_id)
{where}
order by r.started_at nulls last, r.run_id
"""
KINDS = ("simulate", "train")


def register(app: typer.Typer) -> None:
    @app.command("runs")
    def runs_command(
        kind: str = typer.Option(None, "--kind", help="Only runs of this kind: simulate | train.", show_default="all"),
        status: str = typer.Option(None, "--status", help="Only runs with this status: created | running | completed | interrupted | failed.", show_default="all"),
        fmt: str = typer.Option("table", "--format", help="table | csv | json"),
        lake: str = LAKE_OPTION,
    ) -> None:
        """List the lake's runs: id (never cut), kind, condition, learner, grid, seed, episodes,
        env steps done and status (one vocabulary for simulations and training)."""
        from karmic.commands._output import FORMATS, print_rows
        from karmic.lake import _quote, connect, fetch
        from pipelines.schema import RUN_STATUSES

        with user_errors():
            if fmt not in FORMATS:
                raise KarmicError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
            if kind is not None and kind not in KINDS:
                raise KarmicError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
            if status is not None and status not in RUN_STATUSES:
                raise KarmicError(f"--status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
            conds = []
            if kind:
                conds.append(f"r.kind = {_quote(kind)}")
            if status:
                conds.append(f"r.status = {_quote(status)}")
            where = ("where " + " and ".join(conds)) if conds else ""
            cols, rows = fetch(connect(lake_path(lake)), RUNS_SQL.format(where=where))
            print_rows(cols, rows, fmt, title="runs" if fmt == "table" else None)
