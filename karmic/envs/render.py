"""Rendering: the whole board as RGB (apples, walls, agents with their facing, beams), ANSI text,
an annotated frame (ids, hits, removed agents, a caption, one agent's view) and an episode saved
as a GIF (Pillow, which matplotlib already depends on), an MP4 (ffmpeg) or a PNG strip."""

from __future__ import annotations

import numpy as np

from karmic.events import APPLE_EATEN, SPAWN, SPAWN_CAUSES, ZAP_FIRED, ZAP_HIT

BG = (25, 25, 25)
WALL = (120, 120, 120)
APPLE = (60, 170, 60)
APPLE_CELL = (40, 55, 40)
BEAM = (250, 230, 120)
HIT = (230, 30, 30)
CAPTION_BG = (0, 0, 0)
CAPTION_FG = (235, 235, 235)
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
    images = [f if isinstance(f, Image.Image) else Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def compact_frame(frame: np.ndarray):
    """An RGB frame as a palette image (one byte a pixel), so a 1000-step episode's frames fit in
    memory; the board has a handful of colours, the caption's anti-aliased text a few more."""
    from PIL import Image

    return Image.fromarray(frame).quantize(colors=128, method=Image.Quantize.FASTOCTREE,
                                           dither=Image.Dither.NONE)


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


# --- annotated frames (karmic replay) -----------------------------------------------------------
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def _step_text(ev, b: int) -> list[str]:
    """The step's social events of env ``b`` as short phrases, in event order."""
    out = []
    for i in np.nonzero(ev.env == b)[0]:
        et, a, tg = int(ev.event_type[i]), int(ev.agent[i]), int(ev.target[i])
        if et == ZAP_HIT:
            out.append(f"{a} hits {tg}" + (" (apples near)" if ev.apple_context[i] == 1 else ""))
        elif et == ZAP_FIRED:
            continue  # a shot shows as its beam; its hit, if any, is named
        elif et == APPLE_EATEN:
            out.append(f"{a} eats")
        elif et == SPAWN:
            cause = SPAWN_CAUSES[int(ev.spawn_cause[i])]
            out.append(f"{a} spawns facing {tg}" if cause == "rigged" and tg >= 0
                       else f"{a} {'respawns' if cause == 'respawn' else 'spawns'}")
    return out


def _wrap(draw, font, words: list[str], width: int, lines: int, sep: str = ", ") -> list[str]:
    """``words`` joined by ``sep`` into at most ``lines`` lines of at most ``width`` pixels; what
    does not fit ends in an ellipsis (a line is never wider than the frame)."""
    if lines < 1 or not words:
        return []

    def fits(text: str) -> bool:
        return draw.textlength(text, font=font) <= width

    def clip(text: str) -> str:
        while text and not fits(text + " …"):
            text = text[:-1]
        return text.rstrip(", ") + " …"

    out, cur, used = [], "", 0
    for w in words:
        cand = f"{cur}{sep}{w}" if cur else w
        if fits(cand):
            cur, used = cand, used + 1
            continue
        if cur:
            out.append(cur)
            if len(out) == lines:
                cur = ""
                break
        cur, used = w, used + 1
    if cur and len(out) < lines:
        out.append(cur)
    out = [x if fits(x) else clip(x) for x in out]
    if used < len(words) or (out and len(out) == lines and not fits(out[-1])):
        out[-1] = out[-1] if out[-1].endswith("…") else clip(out[-1])
    return out


def default_scale(venv) -> int:
    """Pixels per cell: the board about 480 px wide (10x10: 40 px cells, 30x30: 15)."""
    H, W = venv.walls.shape
    return max(6, min(40, 480 // max(W + 2, H + 2)))


# what each colour of a frame means, drawn as a legend row under the caption
LEGEND = (("apple", APPLE), ("apple spot", APPLE_CELL), ("wall", WALL), ("beam", BEAM), ("hit", HIT))


def _legend(d, font, y: int, width: int, line_h: int) -> None:
    """Swatches with their names in one row (wrapping if the frame is narrow); agents are
    labelled by their ids on the board, a removed agent is the hollow square of its colour."""
    x, sw = 4, max(8, line_h - 6)
    items = [*LEGEND, ("agent (id; bar: facing)", AGENT_COLOURS[0]), ("removed (steps left)", None)]
    for name, colour in items:
        need = sw + 4 + int(d.textlength(name, font=font)) + 12
        if x + need > width and x > 4:
            x, y = 4, y + line_h
        box = (x, y + 2, x + sw, y + 2 + sw)
        if name == "hit":
            d.line(box, fill=HIT, width=2)
            d.line((box[0], box[3], box[2], box[1]), fill=HIT, width=2)
        elif colour is None:
            d.rectangle(box, outline=AGENT_COLOURS[0], width=1)
        else:
            d.rectangle(box, fill=colour, outline=(90, 90, 90) if colour == BG else None)
        d.text((x + sw + 4, y + 1), name, fill=CAPTION_FG, font=font)
        x += need


def legend_rows(width: int, font, line_h: int) -> int:
    """How many rows the legend takes at ``width`` pixels (annotated_frame sizes the frame by it)."""
    from PIL import Image, ImageDraw

    d = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x, rows, sw = 4, 1, max(8, line_h - 6)
    for name in [n for n, _ in LEGEND] + ["agent (id; bar: facing)", "removed (steps left)"]:
        need = sw + 4 + int(d.textlength(name, font=font)) + 12
        if x + need > width and x > 4:
            x, rows = 4, rows + 1
        x += need
    return rows


def annotated_frame(venv, b: int = 0, events=None, episode: int | None = None,
                    focus: int | None = None, obs: np.ndarray | None = None,
                    scale: int | None = None) -> np.ndarray:
    """The board of env ``b`` with agent ids, this step's hits (a red cross on the victim), removed
    agents (a hollow square where they left, with the steps left) and a caption (t, apples on the
    board, the step's events). ``focus``: outline that agent and add its egocentric view
    (``obs[b, focus]``) on the right."""
    from PIL import Image, ImageDraw

    scale = scale or default_scale(venv)
    s = venv.state
    ev = venv.last_events if events is None else events
    board = Image.fromarray(board_rgb(venv, b, scale))
    bw, bh = board.size
    # the caption's size follows the board's width, not the cell's (a 30x30 board has small cells)
    font = _font(max(10, min(16, bw // 34)))
    small = _font(max(8, min(14, int(scale * 0.6))))
    line_h = font.size + 4 if hasattr(font, "size") else 14
    panel_w = 0
    V = None
    if focus is not None and obs is not None:
        V = obs.shape[2]
        cell = max(2, (bh * 2 // 3) // V)
        panel_w = cell * V + 8
    cap_lines = 3
    width = bw + panel_w
    leg_rows = legend_rows(width, font, line_h)
    img = Image.new("RGB", (width, bh + line_h * (cap_lines + leg_rows) + 6), CAPTION_BG)
    img.paste(board, (0, 0))
    d = ImageDraw.Draw(img)

    def cell_box(x, y, pad=1):
        x0, y0 = (x + 1) * scale, (y + 1) * scale
        return (x0 + pad, y0 + pad, x0 + scale - 1 - pad, y0 + scale - 1 - pad)

    removed = []
    for n in range(venv.n_agents):
        x, y = int(s.pos[b, n, 0]), int(s.pos[b, n, 1])
        colour = AGENT_COLOURS[n % len(AGENT_COLOURS)]
        if s.removed[b, n] > 0:
            removed.append(f"{n} ({int(s.removed[b, n])})")
            d.rectangle(cell_box(x, y), outline=colour, width=1)
            if scale >= 10:
                d.text(((x + 1.5) * scale, (y + 1.5) * scale), str(n), fill=colour, font=small,
                       anchor="mm")
            continue
        # redrawn over board_rgb's notch so the id stays legible: facing is a bar on that edge
        x0, y0, x1, y1 = cell_box(x, y)
        d.rectangle((x0, y0, x1, y1), fill=colour)
        bar = max(2, scale // 6)
        fx, fy = FWD[int(s.dirs[b, n])]
        d.rectangle((x1 - bar + 1 if fx > 0 else x0, y1 - bar + 1 if fy > 0 else y0,
                     x0 + bar - 1 if fx < 0 else x1, y0 + bar - 1 if fy < 0 else y1), fill=(0, 0, 0))
        if scale >= 10:
            d.text(((x + 1.5) * scale, (y + 1.5) * scale), str(n), fill=(0, 0, 0), font=small,
                   anchor="mm")
        if n == focus:
            d.rectangle(cell_box(x, y, pad=0), outline=(255, 255, 255), width=2)
    for i in np.nonzero((ev.env == b) & (ev.event_type == ZAP_HIT))[0]:
        x0, y0, x1, y1 = cell_box(int(ev.target_x[i]), int(ev.target_y[i]), pad=1)
        d.line((x0, y0, x1, y1), fill=HIT, width=2)
        d.line((x0, y1, x1, y0), fill=HIT, width=2)
    t = int(s.t[b])
    head = [f"ep {episode}" if episode is not None else "", f"t {t}/{venv.max_steps}",
            f"apples {int(s.apples[b].astype(bool).sum())}"]
    if removed:
        head.append("removed " + " ".join(removed))
    # every caption line fits the frame: the head and the step's events are wrapped to its width
    lines = _wrap(d, font, [h for h in head if h], width - 8, 2, sep="  ")
    lines += _wrap(d, font, _step_text(ev, b), width - 8, cap_lines - len(lines))
    for k, text in enumerate(lines[:cap_lines]):
        d.text((4, bh + 2 + k * line_h), text, fill=CAPTION_FG, font=font)
    _legend(d, font, bh + 2 + cap_lines * line_h + 2, width, line_h)
    if panel_w:
        o = obs[b, focus]
        cell = (panel_w - 8) // V
        view = np.zeros((V, V, 3), np.uint8)
        view[:] = BG
        view[o[:, :, 0] > 0] = APPLE
        view[o[:, :, 1] > 0] = WALL
        view[o[:, :, 2] > 0] = (200, 200, 200)
        if s.removed[b, focus] == 0:
            view[V // 2, V // 2] = AGENT_COLOURS[focus % len(AGENT_COLOURS)]
        big = Image.fromarray(np.kron(view, np.ones((cell, cell, 1), np.uint8)))
        img.paste(big, (bw + 4, 0))
        d.text((bw + 4, cell * V + 2), f"agent_{focus} sees (facing up)", fill=CAPTION_FG, font=small)
    return np.asarray(img)


def save_frames(frames: list, path, fps: int = 8) -> None:
    """Frames (RGB arrays or PIL images) to ``path``. ``.gif``: animated; ``.mp4``: H.264 through ffmpeg (needs ffmpeg on PATH); ``.png``: a strip
    of 8 evenly spaced frames side by side (for pages that cannot animate)."""
    import shutil
    import subprocess
    from pathlib import Path

    from PIL import Image

    path = Path(path)
    if not frames:
        raise ValueError("no frames to save")
    suffix = path.suffix.lower()
    if suffix != ".gif":
        frames = [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else f for f in frames]
    if suffix == ".gif":
        save_gif(frames, str(path), fps)
    elif suffix == ".png":
        k = min(8, len(frames))
        pick = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, k).round()]
        gap = np.zeros((pick[0].shape[0], 4, 3), np.uint8)
        strip = np.concatenate([x for f in pick for x in (f, gap)][:-1], axis=1)
        Image.fromarray(strip).save(path, optimize=True)
    elif suffix == ".mp4":
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise ValueError(f"writing {path.name} needs ffmpeg on PATH (not found): write a .gif instead")
        h, w = frames[0].shape[:2]
        cmd = [ffmpeg, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
               "-pix_fmt", "yuv420p", "-c:v", "libx264", str(path)]
        data = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
        subprocess.run(cmd, input=data, check=True)
    else:
        raise ValueError(f"unknown output format {path.suffix!r}: use .gif, .mp4 or .png")
