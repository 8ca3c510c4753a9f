"""``karmic verify tvt``: key-to-door (karmic.tvt.verify_key_to_door) and delayed retribution (karmic.tvt.retribution)."""

from __future__ import annotations

import json
import os
import sys

import typer

from karmic.commands._common import KarmicError, user_errors


def register(app: typer.Typer) -> None:
    verify_app = typer.Typer(help="Scientific checks of the mechanisms.", no_args_is_help=True)
    app.add_typer(verify_app, name="verify")

    @verify_app.command("tvt")
    def tvt(
        task: str = typer.Option("all", "--task", help="key-to-door | retribution | all."),
        algo: str = typer.Option("ppo", "--algo", help="Learner: ppo | drqn (drqn: --task retribution)."),
        explore_steps: int = typer.Option(6, "--explore-steps", help="Key-to-door phase 1 length (key room)."),
        distractor_steps: int = typer.Option(30, "--distractor-steps", help="Key-to-door phase 2 length (apples)."),
        door_steps: int = typer.Option(6, "--door-steps", help="Key-to-door phase 3 length (door)."),
        episode_steps: int = typer.Option(10, "--episode-steps", help="Retribution: steps per episode."),
        gamma: float = typer.Option(0.8, "--gamma", help="Key-to-door discount; the transport gap is round(1/(1-gamma))."),
        seeds: str = typer.Option("1,2,3", "--seeds", help="Comma-separated seeds."),
        updates: int = typer.Option(800, "--updates", help="Key-to-door PPO updates per run (32 episodes each)."),
        workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers",
                                    help="Key-to-door runs at a time, one process each (results do not depend on it)."),
        quick: bool = typer.Option(False, "--quick", help="A few updates, one seed: checks the machinery, not the science."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on the last line."),
    ) -> None:
        """Train agents with and without TVT on key-to-door and delayed retribution; exit 1 if a
        pass criterion fails."""
        with user_errors():
            if task not in ("all", "key-to-door", "retribution"):
                raise KarmicError(f"unknown --task {task!r}; choose key-to-door, retribution or all")
            if algo not in ("ppo", "drqn"):
                raise KarmicError(f"unknown --algo {algo!r}; choose ppo or drqn")
            if algo == "drqn" and task != "retribution":
                raise KarmicError("--algo drqn runs the retribution task only: add --task retribution")
            try:
                seed_list = [int(s) for s in seeds.split(",") if s.strip()]
            except ValueError:
                raise KarmicError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
            if not seed_list:
                raise KarmicError("--seeds is empty")
            if not 0 < gamma < 1:
                raise KarmicError(f"--gamma must be in (0, 1), got {gamma}")
            if updates < 1:
                raise KarmicError(f"--updates must be >= 1, got {updates}")
            if workers < 1:
                raise KarmicError(f"--workers must be >= 1, got {workers}")
            import torch

            from karmic.tvt.key_to_door import KeyToDoorConfig
            from karmic.tvt.retribution import (
                RetributionConfig,
                RetributionVerifyConfig,
                verify_retribution,
            )
            from karmic.tvt.transport import min_gap
            from karmic.tvt.verify_key_to_door import VerifyConfig, verify

            kd_task = KeyToDoorConfig(explore_steps=explore_steps, distractor_steps=distractor_steps,
                                      door_steps=door_steps)
            rt_task = RetributionConfig(episode_steps=episode_steps)
            try:
                kd_task.validate()
                rt_task.validate()
            except ValueError as exc:
                raise KarmicError(str(exc)) from None
            if min_gap(gamma) >= distractor_steps + door_steps:
                raise KarmicError(f"--gamma {gamma}: the transport gap {min_gap(gamma)} is longer than "
                                  f"distractor + door ({distractor_steps + door_steps}); nothing could move")
            rt_cfg = RetributionVerifyConfig(task=rt_task)
            if quick:
                updates, seed_list = min(updates, 8), seed_list[:1]
                rt_cfg.updates = min(rt_cfg.updates, 8)
            torch.set_num_threads(1)
            kd_cfg = VerifyConfig(task=kd_task, gamma=gamma, updates=updates)

            def on_run(r: dict) -> None:
                what = (f"late pickup {r['late_pickup']:.2f}, door opened {r['late_opened']:.2f}"
                        if "late_pickup" in r else f"late zap rate {r['late_rate']:.2f}")
                print(f"{'tvt' if r['tvt'] else 'no-tvt':>6} seed {r['seed']}: {what}", file=sys.stderr, flush=True)

            res: dict = {}
            if task in ("all", "key-to-door"):
                print("key-to-door ...", file=sys.stderr, flush=True)
                res["key_to_door"] = verify(kd_cfg, seed_list, on_run=on_run, workers=workers)
            if task in ("all", "retribution"):
                print("delayed retribution ...", file=sys.stderr, flush=True)
                res["retribution"] = verify_retribution(rt_cfg, seed_list, on_run=on_run, algo=algo)
            res["passed"] = all(r["passed"] for r in res.values())
            res["seconds"] = sum(r["seconds"] for k, r in res.items() if isinstance(r, dict))
            if "key_to_door" in res:
                kd = res["key_to_door"]
                print(f"key-to-door: explore {explore_steps}, distractor {distractor_steps}, door {door_steps}, "
                      f"gamma {gamma}, {updates} updates x {kd_cfg.num_envs} episodes, seeds {seed_list}")
                print(f"  random policy pickup rate: {kd['random_pickup']:.3f}")
                for r in kd["runs"]:
                    print(f"  {'tvt' if r['tvt'] else 'no-tvt':>6} seed {r['seed']}: late pickup {r['late_pickup']:.3f}")
                for name, c in kd["checks"].items():
                    print(f"  [{'PASS' if c['ok'] else 'FAIL'}] {name}: {c['detail']}")
            if "retribution" in res:
                rt = res["retribution"]
                print(f"delayed retribution{' (drqn)' if algo == 'drqn' else ''}: {episode_steps}-step episodes, zap X +{rt_task.steal_reward:g} now, "
                      f"{rt_task.punishment:g} next episode, {rt_cfg.updates} updates x {rt_cfg.num_envs} episodes, "
                      f"seeds {seed_list}")
                for r in rt["runs"]:
                    print(f"  {'tvt' if r['tvt'] else 'no-tvt':>6} seed {r['seed']}: late zap rate {r['late_rate']:.3f}")
                for name, c in rt["checks"].items():
                    print(f"  [{'PASS' if c['ok'] else 'FAIL'}] {name}: {c['detail']}")
            print(f"{'PASSED' if res['passed'] else 'FAILED'} in {res['seconds']:.0f} s")
            if as_json:
                print(json.dumps(res))
            if not res["passed"] and not quick:
                raise typer.Exit(1)
