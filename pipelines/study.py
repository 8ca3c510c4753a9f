"""Studies: a pre-registered experiment as a TOML file, planned into cells, run on the sweep engine.

A study file (``studies/<name>.toml``) is data, never code: it is parsed with ``tomllib`` and
checked field by field before anything trains. Its tables:

- ``[study]``: ``name`` (letters, digits, ``_-.``), ``description``, ``registered`` (the date the
  predictions were written down).
- ``[ecology]``: ``preset`` (a ``HarvestConfig`` preset or absent), or ``presets`` (one per
  grid size, ``{"10" = "karmic-small", "30" = "karmic-big"}``), and ``env`` (environment
  overrides shared by every cell). ``pending = "why"`` marks an ecology not frozen yet (a study
  registered before its calibration has finished): ``check`` and ``report`` work, ``run`` refuses.
  ``pending = {"30" = "why"}`` marks only those grid sizes: ``run`` trains the other grids' cells
  and ``presets`` need not name the pending ones.
- ``[factors]``: ``conditions`` (names of the registry, ``karmic conditions``: trained
  conditions, or a scripted reference such as ``random`` / ``greedy``, which is simulated
  instead of trained), ``grid_sizes``, ``seeds`` (at least 2: a CI needs them).
- ``[[levels]]``: named levels of a third factor, each ``env`` and/or ``train`` overrides and an
  optional ``grid_sizes`` it applies to (default: every grid). No levels: one level ``default``.
- ``[budget]``: ``total_steps`` (an int, or a table ``{"10" = ..., "30" = ...}`` per grid size),
  ``train`` (``TrainConfig`` overrides shared by every trained cell) and ``episodes`` (how many
  episodes a scripted policy plays per seed, default 10).
- ``[windows]``: named fractions ``[lo, hi]`` of a run's training steps; ``late`` defaults to
  ``karmic.definitions.LATE_WINDOW`` (the last 20%, as ``karmic report``).
  An episode is in a window when ``lo * M <= global_step < hi * M`` (``<= M`` when ``hi = 1``),
  M the run's last episode's ``global_step``. A scripted policy does not learn: all its
  episodes are in every window.
- ``[decision]`` (optional; a calibration study's pre-registered choice of ecology, evaluated by
  ``queries/study/decision.sql``): ``metric`` and ``condition`` (whose late rate is ranked),
  ``above`` (a reference condition whose late rate the level must beat), ``sustained =
  {window, ratio}`` (late >= ratio x that window) and ``floor = {metric, condition}`` (late
  ``floor.metric`` above that condition's). Per grid size the chosen level is the highest-rate
  level that passes all three, else the highest-rate level, reported as not passing.
- ``[[predictions]]``: ``id``, ``claim`` (words), ``metric`` (one of :data:`METRICS`), ``test``
  (``greater``: a > b; ``less``: a < b; ``equivalent``: |a - b| <= margin; ``not_less``:
  a >= b - margin; ``not_greater``: a <= b + margin), sides ``a`` and ``b`` (``condition``,
  ``grid_size``, ``level``, ``window``; ``b`` takes what it does not name from ``a``), and for
  ``equivalent`` / ``not_less`` / ``not_greater`` a ``margin`` (a fraction of |mean of b|) or
  ``margin_abs``. ``b = { value = 0.9 }`` compares side a with a constant instead (a one-sample
  test over a's seeds). ``source = "evaluation"`` makes a prediction read the study's
  evaluations instead of its training runs: ``metric`` one of :data:`EVAL_METRICS` (the focal
  agents'), sides ``evaluation`` (an ``[[evaluations]]`` id), ``grid_size``, ``level``; each
  seed's eval run is a replicate, and the prediction is in the same Holm family as the others.
- ``[[evaluations]]`` (optional): ``karmic evaluate`` scenarios ``study report`` plays on the
  runs' kept policies, per grid, level and seed: ``id``, ``scenario`` (``solo`` | ``solo-frozen``
  | ``cross-play``), ``focal`` (a trained condition), ``background`` (cross-play: a trained
  condition, the same seed's run, or ``random`` / ``greedy``), ``n_focal``, ``episodes``,
  ``policy`` (``final`` | ``late_start``). Not part of any cell's plan: adding one trains nothing.

The plan is every (condition, grid size, level, seed) cell (levels restricted to their grids),
one sweep task each with the run id ``<study>-<level>-<condition>-g<G>-s<S>``; the sweep
manifest is ``<lake>/sweeps/sweep_id=study-<name>/sweep.json``. A cell's **plan** is what its
task runs: the TrainConfig dict of a trained cell, the ``simulate`` dict of a scripted one.
Verdicts are SQL (``queries/study/``); this module plans and runs.

**Carrying** (lakes that do not outlive a machine; only the committed ``results/<name>/``
does): a run completed in ``results/<name>/runs.json`` (with its rows in metrics.parquet)
whose recorded ``plan`` equals the study's plan for that cell today is *carried*: ``run
--carry`` marks its task ``carried`` instead of training it, and ``report`` keeps its rows when
the lake at hand has not completed the cell. Equal plans, not equal run ids, decide, so a
changed study file never mixes a stale run in.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from karmic import conditions as conditions_registry
from karmic.definitions import LATE_WINDOW
from pipelines.storage import (
    ObjectPath,
    _pid_alive,  # the one liveness probe (a killed writer, a dead driver)
    resolve,
)

NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")


def _trained(c: str) -> bool:
    """A trained condition of the registry (karmic.conditions); scripted ones are simulated."""
    return c in conditions_registry.names(trained=True)
TESTS = ("greater", "less", "equivalent", "not_less", "not_greater")
MARGIN_TESTS = ("equivalent", "not_less", "not_greater")
# Every metric is a rate per agent-step (comparable across grid sizes and episode lengths),
# except the retribution ratio (a share of hits) and total_debt (ledger debt at episode end).
METRICS = {
    "hits_per_agent_step": "ZAP_HIT events / agent-steps",
    "predatory_hits_per_agent_step": "predation hits (ledger rule) / agent-steps",
    "retribution_hits_per_agent_step": "retribution hits (ledger rule) / agent-steps",
    "zaps_fired_per_agent_step": "ZAP_FIRED events / agent-steps",
    "apples_per_agent_step": "APPLE_EATEN events / agent-steps",
    "return_per_agent_step": "sum of returns / agent-steps",
    "frozen_fraction": "agent-steps spent removed / agent-steps",
    "retribution_ratio": "retribution hits / all hits (pooled over the window)",
    "total_debt": "total ledger debt at episode end, mean over the window's episodes",
    "semantic_on_target_share": "share of semantic transport value landing where the agent hit its hitter",
    "predatory_hits_per_zap": "predation hits / ZAP_FIRED events (how selective the shots are)",
    "hits_per_zap": "hits / ZAP_FIRED events (how accurate the shots are)",
    "predatory_hits_per_encounter": "predation hits / encounters (agent-steps with another agent in zap range)",
    "encounters_per_agent_step": "encounters / agent-steps (how often agents meet)",
    "equality": "1 - Gini of the agents' returns, mean over the window's episodes (Perolat et al. 2017)",
    "equality_apples": "1 - Gini of the agents' apples, mean over the window's episodes",
    "sustainability": "mean time step of apple collection, mean over the window's episodes (Perolat et al. 2017)",
    "rigged_hit_back_share": "rigged pairs whose partner hit back within the episode / rigged pairs",
    "transported_per_agent_step": "|value| moved by TVT transports (learned and semantic) from the window's steps / agent-steps",
}
SIDE_KEYS = ("condition", "grid_size", "level", "window", "value")
# A prediction reads the training runs' episodes (``source = "training"``, the default: METRICS,
# per cell and window) or the study's evaluations (``source = "evaluation"``: EVAL_METRICS of the
# focal agents, per evaluation, grid size, level and seed, from evaluations.json). Both kinds
# are one Holm family (queries/study/verdicts.sql).
SOURCES = ("training", "evaluation")
EVAL_METRICS = {
    "apples_per_agent_step": "the focal agents' APPLE_EATEN events / their agent-steps",
    "hits_taken_per_agent_step": "ZAP_HIT events the focal agents took / their agent-steps",
    "hits_given_per_agent_step": "ZAP_HIT events the focal agents landed / their agent-steps",
    "predation_per_encounter": "the focal agents' predation hits (ledger rule) / their encounters",
}
EVAL_SIDE_KEYS = ("evaluation", "grid_size", "level", "value")
DEFAULT_LEVEL = "default"
STUDIES_DIR = "studies"


class StudyError(ValueError):
    """A study file or a study command that cannot go on: one line for the user."""


@dataclass(frozen=True)
class Level:
    name: str
    env: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    grid_sizes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Cell:
    condition: str
    grid_size: int
    level: str
    seed: int

    @property
    def scripted(self) -> bool:
        return self.condition in conditions_registry.names(trained=False)

    @property
    def key(self) -> str:
        """The cell's sweep task key (its run id without the study's name)."""
        return f"{self.level}-{self.condition}-g{self.grid_size}-s{self.seed}"

    def run_id(self, study: str) -> str:
        return f"{study}-{self.key}"


@dataclass
class Study:
    name: str
    path: Path
    text: str
    description: str
    registered: str
    presets: dict[int, str | None]
    env: dict[str, Any]
    conditions: list[str]
    grid_sizes: list[int]
    seeds: list[int]
    levels: list[Level]
    total_steps: dict[int, int]
    train: dict[str, Any]
    episodes: int
    windows: dict[str, tuple[float, float]]
    predictions: list[dict[str, Any]]
    decision: dict[str, Any] | None = None
    pending: dict[int, str] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def runnable_grids(self) -> list[int]:
        """The grid sizes whose ecology is frozen (``run`` trains only their cells)."""
        return [g for g in self.grid_sizes if g not in self.pending]

    def preset(self, grid_size: int) -> str | None:
        return self.presets.get(grid_size)

    @property
    def sweep_id(self) -> str:
        return f"study-{self.name}"

    def level(self, name: str) -> Level:
        return next(lv for lv in self.levels if lv.name == name)

    def cells(self) -> list[Cell]:
        """Every cell, grids outermost (a study's small grid finishes first), then seeds, levels,
        conditions: a study stopped part-way has whole replicates (every level and condition of
        the first seeds), so its comparisons, across conditions or across levels, are paired."""
        out = []
        for g in self.grid_sizes:
            for s in self.seeds:
                for lv in self.levels:
                    if lv.grid_sizes is not None and g not in lv.grid_sizes:
                        continue
                    for c in self.conditions:
                        out.append(Cell(c, g, lv.name, s))
        return out

    def env_overrides(self, cell: Cell) -> dict[str, Any]:
        return {**self.env, **self.level(cell.level).env}

    def train_config(self, cell: Cell) -> dict[str, Any]:
        """The TrainConfig (as a dict) of a trained cell."""
        lv = self.level(cell.level)
        return {**self.train, **lv.train, "mode": cell.condition, "grid_size": cell.grid_size,
                "seed": cell.seed, "total_steps": self.total_steps[cell.grid_size],
                "preset": self.preset(cell.grid_size), "env_overrides": self.env_overrides(cell),
                "run_id": cell.run_id(self.name)}


# --- parsing ------------------------------------------------------------------------------------
def find_study(name_or_path: str, root: Path | None = None) -> Path:
    """``ecology`` -> ``studies/ecology.toml`` (from the working directory, then the checkout,
    then the studies an installed package ships); a path is taken as it is."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path:
        if not p.is_file():
            raise StudyError(f"no study file {p}")
        return p
    if not NAME_RE.fullmatch(name_or_path):
        raise StudyError(f"invalid study name {name_or_path!r}: use letters, digits, '_', '-', '.'")
    import karmic

    bases = [root] if root else [Path.cwd(), Path(__file__).resolve().parent.parent,
                                 Path(karmic.__file__).resolve().parent]
    for base in bases:
        cand = base / STUDIES_DIR / f"{name_or_path}.toml"
        if cand.is_file():
            return cand
    raise StudyError(f"no study {name_or_path!r} (looked for {STUDIES_DIR}/{name_or_path}.toml)")


def _table(d: dict, key: str, where: str, required: bool = False) -> dict:
    v = d.get(key)
    if v is None:
        if required:
            raise StudyError(f"{where}: missing [{key}]")
        return {}
    if not isinstance(v, dict):
        raise StudyError(f"{where}: [{key}] must be a table")
    return v


def _int_list(v: Any, where: str, minimum: int | None = None) -> list[int]:
    if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise StudyError(f"{where} must be a non-empty list of integers")
    if minimum is not None and min(v) < minimum:
        raise StudyError(f"{where}: every value must be >= {minimum}")
    if len(set(v)) != len(v):
        raise StudyError(f"{where} has duplicates")
    return list(v)


def _unknown(d: dict, allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise StudyError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(allowed)})")


