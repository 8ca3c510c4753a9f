"""numba kernels of the Harvest dynamics: pure functions over the state arrays, looping over (b, n).

Numba earns its place here: one env-step is ~100 cell updates and ~600 observation cells, which
numpy would spend in per-call overhead. Kernels are compiled once and cached on disk.
Random numbers come from a per-environment xorshift64* stream (`rng[b]`), so environment b of a
batch is bit-identical to a single environment reset with the same seed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# event codes, defined once in karmic/events.py (numba freezes these module globals at compile time)
from karmic.events import APPLE_EATEN as EV_EATEN
from karmic.events import CAUSE_RESET as C_RESET
from karmic.events import CAUSE_RESPAWN as C_RESPAWN
from karmic.events import CAUSE_RIGGED as C_RIGGED
from karmic.events import SPAWN as EV_SPAWN
from karmic.events import ZAP_FIRED as EV_FIRED
from karmic.events import ZAP_HIT as EV_HIT

# Facing: 0 up, 1 right, 2 down, 3 left; (dx, dy) of "forward" per facing.
FWD = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], dtype=np.int64)
# Move actions relative to facing: 1 forward, 2 backward, 3 step left, 4 step right -> facing offset
MOVE_TURN = np.array([0, 0, 2, 3, 1], dtype=np.int64)  # index by action (0 unused)
NOOP, FORWARD, BACKWARD, LEFT, RIGHT, TURN_LEFT, TURN_RIGHT, ZAP = range(8)
N_ACTIONS = 8

# per-agent episode statistics: the columns of the stats array, by name
# encounters: steps the agent began on the board with another agent within zap range (see
# _encounters); the denominator of "predation per encounter"
STAT_NAMES = ("return", "apples", "steps", "zaps_fired", "zaps_hit", "times_hit", "frozen_steps", "encounters")
S_RETURN, S_APPLES, S_STEPS, S_FIRED, S_HIT, S_TIMES_HIT, S_FROZEN, S_ENC = range(len(STAT_NAMES))
N_EVENT_COLS = 13  # env, t, seq, type, agent, target, x, y, tx, ty, dir, apple_ctx, cause


@njit(cache=True)
def splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = x
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = z ^ (z >> np.uint64(31))
    if z == np.uint64(0):
        z = np.uint64(1)
    return z


@njit(cache=True)
def _next(rng, b):
    x = rng[b]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    rng[b] = x
    return (x * np.uint64(2685821657736338717)) & np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True)
def _uniform(rng, b):
    return float(_next(rng, b) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _randint(rng, b, n):
    return int(_uniform(rng, b) * n)


@njit(cache=True)
def _emit(ev, ne, b, t, seq, typ, agent, target, x, y, tx, ty, d, ctx, cause):
    i = ne[0]
    ev[i, 0] = b
    ev[i, 1] = t
    ev[i, 2] = seq[b]
    ev[i, 3] = typ
    ev[i, 4] = agent
    ev[i, 5] = target
    ev[i, 6] = x
    ev[i, 7] = y
    ev[i, 8] = tx
    ev[i, 9] = ty
    ev[i, 10] = d
    ev[i, 11] = ctx
    ev[i, 12] = cause
    seq[b] += 1
    ne[0] = i + 1


@njit(cache=True)
def _occupancy(pos, removed, b, n_agents, occ):
    for n in range(n_agents):
        if removed[b, n] == 0:
            occ[pos[b, n, 1], pos[b, n, 0]] = n


@njit(cache=True)
def _random_free_cell(rng, b, spawn_ok, occ):
    # uniform over the unoccupied cells agents may spawn on: count, then pick the k-th
    h, w = spawn_ok.shape
    count = 0
    for y in range(h):
        for x in range(w):
            if spawn_ok[y, x] and occ[y, x] < 0:
                count += 1
    if count == 0:
        return -1, -1
    k = _randint(rng, b, count)
    for y in range(h):
        for x in range(w):
            if spawn_ok[y, x] and occ[y, x] < 0:
                if k == 0:
                    return x, y
                k -= 1
    return -1, -1


@njit(cache=True)
def reset_kernel(rng, walls, spawn_ok, apple_cells, apples, pos, dirs, removed, t, seq, stats, pairs,
                 ev, ne):
    """Reset every env: apples to their cells, rigged pairs adjacent and facing (on any free
    cells), the others on random unoccupied ``spawn_ok`` cells."""
    B, N = dirs.shape
    h, w = walls.shape
    occ = np.empty((h, w), dtype=np.int64)
    for b in range(B):
        apples[b] = apple_cells
        occ[:, :] = -1
        placed = np.zeros(N, dtype=np.bool_)
        cause = np.zeros(N, dtype=np.int64)
        partner = np.full(N, -1, dtype=np.int64)
        t[b] = 0
        seq[b] = 0
        stats[b] = 0.0
        removed[b] = 0
        for p in range(pairs.shape[1]):
            a = pairs[b, p, 0]
            c = pairs[b, p, 1]
            if a < 0 or c < 0 or a >= N or c >= N or a == c or placed[a] or placed[c]:
                continue
            # count adjacent free pairs: (x, y) with its right or down neighbour
            count = 0
            for y in range(h):
                for x in range(w):
                    if walls[y, x] or occ[y, x] >= 0:
                        continue
                    if x + 1 < w and not walls[y, x + 1] and occ[y, x + 1] < 0:
                        count += 1
                    if y + 1 < h and not walls[y + 1, x] and occ[y + 1, x] < 0:
                        count += 1
            if count == 0:
                continue  # no valid placement: this pair spawns at random (cause reset)
            k = _randint(rng, b, count)
            ax = ay = cx = cy = -1
            for y in range(h):
                for x in range(w):
                    if walls[y, x] or occ[y, x] >= 0:
                        continue
                    if x + 1 < w and not walls[y, x + 1] and occ[y, x + 1] < 0:
                        if k == 0 and ax < 0:
                            ax, ay, cx, cy = x, y, x + 1, y
                        k -= 1
                    if y + 1 < h and not walls[y + 1, x] and occ[y + 1, x] < 0:
                        if k == 0 and ax < 0:
                            ax, ay, cx, cy = x, y, x, y + 1
                        k -= 1
            if _randint(rng, b, 2) == 1:  # which of the two cells the debtor takes
                ax, ay, cx, cy = cx, cy, ax, ay
            for agent, x0, y0, x1, y1 in ((a, ax, ay, cx, cy), (c, cx, cy, ax, ay)):
                pos[b, agent, 0] = x0
                pos[b, agent, 1] = y0
                # face the partner
                if x1 > x0:
                    dirs[b, agent] = 1
                elif x1 < x0:
                    dirs[b, agent] = 3
                elif y1 > y0:
                    dirs[b, agent] = 2
                else:
                    dirs[b, agent] = 0
                occ[y0, x0] = agent
                placed[agent] = True
                cause[agent] = C_RIGGED
            partner[a] = c
            partner[c] = a
        for n in range(N):
            if placed[n]:
                continue
            x, y = _random_free_cell(rng, b, spawn_ok, occ)
            pos[b, n, 0] = x
            pos[b, n, 1] = y
            dirs[b, n] = _randint(rng, b, 4)
            occ[y, x] = n
            placed[n] = True
        for n in range(N):
            q = partner[n]
            if q >= 0:
                _emit(ev, ne, b, 0, seq, EV_SPAWN, n, q, pos[b, n, 0], pos[b, n, 1],
                      pos[b, q, 0], pos[b, q, 1], dirs[b, n], -1, C_RIGGED)
            else:
                _emit(ev, ne, b, 0, seq, EV_SPAWN, n, -1, pos[b, n, 0], pos[b, n, 1],
                      -1, -1, dirs[b, n], -1, C_RESET)
        # apples under agents stay: the agent eats them on its first step


@njit(cache=True)
def _zaps(b, tb, walls, apples, pos, dirs, removed, seq, stats, actions, rewards, beam_length,
          removal_steps, hit_penalty, fire_cost, sides_beside, ctx_off, beam_lat, ev, ne, hit_buf,
          occ):
    """Every shot against the positions in ``occ``; hit agents leave ``occ`` if removal is on."""
    h, w = walls.shape
    N = dirs.shape[1]
    for n in range(N):
        if removed[b, n] > 0 or actions[b, n] != ZAP:
            continue
        d = dirs[b, n]
        x0 = pos[b, n, 0]
        y0 = pos[b, n, 1]
        _emit(ev, ne, b, tb, seq, EV_FIRED, n, -1, x0, y0, -1, -1, d, -1, -1)
        rewards[b, n] += fire_cost
        stats[b, n, S_FIRED] += 1
        fx = FWD[d, 0]
        fy = FWD[d, 1]
        rx = -fy  # right of facing
        ry = fx
        for li in range(beam_lat.shape[0]):
            lat = beam_lat[li]
            sx = x0 + rx * lat
            sy = y0 + ry * lat
            s_first = 1
            s_last = beam_length
            if lat != 0:
                if sides_beside:
                    # SSD: a side lane's first cell is the one beside the shooter, and it covers
                    # beam_length cells, so it ends one cell short of the centre lane
                    s_first = 0
                    s_last = beam_length - 1
                elif sx < 0 or sy < 0 or sx >= w or sy >= h or walls[sy, sx]:
                    # a side lane starts beside the shooter; it is blocked if that cell is a wall
                    continue
            for s in range(s_first, s_last + 1):
                cx = sx + fx * s
                cy = sy + fy * s
                if cx < 0 or cy < 0 or cx >= w or cy >= h or walls[cy, cx]:
                    break
                v = occ[cy, cx]
                if v >= 0 and v != n:
                    # first agent in the lane is hit; the lane stops there
                    ctx = 0
                    for o in range(ctx_off.shape[0]):
                        ax = cx + ctx_off[o, 0]
                        ay = cy + ctx_off[o, 1]
                        if 0 <= ax < w and 0 <= ay < h and apples[b, ay, ax]:
                            ctx = 1
                            break
                    _emit(ev, ne, b, tb, seq, EV_HIT, n, v, x0, y0, cx, cy, d, ctx, -1)
                    rewards[b, v] += hit_penalty
                    stats[b, n, S_HIT] += 1
                    stats[b, v, S_TIMES_HIT] += 1
                    hit_buf[v] = 1
                    break
    for n in range(N):
        if hit_buf[n] and removal_steps > 0:
            removed[b, n] = removal_steps
            occ[pos[b, n, 1], pos[b, n, 0]] = -1


@njit(cache=True)
def _encounters(b, pos, removed, stats, beam_length, lat_max):
    """Count an encounter for every on-board agent with another on-board agent within zap range:
    at most ``beam_length`` cells away along its row or column, at most ``lat_max`` lanes across
    (the cells some facing's beam covers; walls ignored). Counted on the positions agents act
    from, before the step's zaps and moves."""
    N = removed.shape[1]
    for n in range(N):
        if removed[b, n] > 0:
            continue
        for m in range(N):
            if m == n or removed[b, m] > 0:
                continue
            dx = abs(pos[b, m, 0] - pos[b, n, 0])
            dy = abs(pos[b, m, 1] - pos[b, n, 1])
            if (dx <= lat_max and dy <= beam_length) or (dy <= lat_max and dx <= beam_length):
                stats[b, n, S_ENC] += 1
                break


@njit(cache=True)
def _moves_in_random_order(rng, b, walls, pos, dirs, removed, actions, occ, order):
    """Moves and turns one agent at a time in a random priority order: a move succeeds if its
    target is free at the agent's turn."""
    h, w = walls.shape
    N = dirs.shape[1]
    for n in range(N):
        order[n] = n
    for i in range(N - 1, 0, -1):  # Fisher-Yates
        j = _randint(rng, b, i + 1)
        tmp = order[i]
        order[i] = order[j]
        order[j] = tmp
    for i in range(N):
        n = order[i]
        if removed[b, n] > 0:
            continue
        a = actions[b, n]
        if a == TURN_LEFT:
            dirs[b, n] = (dirs[b, n] + 3) % 4
        elif a == TURN_RIGHT:
            dirs[b, n] = (dirs[b, n] + 1) % 4
        elif FORWARD <= a <= RIGHT:
            md = (dirs[b, n] + MOVE_TURN[a]) % 4
            nx = pos[b, n, 0] + FWD[md, 0]
            ny = pos[b, n, 1] + FWD[md, 1]
            if 0 <= nx < w and 0 <= ny < h and not walls[ny, nx] and occ[ny, nx] < 0:
                occ[pos[b, n, 1], pos[b, n, 0]] = -1
                pos[b, n, 0] = nx
                pos[b, n, 1] = ny
                occ[ny, nx] = n


@njit(cache=True)
def _moves_simultaneous(rng, b, walls, pos, dirs, removed, actions, occ, tgt, state):
    """SSD's move resolution (MapEnv.update_moves): turns apply at once; every no-op or move
    claims a cell (its own if it stays or walks into a wall); a cell claimed by several goes to
    one claimant chosen uniformly, the others stay; then a move succeeds iff its target is empty,
    or is being vacated by an agent that moves in turn (chains), or closes a cycle of moves (all
    move together). A move into a staying, turning or zapping agent, or a swap, fails."""
    h, w = walls.shape
    N = dirs.shape[1]
    # state: 0 not moving, 1 wants to move to tgt, 2 claims its own cell (no-op or walled move)
    for n in range(N):
        state[n] = 0
        tgt[n, 0] = pos[b, n, 0]
        tgt[n, 1] = pos[b, n, 1]
        if removed[b, n] > 0:
            continue
        a = actions[b, n]
        if a == TURN_LEFT:
            dirs[b, n] = (dirs[b, n] + 3) % 4
        elif a == TURN_RIGHT:
            dirs[b, n] = (dirs[b, n] + 1) % 4
        elif a == NOOP:
            state[n] = 2
        elif FORWARD <= a <= RIGHT:
            md = (dirs[b, n] + MOVE_TURN[a]) % 4
            nx = pos[b, n, 0] + FWD[md, 0]
            ny = pos[b, n, 1] + FWD[md, 1]
            if 0 <= nx < w and 0 <= ny < h and not walls[ny, nx]:
                tgt[n, 0] = nx
                tgt[n, 1] = ny
                state[n] = 1
            else:
                state[n] = 2
    # contested cells: one uniformly chosen claimant keeps its claim
    for n in range(N):
        if state[n] != 1:
            continue
        count = 0
        for m in range(N):
            if state[m] > 0 and tgt[m, 0] == tgt[n, 0] and tgt[m, 1] == tgt[n, 1]:
                count += 1
        if count < 2:
            continue
        k = _randint(rng, b, count)
        x = tgt[n, 0]
        y = tgt[n, 1]
        for m in range(N):
            if state[m] > 0 and tgt[m, 0] == x and tgt[m, 1] == y:
                if k != 0:
                    state[m] = 0
                    tgt[m, 0] = pos[b, m, 0]
                    tgt[m, 1] = pos[b, m, 1]
                k -= 1
    for n in range(N):
        if state[n] == 2:
            state[n] = 0
    # each remaining target has one claimant: resolve chains, then cycles
    pending = 0
    for n in range(N):
        pending += state[n]
    while pending > 0:
        progress = False
        for n in range(N):
            if state[n] != 1:
                continue
            x = tgt[n, 0]
            y = tgt[n, 1]
            c = occ[y, x]
            if c < 0:
                occ[pos[b, n, 1], pos[b, n, 0]] = -1
                pos[b, n, 0] = x
                pos[b, n, 1] = y
                occ[y, x] = n
                state[n] = 0
            elif state[c] != 1:
                state[n] = 0  # into an agent that stays
            elif tgt[c, 0] == pos[b, n, 0] and tgt[c, 1] == pos[b, n, 1]:
                state[n] = 0  # a swap
                state[c] = 0
            else:
                continue
            progress = True
        pending = 0
        for n in range(N):
            pending += state[n]
        if pending > 0 and not progress:
            # every pending agent waits on another pending one: they form cycles; all move
            for n in range(N):
                if state[n] == 1:
                    occ[pos[b, n, 1], pos[b, n, 0]] = -1
            for n in range(N):
                if state[n] == 1:
                    pos[b, n, 0] = tgt[n, 0]
                    pos[b, n, 1] = tgt[n, 1]
                    occ[tgt[n, 1], tgt[n, 0]] = n
                    state[n] = 0
            pending = 0


@njit(cache=True)
def step_kernel(rng, walls, spawn_ok, apple_cells, apples, pos, dirs, removed, t, seq, stats,
                actions, rewards, params, regrow_probs, nbr_off, ctx_off, beam_lat, ev, ne,
                hit_buf, move_tgt, move_state):
    """One step of every env. params: beam_length, removal_steps, apple_reward, hit_penalty,
    fire_cost, zap_after_moves, beam_sides_beside, simultaneous_moves. Order within a step: zaps
    (all against pre-move positions), moves (random priority order), eating, regrowth, respawns;
    with zap_after_moves (SSD) moves, eating, zaps (against the new positions), regrowth; events
    in that order."""
    B, N = dirs.shape
    h, w = walls.shape
    beam_length = int(params[0])
    removal_steps = int(params[1])
    apple_reward = params[2]
    hit_penalty = params[3]
    fire_cost = params[4]
    zap_after_moves = params[5] != 0.0
    sides_beside = params[6] != 0.0
    simultaneous = params[7] != 0.0
    n_probs = regrow_probs.shape[0]
    occ = np.empty((h, w), dtype=np.int64)
    order = np.empty(N, dtype=np.int64)
    for b in range(B):
        tb = t[b]
        for n in range(N):
            rewards[b, n] = 0.0
        occ[:, :] = -1
        _occupancy(pos, removed, b, N, occ)
        hit_buf[:] = 0
        _encounters(b, pos, removed, stats, beam_length, beam_lat[beam_lat.shape[0] - 1])
        # 1. zaps --------------------------------------------------------------------------------
        if not zap_after_moves:
            _zaps(b, tb, walls, apples, pos, dirs, removed, seq, stats, actions, rewards,
                  beam_length, removal_steps, hit_penalty, fire_cost, sides_beside, ctx_off,
                  beam_lat, ev, ne, hit_buf, occ)
        # 2. moves and turns -----------------------------------------------------------------------
        if simultaneous:
            _moves_simultaneous(rng, b, walls, pos, dirs, removed, actions, occ, move_tgt,
                                move_state)
        else:
            _moves_in_random_order(rng, b, walls, pos, dirs, removed, actions, occ, order)
        # 3. eating ---------------------------------------------------------------------------------
        for n in range(N):
            if removed[b, n] > 0:
                continue
            x = pos[b, n, 0]
            y = pos[b, n, 1]
            if apples[b, y, x]:
                apples[b, y, x] = 0
                rewards[b, n] += apple_reward
                stats[b, n, S_APPLES] += 1
                _emit(ev, ne, b, tb, seq, EV_EATEN, n, -1, x, y, -1, -1, dirs[b, n], -1, -1)
        if zap_after_moves:
            _zaps(b, tb, walls, apples, pos, dirs, removed, seq, stats, actions, rewards,
                  beam_length, removal_steps, hit_penalty, fire_cost, sides_beside, ctx_off,
                  beam_lat, ev, ne, hit_buf, occ)
        # 4. regrowth on empty, unoccupied apple cells (counts from the pre-growth board) ----------
        for y in range(h):
            for x in range(w):
                if not apple_cells[y, x] or apples[b, y, x] or occ[y, x] >= 0:
                    continue
                cnt = 0
                for o in range(nbr_off.shape[0]):
                    ax = x + nbr_off[o, 0]
                    ay = y + nbr_off[o, 1]
                    if 0 <= ax < w and 0 <= ay < h and apples[b, ay, ax] == 1:
                        cnt += 1
                p = regrow_probs[min(cnt, n_probs - 1)]
                if p > 0.0 and _uniform(rng, b) < p:
                    apples[b, y, x] = 2  # grown this step; not counted by later cells
        for y in range(h):
            for x in range(w):
                if apples[b, y, x] == 2:
                    apples[b, y, x] = 1
        # 5. timers and respawns --------------------------------------------------------------------
        for n in range(N):
            if removed[b, n] > 0:
                if hit_buf[n]:
                    continue  # removed at the end of this step: it acted, the timer starts next
                stats[b, n, S_FROZEN] += 1
                removed[b, n] -= 1
                if removed[b, n] == 0:
                    x, y = _random_free_cell(rng, b, spawn_ok, occ)
                    pos[b, n, 0] = x
                    pos[b, n, 1] = y
                    dirs[b, n] = _randint(rng, b, 4)
                    occ[y, x] = n
                    _emit(ev, ne, b, tb, seq, EV_SPAWN, n, -1, x, y, -1, -1, dirs[b, n], -1,
                          C_RESPAWN)
        for n in range(N):
            stats[b, n, S_RETURN] += rewards[b, n]
            stats[b, n, S_STEPS] += 1
        t[b] = tb + 1


@njit(cache=True)
def observe_kernel(walls, apples, pos, dirs, removed, obs, identity):
    """Egocentric (V, V, C) windows rotated so the agent faces up: apple, wall, other agent; with
    ``identity`` channel 3 + k marks agent k's cell (the observer's own, at the centre, included)."""
    B, N = dirs.shape
    h, w = walls.shape
    V = obs.shape[2]
    half = V // 2
    occ = np.empty((h, w), dtype=np.int64)
    for b in range(B):
        occ[:, :] = -1
        _occupancy(pos, removed, b, N, occ)
        for n in range(N):
            o = obs[b, n]
            o[:, :, :] = 0
            if removed[b, n] > 0:
                continue
            d = dirs[b, n]
            fx = FWD[d, 0]
            fy = FWD[d, 1]
            rx = -fy
            ry = fx
            x0 = pos[b, n, 0]
            y0 = pos[b, n, 1]
            for r in range(V):
                fwd = half - r
                for c in range(V):
                    right = c - half
                    x = x0 + fx * fwd + rx * right
                    y = y0 + fy * fwd + ry * right
                    if x < 0 or y < 0 or x >= w or y >= h or walls[y, x]:
                        o[r, c, 1] = 1
                        continue
                    if apples[b, y, x]:
                        o[r, c, 0] = 1
                    v = occ[y, x]
                    if v >= 0:
                        if v != n:
                            o[r, c, 2] = 1
                        if identity:
                            o[r, c, 3 + v] = 1
