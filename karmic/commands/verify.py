"""``karmic verify tvt``: the key-to-door check of temporal value transport (karmic.tvt.verify)."""

from __future__ import annotations

import json
import sys

import typer

from karmic.commands._common import KarmicError, user_errors


def register(app: typer.Typer) -> None:
    verify_app = typer.Typer(help="Scientific checks of the mechanisms.", no_args_is_help=True)
    app.add_typer(verify_app, name="verify")

    @verify_app.command("tvt")
    def tvt(
        explore_steps: int = typer.Option(6, "--explore-steps", help="Phase 1 length (key room)."),
        distractor_steps: int = typer.Option(30, "--distractor-steps", help="Phase 2 length (apples)."),
        door_steps: int = typer.Option(6, "--door-steps", help="Phase 3 length (door)."),
        gamma: float = typer.Option(0.8, "--gamma", help="Discount; the transport gap is round(1/(1-gamma))."),
        seeds: str = typer.Option("1,2,3", "--seeds", help="Comma-separated seeds."),
        updates: int = typer.Option(300, "--updates", help="PPO updates per run (32 episodes each)."),
        quick: bool = typer.Option(False, "--quick", help="A few updates, one seed: checks the machinery, not the science."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Train TVT and no-TVT agents on key-to-door; exit 1 if a pass criterion fails."""
        with user_errors():
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
            import torch

            from karmic.tvt.key_to_door import KeyToDoorConfig
            from karmic.tvt.transport import min_gap
            from karmic.tvt.verify import VerifyConfig, verify

            task = KeyToDoorConfig(explore_steps=explore_steps, distractor_steps=distractor_steps,
                                   door_steps=door_steps)
            try:
                task.validate()
            except ValueError as exc:
                raise KarmicError(str(exc)) from None
            if min_gap(gamma) >= distractor_steps + door_steps:
                raise KarmicError(f"--gamma {gamma}: the transport gap {min_gap(gamma)} is longer than "
                                  f"distractor + door ({distractor_steps + door_steps}); nothing could move")
            if quick:
                updates, seed_list = min(updates, 8), seed_list[:1]
            torch.set_num_threads(1)
            cfg = VerifyConfig(task=task, gamma=gamma, updates=updates)

            def on_run(r: dict) -> None:
                print(f"{'tvt' if r['tvt'] else 'no-tvt':>6} seed {r['seed']}: late pickup "
                      f"{r['late_pickup']:.2f}, door opened {r['late_opened']:.2f}", file=sys.stderr, flush=True)

            res = verify(cfg, seed_list, on_run=on_run)
            if as_json:
                print(json.dumps(res, indent=2))
            else:
                print(f"key-to-door: explore {explore_steps}, distractor {distractor_steps}, door {door_steps}, "
                      f"gamma {gamma}, {updates} updates x {cfg.num_envs} episodes, seeds {seed_list}")
                print(f"random policy pickup rate: {res['random_pickup']:.3f}")
                for r in res["runs"]:
                    print(f"  {'tvt' if r['tvt'] else 'no-tvt':>6} seed {r['seed']}: late pickup {r['late_pickup']:.3f}")
                for name, c in res["checks"].items():
                    print(f"  [{'PASS' if c['ok'] else 'FAIL'}] {name}: {c['detail']}")
                print(f"{'PASSED' if res['passed'] else 'FAILED'} in {res['seconds']:.0f} s")
            if not res["passed"] and not quick:
                raise typer.Exit(1)