def parse_study(path: Path) -> Study:
    """Parse and check a study file; any problem is one StudyError line naming the field."""
    text = path.read_text()
    where = str(path)
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{where}: not valid TOML ({exc})") from None
    _unknown(d, ("study", "ecology", "factors", "levels", "budget", "windows", "decision", "predictions",
                 "evaluations"), where)
    st = _table(d, "study", where, required=True)
    _unknown(st, ("name", "description", "registered"), f"{where} [study]")
    name = st.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise StudyError(f"{where}: [study] name must use letters, digits, '_', '-', '.'")
    eco = _table(d, "ecology", where)
    _unknown(eco, ("preset", "presets", "env", "pending"), f"{where} [ecology]")
    fac = _table(d, "factors", where, required=True)
    _unknown(fac, ("conditions", "grid_sizes", "seeds"), f"{where} [factors]")
    conditions = fac.get("conditions")
    if not isinstance(conditions, list) or not conditions or not all(isinstance(c, str) for c in conditions):
        raise StudyError(f"{where}: [factors] conditions must be a non-empty list of names")
    for c in conditions:
        try:
            conditions_registry.get_condition(c)
        except ValueError as exc:
            raise StudyError(f"{where}: {exc}") from None
    if len(set(conditions)) != len(conditions):
        raise StudyError(f"{where}: [factors] conditions has duplicates")
    for c in conditions:
        cond = conditions_registry.get_condition(c)
        if cond.yoke is not None and cond.yoke not in conditions:
            raise StudyError(f"{where}: [factors] conditions has {c}, which is yoked to {cond.yoke}: add {cond.yoke}"
                             " (each cell replays the transports of its level's and grid's partner of the next seed)")
    grids = _int_list(fac.get("grid_sizes"), f"{where}: [factors] grid_sizes", minimum=5)
    seeds = _int_list(fac.get("seeds"), f"{where}: [factors] seeds", minimum=0)
    yoked = [c for c in conditions if conditions_registry.get_condition(c).yoke is not None]
    if yoked and len(set(seeds)) < 2:
        raise StudyError(f"{where}: {yoked[0]} needs two seeds or more (a yoked cell replays its partner's"
                         " run of the next seed)")
    if len(seeds) < 2:
        raise StudyError(f"{where}: [factors] seeds needs at least 2 seeds (a CI needs them), got {len(seeds)}")

    levels = []
    raw_levels = d.get("levels", [])
    if not isinstance(raw_levels, list):
        raise StudyError(f"{where}: levels must be an array of tables ([[levels]])")
    for i, lv in enumerate(raw_levels):
        lw = f"{where}: levels[{i}]"
        if not isinstance(lv, dict):
            raise StudyError(f"{lw} must be a table")
        _unknown(lv, ("name", "env", "train", "grid_sizes", "description"), lw)
        ln = lv.get("name")
        if not isinstance(ln, str) or not NAME_RE.fullmatch(ln):
            raise StudyError(f"{lw}: name must use letters, digits, '_', '-', '.'")
        lg = lv.get("grid_sizes")
        lgs = None if lg is None else tuple(_int_list(lg, f"{lw} grid_sizes"))
        if lgs is not None and not set(lgs) <= set(grids):
            raise StudyError(f"{lw} ({ln}): grid_sizes {list(lgs)} not all in [factors] grid_sizes")
        for key in ("env", "train"):
            if not isinstance(lv.get(key, {}), dict):
                raise StudyError(f"{lw} ({ln}): {key} must be a table")
        levels.append(Level(ln, dict(lv.get("env", {})), dict(lv.get("train", {})), lgs))
    if not levels:
        levels = [Level(DEFAULT_LEVEL)]
    if len({lv.name for lv in levels}) != len(levels):
        raise StudyError(f"{where}: level names must be unique")

    bud = _table(d, "budget", where, required=any(_trained(c) for c in conditions))
    _unknown(bud, ("total_steps", "train", "episodes"), f"{where} [budget]")
    ts = bud.get("total_steps", 0 if not any(_trained(c) for c in conditions) else None)
    if isinstance(ts, int) and not isinstance(ts, bool):
        total_steps = {g: ts for g in grids}
    elif isinstance(ts, dict):
        try:
            total_steps = {int(k): v for k, v in ts.items()}
        except ValueError:
            raise StudyError(f"{where}: [budget] total_steps keys must be grid sizes") from None
        missing = [g for g in grids if g not in total_steps]
        if missing:
            raise StudyError(f"{where}: [budget] total_steps has no budget for grid size(s) {missing}")
    else:
        raise StudyError(f"{where}: [budget] total_steps must be an integer or a table per grid size")
    if any(not isinstance(v, int) or isinstance(v, bool) or (v < 1 and any(_trained(c) for c in conditions))
           for v in total_steps.values()):
        raise StudyError(f"{where}: [budget] total_steps must be positive integers")
    train = bud.get("train", {})
    if not isinstance(train, dict):
        raise StudyError(f"{where}: [budget] train must be a table")
    episodes = bud.get("episodes", 10)
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise StudyError(f"{where}: [budget] episodes must be a positive integer")

    wins = _table(d, "windows", where)
    windows: dict[str, tuple[float, float]] = {}
    for wn, wv in wins.items():
        ok = (isinstance(wv, list) and len(wv) == 2 and all(isinstance(x, (int, float)) for x in wv)
              and 0 <= wv[0] < wv[1] <= 1)
        if not ok or not NAME_RE.fullmatch(wn):
            raise StudyError(f"{where}: window {wn!r} must be [lo, hi] with 0 <= lo < hi <= 1")
        windows[wn] = (float(wv[0]), float(wv[1]))
    # "late" is karmic.definitions' window unless the study pre-registers its own (then every output
    # names it): the same runs get the same late value from `karmic report` and `study report`
    windows.setdefault("late", LATE_WINDOW)

    pending = _pending(eco.get("pending"), grids, where)
    study = Study(
        name=name, path=path, text=text, description=str(st.get("description", "")),
        registered=str(st.get("registered", "")), presets=_presets(eco, grids, pending, where),
        env=dict(eco.get("env", {})), conditions=list(conditions), grid_sizes=grids, seeds=seeds,
        levels=levels, total_steps=total_steps, train=dict(train), episodes=episodes,
        windows=windows, predictions=[], pending=pending,
    )
    _check_configs(study)
    study.decision = _parse_decision(study, d.get("decision"), where)
    study.evaluations = _parse_evaluations(study, d.get("evaluations", []), where)
    study.predictions = _parse_predictions(study, d.get("predictions", []), where)
    return study


