"""``karmic study``: a pre-registered study file, run to a verdict (``pipelines.study``).

``karmic study check NAME|PATH``: parse and check the file, print its plan (nothing runs).
``karmic study run NAME|PATH [--backend local|ray] [--workers N] [--lake ...] [--carry]``: every
cell as a sweep task; a second ``run`` resumes (a completed run is never redone). One driver per
study and lake: a second ``run`` while one is alive refuses with one line. ``--carry`` leaves out
the cells completed in ``--results DIR`` (default results/NAME) under the same plan.
``karmic study status NAME [--carry]``: every cell, done / carried / running / missing, its steps,
and an ETA.
``karmic study report NAME [--out results/NAME] [--from-results] [--check-evaluations]``:
verdicts, figures, metrics (completed runs already in OUT that this lake lacks are carried);
``--check-evaluations`` then plays the declared evaluations again from OUT's kept policies in a
scratch lake and compares them with OUT/evaluations.json (exit 1 on a difference).
``karmic study reproduce NAME CELL... [--results DIR] [--scratch LAKE]``: run the cells again from
the plans DIR/runs.json recorded, in a scratch lake, and compare their rows of DIR/metrics.parquet
(exit 1 on a difference).
``karmic study table NAME [--grid G] [--cells [--metrics ...] | --times] [--results DIR] [--into FILE]``:
the verdicts of DIR/verdicts.json (or, ``--cells``, the late-window cells of DIR/cells.json;
``--times``, each trained cell's minutes and env-steps/s from DIR/runs.json) as a
front-page Markdown table, in the study file's order (no lake); ``--into`` fills a page's blocks.
Exit 2 on a bad study file or bad input, 1 when a cell finally failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import os
import sys

import typer

from karmic.commands._common import (
    COMPACT_OPTION,
    LAKE_OPTION,
    KarmicError,
    compact_after,
    fail,
    lake_arg,
    user_errors,
)
from karmic.commands.sweep import DEVICE_OPTION, PER_DEVICE_OPTION

study_app = typer.Typer(help="Pre-registered studies: check, run, status, report, reproduce, table.", no_args_is_help=True)


def _load(name: str):
    from pipelines.study import find_study, parse_study

    return parse_study(find_study(name))


def _lake(lake: str | None) -> str:
    return lake_arg(lake)


def _results(results: str | None, study: str):
    from pathlib import Path

    return Path(results) if results else Path("results") / study


CARRY_OPTION = typer.Option(False, "--carry", help="Leave out the cells completed in RESULTS under the same plan.")
RESULTS_OPTION = typer.Option(None, "--results", help="The results folder --carry reads (default: results/NAME).")


@study_app.command("check")
def check(name: str = typer.Argument(..., help="Study name (studies/NAME.toml) or path.")) -> None:
    """Check a study file and print its plan; nothing runs."""
    with user_errors():
        st = _load(name)
        cells = st.cells()
        trained = [c for c in cells if not c.scripted]
        steps = sum(st.total_steps[c.grid_size] for c in trained)
        print(f"study {st.name}: {len(cells)} cell(s) ({len(trained)} trained, {len(cells) - len(trained)} "
              f"scripted), {steps:,} env steps of training, {len(st.predictions)} prediction(s)")
        for g, why in sorted(st.pending.items()):
            print(f"  grid {g}: ecology pending ({why}); run skips its cells")
        for p in st.predictions:
            print(f"  {p['id']}: {p['metric']} {p['test']} a={p['a']} b={p['b']}")


@study_app.command("run")
def run(
    name: str = typer.Argument(..., help="Study name (studies/NAME.toml) or path."),
    backend: str = typer.Option("local", "--backend", help="local (process pool) | ray."),
    workers: int = typer.Option(None, "--workers", help="Cells at once [default: the cores]."),
    address: str = typer.Option(None, "--address", help="Ray cluster address; none: a local cluster."),
    retries: int = typer.Option(2, "--retries", help="Retries of a failed cell (each resumes from its checkpoint)."),
    lake: str = LAKE_OPTION,
    carry: bool = CARRY_OPTION,
    results: str = RESULTS_OPTION,
    device: str = DEVICE_OPTION,
    workers_per_device: int = PER_DEVICE_OPTION,
    compact: bool = COMPACT_OPTION,
) -> None:
    """Run every cell of a study (resumes: completed runs are never redone)."""
    with user_errors():
        from karmic.commands.sweep import SweepDisplay, sweep_device
        from pipelines import study as stm
        from pipelines import sweep as sw

        if workers is not None and workers < 1:
            raise KarmicError(f"--workers must be >= 1, got {workers}")
        if retries < 0:
            raise KarmicError(f"--retries must be >= 0, got {retries}")
        st = _load(name)
        if not st.runnable_grids:
            why = "; ".join(sorted(set(st.pending.values())))
            raise KarmicError(f"study {st.name} cannot run yet: its ecology is pending ({why})")
        for g, why in sorted(st.pending.items()):
            print(f"study {st.name}: grid {g} skipped, its ecology is pending ({why})", file=sys.stderr)
        lake_s = _lake(lake)
        device = sweep_device(device, backend, workers_per_device)
        be = sw.make_backend(backend, workers=workers, address=address)
        with stm.StudyLock(lake_s, st.name):
            manifest = stm.sync_manifest(st, lake_s)
            manifest.setdefault("invocations", []).append(
                {"backend": backend, "workers": workers, "address": address, "retries": retries,
                 "device": device, "workers_per_device": workers_per_device,
                 "carry": str(_results(results, st.name)) if carry else None,
                 "pid": os.getpid(), "at": sw.now_iso()})
            n_carried = 0
            if carry:
                found = stm.carried_runs(st, _results(results, st.name))
                n_carried = len(stm.mark_carried(manifest, found, lake_s))
                print(found.describe(st.name, in_lake=len(found.runs) - n_carried), file=sys.stderr)
            todo = sw.unfinished(manifest, lake_s)
            print(f"study {st.name}: {len(manifest['tasks'])} cell(s), {len(todo)} to run"
                  f"{f', {n_carried} carried' if n_carried else ''}, lake {lake_s}, backend {backend}",
                  file=sys.stderr)
            display = SweepDisplay(f"study {st.name}", len(todo))
            try:
                with display:
                    manifest = sw.run_sweep(manifest, lake_s, be, retries=retries, on_event=display.on_event,
                                            fail=sw.parse_fail_spec(os.environ.get(sw.FAIL_ENV)),
                                            device=device, per_device=workers_per_device)
            except KeyboardInterrupt:
                again = f" --carry --results {_results(results, st.name)}" if carry else ""
                print(f"interrupted; continue with: karmic study run {name} --lake {lake_s}{again}", file=sys.stderr)
                raise typer.Exit(130) from None
        failed = [e for e in manifest["tasks"] if e["status"] not in sw.TASK_DONE]
        if failed:
            fail(f"{len(failed)} of {len(manifest['tasks'])} cell(s) failed: "
                 f"{', '.join(e['key'] for e in failed)} (run again to retry)", code=1)
        if compact:
            compact_after(lake_s, f"study {st.name}")
        out = f" --out {_results(results, st.name)}" if carry and results else ""
        print(f"study {st.name}: all {len(manifest['tasks'])} cell(s) completed"
              f"{f' ({n_carried} carried)' if n_carried else ''}; "
              f"report with: karmic study report {name} --lake {lake_s}{out}")


@study_app.command("status")
def status(
    name: str = typer.Argument(..., help="Study name or path."),
    lake: str = LAKE_OPTION,
    fmt: str = typer.Option("table", "--format", help="table | csv | json."),
    carry: bool = typer.Option(False, "--carry", help="Also show as carried the cells RESULTS can carry."),
    results: str = RESULTS_OPTION,
) -> None:
    """Every cell: done / carried / running / missing, steps so far, and an ETA for the rest."""
    with user_errors():
        from karmic.commands._output import FORMATS, print_rows
        from pipelines.study_status import study_status

        if fmt not in FORMATS:
            raise KarmicError(f"unknown --format {fmt!r}; choose {', '.join(FORMATS)}")
        st = _load(name)
        lake_s = _lake(lake)
        if "://" not in lake_s and not os.path.isdir(lake_s):
            raise KarmicError(f"lake not found: {lake_s}")
        from pipelines.study import carried_runs

        found = carried_runs(st, _results(results, st.name)) if carry else None
        cols, rows, summary = study_status(st, lake_s, carry=found)
        if found is not None:
            in_lake = sum(1 for r in rows if r[4] == "done" and f"{r[0]}-{r[1]}-g{r[2]}-s{r[3]}" in found.runs)
            print(found.describe(st.name, in_lake=in_lake), file=sys.stderr)
        print_rows(cols, rows, title=f"study {st.name}", fmt=fmt)
        print(summary, file=sys.stderr)


@study_app.command("report")
def report(
    name: str = typer.Argument(..., help="Study name or path."),
    lake: str = LAKE_OPTION,
    out: str = typer.Option(None, "--out", help="Output folder [default: results/NAME]."),
    from_results: bool = typer.Option(False, "--from-results", help="Rebuild from OUT/metrics.parquet alone (no lake)."),
    episodes: bool = typer.Option(True, "--episodes/--no-episodes", help="Embed a late episode per condition (needs the lake)."),
    check_evaluations: bool = typer.Option(
        False, "--check-evaluations",
        help="Then play every evaluation again from OUT/policies in a scratch lake and compare with "
             "OUT/evaluations.json (exit 1 on a difference)."),
) -> None:
    """Verdicts (Holm-corrected), figures and metrics.parquet: a report that travels without the lake."""
    with user_errors():
        from pathlib import Path

        from pipelines.study_report import build_report
        from pipelines.study_report import check_evaluations as check

        st = _load(name)
        out_dir = Path(out) if out else Path("results") / st.name
        res = build_report(st, None if from_results else _lake(lake), out_dir,
                           from_results=from_results, episodes=episodes)
        for line in res["summary"]:
            print(line)
        if res["carried"]:
            print(f"kept {len(res['carried'])} carried run(s) already in {out_dir} (completed under this plan; "
                  "not in this lake)", file=sys.stderr)
        print(f"wrote {out_dir}/report.md, verdicts.json, metrics.parquet", file=sys.stderr)
        if check_evaluations:
            n, problems = check(st, out_dir)
            for line in problems:
                print(f"differs: {line}")
            if problems:
                fail(f"{len(problems)} difference(s) between {out_dir}/evaluations.json and its kept policies "
                     f"played again ({n} rows)", code=1)
            print(f"evaluations: {n} row(s) played again from {out_dir}/policies in a scratch lake, all equal to "
                  f"{out_dir}/evaluations.json")


@study_app.command("reproduce")
def reproduce(
    name: str = typer.Argument(..., help="Study name or path."),
    cells: list[str] = typer.Argument(..., help="Cells to run again: run ids or cell keys (LEVEL-COND-gG-sS, "
                                                "or COND-gG-sS where the study has one level)."),
    results: str = typer.Option(None, "--results", help="The results folder [default: results/NAME]."),
    scratch: str = typer.Option(None, "--scratch", help="Train into this lake and keep it [default: a temporary "
                                                        "lake, removed after]; never the study's lake."),
) -> None:
    """Run committed cells again from the plans runs.json recorded, in a scratch lake, and compare
    their metrics.parquet rows with the committed ones (exit 1 on a difference)."""
    with user_errors():
        from pipelines.study_reproduce import made_with
        from pipelines.study_reproduce import reproduce as run_again

        st = _load(name)
        res = _results(results, st.name)
        done = run_again(st, res, cells, scratch=scratch, say=lambda m: print(m, file=sys.stderr))
        bad = 0
        for r in done:
            how = f"{made_with(r['recorded'], r['now'])}; {r['seconds']:.0f} s"
            if r["problems"]:
                bad += 1
                print(f"{r['cell']}: DIFFERS ({len(r['problems'])} difference(s); {how})")
                for line in r["problems"][:20]:
                    print(f"  {line}")
                old = r["recorded"].get("commit")
                if old and old != r["now"].get("commit"):
                    print(f"  recorded with commit {old}: run reproduce from a checkout of it "
                          f"(git worktree add /tmp/at-{old[:7]} {old.removesuffix('-dirty')}) to use that code")
            else:
                print(f"{r['cell']}: reproduced: {r['episodes']} episodes, every column of metrics.parquet equal "
                      f"({how})")
        if bad:
            fail(f"{bad} of {len(done)} cell(s) differ from {res}/metrics.parquet", code=1)


@study_app.command("table")
def table(
    name: str = typer.Argument(..., help="Study name or path."),
    results: str = typer.Option(None, "--results", help="The results folder to read [default: results/NAME]."),
    grid: int = typer.Option(None, "--grid", help="Only the predictions (or cells) at this grid size."),
    cells: bool = typer.Option(
        False, "--cells", help="What else moved: each cell's late-window mean over seeds (RESULTS/cells.json) "
                               "instead of the verdicts."),
    times: bool = typer.Option(
        False, "--times", help="What each trained cell cost (RESULTS/runs.json): runs timed, minutes a run, "
                               "env-steps per wall second."),
    seeds: bool = typer.Option(
        False, "--seeds", help="Each seed's late-window value of each metric (RESULTS/metrics.parquet): the values "
                               "behind the cells' means."),
    metrics: str = typer.Option(None, "--metrics", help="--cells, --seeds: comma-separated metrics [default: harvest, "
                                                        "predation, zaps, hits per zap, encounters, per encounter, retribution ratio, transported: those the results have]."),
    into: list[str] = typer.Option(
        None, "--into",
        help="Instead of printing, fill this Markdown file's blocks of the study (between "
             "'<!-- karmic study table NAME [--cells | --times | --seeds] [--grid G] [--metrics m,...] -->' and "
             "'<!-- end table -->'), each as its header asks."),
) -> None:
    """The verdicts (or, with --cells, the late-window cells; --seeds, each seed's values; --times,
    what the runs cost) as a front-page Markdown table, from RESULTS; no lake."""
    with user_errors():
        from pathlib import Path

        from pipelines.study_report import TableBlock, fill_table_blocks

        st = _load(name)
        res = _results(results, st.name)
        if not into:
            want = TableBlock(st.name, grid, cells, tuple(metrics.split(",")) if metrics else None, times=times,
                              seeds=seeds)
            print("\n".join(want.render(st, res)))
            return
        for path in map(Path, into):
            if not path.is_file():
                raise KarmicError(f"no such file: {path}")
            text, n = fill_table_blocks(path.read_text(), st.name, lambda block: block.render(st, res))
            if not n:
                raise KarmicError(f"{path} has no '<!-- karmic study table {st.name} ... -->' block")
            path.write_text(text)
            print(f"filled {n} table block(s) of study {st.name} in {path} from {res}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")
