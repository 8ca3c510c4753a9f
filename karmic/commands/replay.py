"""``karmic replay``: re-simulate an episode from the lake's action log, check it, render it."""

from __future__ import annotations

import sys

import typer

from karmic.commands._common import LAKE_OPTION, KarmicError, lake_path, user_errors


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_command(
        run_id: str = typer.Argument(..., help="Run id (karmic sql \"select run_id from runs\")."),
        episode: int = typer.Argument(None, help="Episode to replay and render."),
        check: bool = typer.Option(False, "--check", help="Replay every episode of the run and compare; no rendering."),
        out: str = typer.Option(None, "--out", help="Output .gif, .mp4 (needs ffmpeg) or .png strip (default replay-RUN-EPISODE.gif)."),
        agent: str = typer.Option(None, "--agent", help="Outline this agent (agent_2) and show its view."),
        fps: int = typer.Option(8, "--fps", help="Frames per second of the animation."),
        max_frames: int = typer.Option(None, "--max-frames", help="Render only the first N frames (the whole episode is still checked).", show_default="all"),
        every: int = typer.Option(1, "--every", help="Keep every N-th step's frame (and the last): --every 5 makes a 500-step episode 101 frames."),
        lake: str = LAKE_OPTION,
    ) -> None:
        """Re-simulate episodes from the lake alone and check that they regenerate the stored
        events row for row (exit 1 naming the first difference); render one as an animation."""
        with user_errors():
            from karmic.lake import LakeError
            from pipelines.replay import ReplayMismatch, check_run, render_episode

            try:
                if check:
                    if episode is not None or out is not None:
                        raise KarmicError("--check verifies the whole run: give only RUN_ID")
                    n, mismatch = check_run(lake_path(lake), run_id)
                    if mismatch:
                        print(f"mismatch: {mismatch}", file=sys.stderr)
                        raise typer.Exit(1)
                    print(f"run {run_id}: {n} episode{'' if n == 1 else 's'} replayed, every event equal to the lake")
                    return
                if episode is None:
                    raise KarmicError("give an EPISODE to replay, or --check to verify every episode")
                path = out or f"replay-{run_id}-{episode}.gif"
                try:
                    written = render_episode(lake_path(lake), run_id, episode, path, agent=agent,
                                             fps=fps, max_frames=max_frames, every=every)
                except ReplayMismatch as exc:
                    print(f"mismatch: {exc}", file=sys.stderr)
                    raise typer.Exit(1) from None
                print(f"run {run_id} episode {episode}: events equal to the lake; wrote {written}")
            except LakeError as exc:
                raise KarmicError(str(exc)) from None