EVAL_POLICIES = ("final", "late_start")  # the kept policies (pipelines.sweep.keep_policies)


def _parse_evaluations(study: Study, raw: Any, where: str) -> list[dict[str, Any]]:
    """``[[evaluations]]``: ``id``, ``scenario`` (solo | solo-frozen | cross-play), ``focal`` (a
    trained condition), ``background`` (cross-play: a trained condition, paired by seed, or a
    scripted policy), ``n_focal`` (1), ``episodes`` (4), ``policy`` (final | late_start). ``study
    report`` plays them (pipelines.study_report.run_evaluations)."""
    from pipelines.evaluate import SCENARIOS, SCRIPTED

    if not isinstance(raw, list):
        raise StudyError(f"{where}: evaluations must be an array of tables ([[evaluations]])")
    trained = [c for c in study.conditions if _trained(c)]
    out, ids = [], set()
    for i, ev in enumerate(raw):
        ew = f"{where}: evaluations[{i}]"
        if not isinstance(ev, dict):
            raise StudyError(f"{ew} must be a table")
        _unknown(ev, ("id", "scenario", "focal", "background", "n_focal", "episodes", "policy", "description"), ew)
        eid = ev.get("id")
        if not isinstance(eid, str) or not NAME_RE.fullmatch(eid) or eid in ids:
            raise StudyError(f"{ew}: id must be a unique name of letters, digits, '_', '-', '.'")
        ids.add(eid)
        sc = ev.get("scenario")
        if sc not in SCENARIOS:
            raise StudyError(f"{ew} ({eid}): scenario must be one of {', '.join(SCENARIOS)}")
        if ev.get("focal") not in trained:
            raise StudyError(f"{ew} ({eid}): focal must be a trained condition of the study ({', '.join(trained)})")
        bg = ev.get("background")
        if sc == "cross-play" and bg not in trained + list(SCRIPTED):
            raise StudyError(f"{ew} ({eid}): cross-play needs background = a trained condition of the study or "
                             f"{' / '.join(SCRIPTED)}")
        if sc != "cross-play" and bg is not None:
            raise StudyError(f"{ew} ({eid}): background is for cross-play only")
        row = {"id": eid, "scenario": sc, "focal": ev["focal"], "background": bg,
               "n_focal": ev.get("n_focal", 1), "episodes": ev.get("episodes", 4), "policy": ev.get("policy", "final")}
        for k in ("n_focal", "episodes"):
            if not isinstance(row[k], int) or isinstance(row[k], bool) or row[k] < 1:
                raise StudyError(f"{ew} ({eid}): {k} must be a positive integer")
        if row["policy"] not in EVAL_POLICIES:
            raise StudyError(f"{ew} ({eid}): policy must be one of {', '.join(EVAL_POLICIES)}")
        out.append(row)
    return out


