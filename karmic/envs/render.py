"""Rendering: the whole board as RGB (apples, walls, agents with their facing, beams), ANSI text,
and an episode saved as a GIF (Pillow, which matplotlib already depends on)."""

from __future__ import annotations

import numpy as np

from karmic.events import ZAP_FIRED

BG = (25, 25, 25)
WALL = (120, 120, 120)
APPLE = (60, 170, 60)
APPLE_CELL = (40, 55, 40)
BEAM = (250, 230, 120)
# Okabe-Ito colours for agents (colour-blind safe)
AGENT_COLOURS = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
                 (213, 94, 0), (204, 121, 167), (255, 255, 255)]
FWD = ((0, -1), (1, 0), (0, 1), (-1, 0))


def board_rgb(venv, b: int = 0, scale: int = 8) -> np.ndarray:
    """(H+2, W+2) cells with the wall border, each scale x scale pixels."""
    s = venv.state
    H, W = venv.walls.shape
    img = np.zeros((H + 2, W + 2, 3), dtype=np.uint8)
    img[:, :] = WALL
    inner = img[1:-1, 1:-1]
    inner[:, :] = BG
    inner[venv.apple_cells.astype(bool)] = APPLE_CELL
    inner[venv.walls] = WALL
    inner[s.apples[b].astype(bool)] = APPLE
    ev = venv.last_events
    for i in np.nonzero((ev.env == b) & (ev.event_type == ZAP_FIRED))[0]:
        d = int(ev.direction[i])
        x, y = int(ev.x[i]), int(ev.y[i])
        for k in range(1, venv.config.beam_length + 1):
            cx, cy = x + FWD[d][0] * k, y + FWD[d][1] * k
            if not (0 <= cx < W and 0 <= cy < H) or venv.walls[cy, cx]:
                break
            inner[cy, cx] = BEAM
    big = np.kron(img, np.ones((scale, scale, 1), dtype=np.uint8))
    for n in range(venv.n_agents):
        if s.removed[b, n] > 0:
            continue  # removed agents are absent
        x, y = int(s.pos[b, n, 0]) + 1, int(s.pos[b, n, 1]) + 1
        colour = AGENT_COLOURS[n % len(AGENT_COLOURS)]
        big[y * scale + 1:(y + 1) * scale - 1, x * scale + 1:(x + 1) * scale - 1] = colour
        # facing: a dark notch on the facing side
        d = int(s.dirs[b, n])
        cxp, cyp = x * scale + scale // 2, y * scale + scale // 2
        fx, fy = FWD[d]
        for k in range(scale // 2):
            px, py = cxp + fx * k, cyp + fy * k
            big[py, px] = (0, 0, 0)
    return big


def board_ansi(venv, b: int = 0) -> str:
    s = venv.state
    H, W = venv.walls.shape
    grid = [["#" if venv.walls[y, x] else ("@" if s.apples[b, y, x] else ".") for x in range(W)]
            for y in range(H)]
    arrows = "^>v<"
    for n in range(venv.n_agents):
        if s.removed[b, n] == 0:
            grid[int(s.pos[b, n, 1])][int(s.pos[b, n, 0])] = arrows[int(s.dirs[b, n])] if n > 9 else str(n)
    border = "#" * (W + 2)
    return "\n".join([border, *("#" + "".join(r) + "#" for r in grid), border])


def save_gif(frames: list[np.ndarray], path: str, fps: int = 10) -> None:
    """Save RGB frames as an animated GIF."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to save")
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def record_episode(env, path: str, policy=None, seed: int = 0, max_steps: int | None = None,
                   fps: int = 10) -> int:
    """Run one episode of a ParallelEnv (random actions unless policy(obs) -> actions) and save a GIF.
    Returns the number of frames."""
    obs, _ = env.reset(seed=seed)
    frames = [env.render_frame()]
    steps = 0
    while env.agents and (max_steps is None or steps < max_steps):
        actions = policy(obs) if policy else {a: env.action_space(a).sample() for a in env.agents}
        obs, *_ = env.step(actions)
        frames.append(env.render_frame())
        steps += 1
    save_gif(frames, path, fps)
    return len(frames)