def _parse_decision(study: Study, raw: Any, where: str) -> dict[str, Any] | None:
    """The ``[decision]`` table as one flat row for ``queries/study/decision.sql``."""
    if raw is None:
        return None
    dw = f"{where} [decision]"
    if not isinstance(raw, dict):
        raise StudyError(f"{dw} must be a table")
    _unknown(raw, ("metric", "condition", "window", "above", "sustained", "floor"), dw)
    sus, flo = raw.get("sustained"), raw.get("floor")
    if not isinstance(sus, dict) or not isinstance(flo, dict):
        raise StudyError(f"{dw} needs sustained = {{ window, ratio }} and floor = {{ metric, condition }}")
    _unknown(sus, ("window", "ratio"), f"{dw} sustained")
    _unknown(flo, ("metric", "condition"), f"{dw} floor")
    row = {"metric": raw.get("metric"), "condition": raw.get("condition"), "window": raw.get("window", "late"),
           "above": raw.get("above"), "sustained_window": sus.get("window"), "sustained_ratio": sus.get("ratio"),
           "floor_metric": flo.get("metric"), "floor_condition": flo.get("condition"), "seeds": len(study.seeds)}
    for k in ("metric", "floor_metric"):
        if row[k] not in METRICS:
            raise StudyError(f"{dw}: unknown metric {row[k]!r} (known: {', '.join(METRICS)})")
    for k in ("condition", "above", "floor_condition"):
        if row[k] not in study.conditions:
            raise StudyError(f"{dw}: condition {row[k]!r} is not in the study's conditions")
    for k in ("window", "sustained_window"):
        if row[k] not in study.windows:
            raise StudyError(f"{dw}: unknown window {row[k]!r} (known: {', '.join(study.windows)})")
    r = row["sustained_ratio"]
    if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 < r <= 10:
        raise StudyError(f"{dw}: sustained ratio must be a positive number")
    row["sustained_ratio"] = float(r)
    return row


def _pending(raw: Any, grids: list[int], where: str) -> dict[int, str]:
    """``pending``: a sentence (every grid is pending) or a table of grid size = sentence."""
    if raw is None:
        return {}
    if isinstance(raw, str) and raw.strip():
        return {g: raw for g in grids}
    if isinstance(raw, dict) and raw:
        try:
            out = {int(k): v for k, v in raw.items()}
        except ValueError:
            raise StudyError(f"{where}: [ecology] pending keys must be grid sizes") from None
        if not set(out) <= set(grids) or not all(isinstance(v, str) and v.strip() for v in out.values()):
            raise StudyError(f"{where}: [ecology] pending must map grid sizes of [factors] to a sentence saying why")
        return out
    raise StudyError(f"{where}: [ecology] pending must be a sentence saying why (or a table of grid size = sentence)")


def _presets(eco: dict, grids: list[int], pending: dict[int, str], where: str) -> dict[int, str | None]:
    if "preset" in eco and "presets" in eco:
        raise StudyError(f"{where}: [ecology] takes preset or presets, not both")
    if "presets" in eco:
        raw = eco["presets"]
        if not isinstance(raw, dict):
            raise StudyError(f"{where}: [ecology] presets must be a table of grid size = preset")
        try:
            out = {int(k): v for k, v in raw.items()}
        except ValueError:
            raise StudyError(f"{where}: [ecology] presets keys must be grid sizes") from None
        missing = [g for g in grids if g not in out and g not in pending]
        if missing:
            raise StudyError(f"{where}: [ecology] presets has no preset for grid size(s) {missing}")
    else:
        out = {g: eco.get("preset") for g in grids}
    for v in out.values():
        if v is not None and not isinstance(v, str):
            raise StudyError(f"{where}: [ecology] a preset must be a name")
    return out


def _check_configs(study: Study) -> None:
    """Every cell's environment and training config is valid (one line naming the level)."""
    import dataclasses

    from karmic.envs.config import make_config
    from karmic.training.learners import ALGOS, config_class, config_from_dict

    # any learner's fields: a level with train = {algo = "drqn"} makes the learner a factor
    names = {f.name for a in ALGOS for f in dataclasses.fields(config_class(a))}
    for key in ("mode", "grid_size", "seed", "run_id", "total_steps", "env_overrides", "tvt_yoke_run"):
        names.discard(key)
    for src, tr in [("[budget] train", study.train)] + [(f"level {lv.name} train", lv.train) for lv in study.levels]:
        bad = sorted(set(tr) - names)
        if bad:
            raise StudyError(f"{study.path}: {src}: unknown training field(s) {', '.join(bad)}"
                             " (grid_size, seed, mode, total_steps come from the study's factors)")
    seen = set()
    for cell in study.cells():
        key = (cell.grid_size, cell.level, cell.scripted)
        if key in seen:
            continue
        seen.add(key)
        try:
            env = make_config(study.preset(cell.grid_size), grid_size=cell.grid_size, **study.env_overrides(cell))
            if not cell.scripted:
                cfg = config_from_dict({**study.train_config(cell), "mode": "baseline"})
                cfg.validate()
                ms, ns = env.episode_length, cfg.num_steps
                if ms % ns and ns % ms:
                    raise ValueError(f"num_steps ({ns}) must divide the episode length ({ms}) or be a multiple of it")
        except (ValueError, TypeError) as exc:
            raise StudyError(f"{study.path}: level {cell.level} at grid {cell.grid_size}: {exc}") from None
    if not study.cells():
        raise StudyError(f"{study.path}: the study has no cells")


def _parse_predictions(study: Study, raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise StudyError(f"{where}: predictions must be an array of tables ([[predictions]])")
    cells = {(c.condition, c.grid_size, c.level) for c in study.cells()}
    out, ids = [], set()
    for i, p in enumerate(raw):
        pw = f"{where}: predictions[{i}]"
        if not isinstance(p, dict):
            raise StudyError(f"{pw} must be a table")
        _unknown(p, ("id", "claim", "source", "metric", "test", "a", "b", "margin", "margin_abs"), pw)
        pid = p.get("id")
        if not isinstance(pid, str) or not NAME_RE.fullmatch(pid) or pid in ids:
            raise StudyError(f"{pw}: id must be a unique name (letters, digits, '_-.')")
        ids.add(pid)
        pw = f"{where}: prediction {pid}"
        source = p.get("source", "training")
        if source not in SOURCES:
            raise StudyError(f"{pw}: unknown source {source!r} (known: {', '.join(SOURCES)})")
        known = METRICS if source == "training" else EVAL_METRICS
        metric = p.get("metric")
        if metric not in known:
            kind = "" if source == "training" else "evaluation "
            raise StudyError(f"{pw}: unknown {kind}metric {metric!r} (known: {', '.join(known)})")
        test = p.get("test")
        if test not in TESTS:
            raise StudyError(f"{pw}: unknown test {test!r} (known: {', '.join(TESTS)})")
        margin, margin_abs = p.get("margin"), p.get("margin_abs")
        if test in MARGIN_TESTS:
            if (margin is None) == (margin_abs is None):
                raise StudyError(f"{pw}: a {test} prediction needs exactly one of margin (fraction of |b|) or margin_abs")
            m = margin if margin is not None else margin_abs
            if not isinstance(m, (int, float)) or isinstance(m, bool) or not m > 0 or not math.isfinite(m):
                raise StudyError(f"{pw}: the margin must be a positive number")
        elif margin is not None or margin_abs is not None:
            raise StudyError(f"{pw}: a {test} prediction takes no margin")
        keys = SIDE_KEYS if source == "training" else EVAL_SIDE_KEYS
        sides = {}
        for s in ("a", "b"):
            sd = p.get(s)
            if not isinstance(sd, dict):
                raise StudyError(f"{pw}: side {s} must be a table of {', '.join(keys)}")
            _unknown(sd, keys, f"{pw} side {s}")
            sides[s] = sd
        if "value" in sides["a"]:
            raise StudyError(f"{pw}: side a must be a cell (a constant goes on side b)")
        a = {"window": "late", **sides["a"]} if source == "training" else dict(sides["a"])
        if len(study.levels) == 1:
            a.setdefault("level", study.levels[0].name)
        if len(study.grid_sizes) == 1:
            a.setdefault("grid_size", study.grid_sizes[0])
        const = sides["b"].get("value")
        if const is not None:
            if set(sides["b"]) != {"value"} or not isinstance(const, (int, float)) or isinstance(const, bool):
                raise StudyError(f"{pw}: side b = {{ value = NUMBER }} takes nothing else")
            b = {"value": float(const)}
        else:
            b = {**a, **sides["b"]}
        check = _check_side if source == "training" else _check_eval_side
        for s, side in (("a", a), ("b", b)):
            if "value" not in side:
                check(study, cells, side, f"{pw}: side {s}")
        if a == b:
            raise StudyError(f"{pw}: sides a and b are the same {'cell and window' if source == 'training' else 'evaluation'}")
        row = {"id": pid, "claim": str(p.get("claim", "")), "metric": metric, "test": test,
               "margin": margin, "margin_abs": margin_abs, "a": a, "b": b}
        if source != "training":
            row["source"] = source
        out.append(row)
    return out


def _check_side(study: Study, cells: set[tuple[str, int, str]], side: dict[str, Any], sw: str) -> None:
    """A training side: a cell of the study (condition, grid size, level) and a window of it."""
    for k in ("condition", "grid_size", "level"):
        if k not in side:
            raise StudyError(f"{sw} needs {k}")
    if side["window"] not in study.windows:
        raise StudyError(f"{sw}: unknown window {side['window']!r} (known: {', '.join(study.windows)})")
    if side["condition"] not in study.conditions:
        raise StudyError(f"{sw}: condition {side['condition']!r} is not in the study")
    if side["grid_size"] not in study.grid_sizes:
        raise StudyError(f"{sw}: grid size {side['grid_size']!r} is not in the study")
    if side["level"] not in {lv.name for lv in study.levels}:
        raise StudyError(f"{sw}: unknown level {side['level']!r}")
    if (side["condition"], side["grid_size"], side["level"]) not in cells:
        raise StudyError(f"{sw}: level {side['level']} does not run at grid {side['grid_size']}")


def _check_eval_side(study: Study, cells: set[tuple[str, int, str]], side: dict[str, Any], sw: str) -> None:
    """An evaluation side: an ``[[evaluations]]`` id of the study, played at a grid size and level
    where its focal condition's cells run."""
    for k in ("evaluation", "grid_size", "level"):
        if k not in side:
            raise StudyError(f"{sw} needs {k}")
    ev = next((e for e in study.evaluations if e["id"] == side["evaluation"]), None)
    if ev is None:
        known = ", ".join(e["id"] for e in study.evaluations) or "none declared"
        raise StudyError(f"{sw}: evaluation {side['evaluation']!r} is not an [[evaluations]] id of the study ({known})")
    if side["grid_size"] not in study.grid_sizes:
        raise StudyError(f"{sw}: grid size {side['grid_size']!r} is not in the study")
    if side["level"] not in {lv.name for lv in study.levels}:
        raise StudyError(f"{sw}: unknown level {side['level']!r}")
    if (ev["focal"], side["grid_size"], side["level"]) not in cells:
        raise StudyError(f"{sw}: level {side['level']} does not run at grid {side['grid_size']}")


# --- the lock: one driver per study and lake ------------------------------------------------------
def lock_path(lake: str, study: str):
    return resolve(lake) / "studies" / f"study={study}" / "driver.lock"


class StudyLock:
    """``<lake>/studies/study=<name>/driver.lock``, created exclusively (O_EXCL locally, a
    conditional PUT on object storage). A lock left by a driver that died (same host, pid gone)
    is taken over; a live one makes the second driver refuse."""

    def __init__(self, lake: str, study: str) -> None:
        self.path = lock_path(lake, study)
        self.study = study
        self.held = False

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _create(self, data: bytes) -> None:
        if isinstance(self.path, ObjectPath):
            self.path.put(data, exclusive=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def acquire(self) -> None:
        from pipelines.sweep import now_iso

        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}
        data = json.dumps(me).encode()
        for _ in range(2):
            try:
                self._create(data)
                self.held = True
                return
            except FileExistsError:
                h = self._holder()
                stale = h.get("host") == me["host"] and isinstance(h.get("pid"), int) and not _pid_alive(h["pid"])
                if not stale:
                    raise StudyError(
                        f"study {self.study} is already running on this lake (driver pid {h.get('pid')} on "
                        f"{h.get('host')} since {h.get('since')}); wait for it or stop it") from None
                self.path.unlink(missing_ok=True)
        raise StudyError(f"could not take the study lock {self.path}")

    def release(self) -> None:
        if self.held:
            if self._holder().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(lake: str, study: str) -> dict[str, Any] | None:
    """Who holds the study's lock (and is alive, as far as this host can tell), or None."""
    lk = StudyLock(lake, study)
    if not lk.path.is_file():
        return None
    h = lk._holder()
    if h.get("host") == socket.gethostname() and isinstance(h.get("pid"), int) and not _pid_alive(h["pid"]):
        return None
    return h


# --- plan -> sweep manifest -----------------------------------------------------------------------
def cell_plan(study: Study, cell: Cell) -> dict[str, Any]:
    """What the cell's task runs: its TrainConfig dict (trained) or ``simulate`` dict (scripted)."""
    if cell.scripted:
        return {"policy": conditions_registry.get_condition(cell.condition).policy, "episodes": study.episodes,
                "preset": study.preset(cell.grid_size), "env_overrides": study.env_overrides(cell)}
    return study.train_config(cell)


def manifest_for(study: Study) -> dict[str, Any]:
    """The sweep manifest of the study: one task per cell (the sweep engine runs and resumes it)."""
    from pipelines.sweep import MANIFEST_VERSION, now_iso, yoke_seed

    tasks = []
    for cell in study.cells():
        if cell.grid_size in study.pending:
            continue
        entry: dict[str, Any] = {
            "key": cell.key,
            "run_id": cell.run_id(study.name), "mode": cell.condition, "grid_size": cell.grid_size,
            "seed": cell.seed, "level": cell.level, "status": "pending", "attempts": 0,
        }
        entry["simulate" if cell.scripted else "config"] = cell_plan(study, cell)
        partner = conditions_registry.get_condition(cell.condition).yoke
        if partner is not None:  # the sweep starts it once the partner's run has finished
            seed = yoke_seed(cell.seed, study.seeds, cell.condition)
            entry["yoke"] = Cell(partner, cell.grid_size, cell.level, seed).key
        tasks.append(entry)
    # every trained run keeps its policy at the late window's start and its final one
    # (pipelines.sweep.keep_policies); `study report` copies them to results/<study>/policies/
    return {"manifest_version": MANIFEST_VERSION, "sweep_id": study.sweep_id, "study": study.name,
            "status": "pending", "created_at": now_iso(), "train": {}, "tasks": tasks,
            "keep_policies": {"late_start": study.windows["late"][0]}}


def sync_manifest(study: Study, lake: str) -> dict[str, Any]:
    """The stored manifest with the study file's plan: tasks of cells no longer in the study are
    dropped from the plan (their runs stay in the lake), new cells are added, and a cell whose
    config changed gets its new config (its run id stays, so a completed run is never redone).
    A completed task keeps, as ``plan``, the config it ran with, so the report records what the
    run was, not what the study file says now. ``carried`` is decided per ``run``: it is not kept."""
    from pipelines.sweep import CARRIED, is_done, read_manifest

    fresh = manifest_for(study)
    try:
        old = read_manifest(lake, study.sweep_id)
    except ValueError:
        return fresh
    by_key = {e["key"]: e for e in old.get("tasks", [])}
    for e in fresh["tasks"]:
        prev = by_key.get(e["key"])
        if prev is not None:
            for k in ("status", "attempts", "host", "how", "seconds", "seconds_all", "attempts_timed",
                      "global_step", "errors", "started_at", "finished_at"):
                if k in prev:
                    e[k] = prev[k]
            if e["status"] == CARRIED:
                e["status"] = "pending"
            if prev.get("run_id"):
                e["run_id"] = prev["run_id"]
                if "config" in e:
                    e["config"]["run_id"] = prev["run_id"]
            if is_done(lake, e["run_id"]):
                e["plan"] = task_plan(prev)
    fresh["created_at"] = old.get("created_at", fresh["created_at"])
    return fresh


def task_plan(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The plan a manifest task ran with (``plan``) or will run (``config`` / ``simulate``)."""
    for k in ("plan", "config", "simulate"):
        if entry.get(k) is not None:
            return entry[k]
    return None


def cells_table(study: Study, manifest: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per planned cell: run_id, condition, grid_size, level, seed, scripted."""
    run_ids = {e["key"]: e["run_id"] for e in (manifest or {}).get("tasks", [])}
    rows = []
    for c in study.cells():
        rows.append({"run_id": run_ids.get(c.key, c.run_id(study.name)), "condition": c.condition,
                     "grid_size": c.grid_size, "level": c.level, "seed": c.seed, "scripted": c.scripted})
    return rows


def row_key(row: dict[str, Any]) -> str:
    """The cell key of a cells_table / runs.json row."""
    return f"{row['level']}-{row['condition']}-g{row['grid_size']}-s{row['seed']}"


# --- carrying completed cells across lakes -----------------------------------------------------------
def _canonical(plan: Any) -> str:
    # JSON text: a plan read back from runs.json compares equal to the one the study builds
    return json.dumps(plan, sort_keys=True, separators=(",", ":"))


@dataclass
class Carry:
    """The runs a results folder can carry into this study: ``runs`` by cell key (their runs.json
    entries); ``stale``, the completed runs there whose plan is not the study's any more;
    ``unplanned``, those whose entry records no plan."""

    source: Path
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)
    note: str = ""

    def describe(self, study: str, in_lake: int = 0) -> str:
        """One line; ``in_lake``: how many of ``runs`` the lake at hand has completed itself."""
        if self.note:
            return f"study {study}: nothing carried from {self.source} ({self.note})"
        why = []
        if self.stale:
            why.append(f"{len(self.stale)} completed there under another plan")
        if self.unplanned:
            why.append(f"{len(self.unplanned)} completed there with no plan in runs.json (report them again"
                       " from a lake that has them)")
        if in_lake:
            why.append(f"{in_lake} completed in this lake too")
        rest = f"; not carried: {', '.join(why)}" if why else ""
        return (f"study {study}: {len(self.runs) - in_lake} cell(s) carried from {self.source} "
                f"(completed there under this study's plan){rest}")


def carried_runs(study: Study, results_dir: Path) -> Carry:
    """The completed runs of ``results_dir`` (``runs.json`` + ``metrics.parquet``) that the study
    can carry: the cell is in the study, the run's status is done, its recorded plan equals the
    cell's plan today, and metrics.parquet has its rows. The caller drops those its lake has."""
    from pipelines.sweep import DONE_STATUSES

    results_dir = Path(results_dir)
    out = Carry(results_dir)
    runs_path, metrics_path = results_dir / "runs.json", results_dir / "metrics.parquet"
    if not runs_path.is_file() or not metrics_path.is_file():
        out.note = f"no {runs_path.name} and {metrics_path.name} there"
        return out
    try:
        old = json.loads(runs_path.read_text())
        if not isinstance(old, list):
            raise ValueError("not a list of runs")
    except ValueError as exc:
        raise StudyError(f"unreadable {runs_path}: {exc}") from None
    import pyarrow.parquet as pq

    with_rows = set(pq.read_table(metrics_path, columns=["run_id"]).column("run_id").to_pylist())
    plans = {c.key: _canonical(cell_plan(study, c)) for c in study.cells() if c.grid_size not in study.pending}
    for r in old:
        if not isinstance(r, dict) or r.get("status") not in DONE_STATUSES or r.get("run_id") not in with_rows:
            continue
        try:
            key = row_key(r)
        except KeyError:
            continue
        if key not in plans:
            continue
        if r.get("plan") is None:
            out.unplanned.append(r["run_id"])
        elif _canonical(r["plan"]) != plans[key]:
            out.stale.append(r["run_id"])
        else:
            out.runs[key] = r
    if not (out.runs or out.stale or out.unplanned):
        out.note = f"no completed run of study {study.name} in {runs_path.name}"
    return out


def mark_carried(manifest: dict[str, Any], carry: Carry, lake: str) -> list[dict[str, Any]]:
    """Mark ``carried`` the manifest tasks whose cell ``carry`` holds and the lake has not
    completed (the lake's own completed run wins); the sweep engine skips them. A yoked cell's
    partner is not carried while the yoked cell still has to run: the yoked run replays the
    partner's transports from the lake, which a results folder does not hold, so the partner runs
    again here first (its new run replaces the carried one in the next report)."""
    from pipelines.sweep import CARRIED, is_done

    needed = {e["yoke"] for e in manifest["tasks"]
              if e.get("yoke") and carry.runs.get(e["key"]) is None and not is_done(lake, e["run_id"])}
    marked = []
    for e in manifest["tasks"]:
        r = carry.runs.get(e["key"])
        if r is None or is_done(lake, e["run_id"]) or e["key"] in needed:
            continue
        e.update(status=CARRIED, carried_from=str(carry.source), carried_run_id=r["run_id"])
        marked.append(e)
    return marked


__all__ = ["METRICS", "Carry", "Cell", "Level", "Study", "StudyError", "StudyLock", "carried_runs", "cell_plan",
           "cells_table", "find_study", "holder", "lock_path", "manifest_for", "mark_carried", "parse_study",
           "row_key", "sync_manifest", "task_plan"]
