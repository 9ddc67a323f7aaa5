"""Camera paths through a room at walking speed: smooth, looking around, robot-like.

The path is planned on the scene's clearance grid (free floor at least ``CAMERA_CLEARANCE``
from every obstacle): a chain of geodesic (breadth-first) legs between random free cells,
resampled by arc length and low-pass filtered. Speed, height, heading, pan, tilt and roll all
vary smoothly with time.
"""

from __future__ import annotations

import cv2
import numpy as np

from rgbd_seg_ros.data.synth.scene import CAMERA_CLEARANCE, Scene

_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _gauss_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along axis 0 with edge padding (sigma in samples)."""
    if sigma <= 0:
        return x
    radius = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = [(radius, radius)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode='edge')
    out = np.zeros_like(x, dtype=np.float64)
    for i, w in enumerate(k):
        out += w * xp[i : i + len(x)]
    return out


def _geodesic(free: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Breadth-first (8-connected) steps from ``start`` over ``free`` cells; -1: unreachable."""
    dist = np.full(free.shape, -1, np.int32)
    dist[start] = 0
    frontier = np.zeros(free.shape, bool)
    frontier[start] = True
    kernel = np.ones((3, 3), np.uint8)
    step = 0
    while frontier.any():
        step += 1
        grown = cv2.dilate(frontier.astype(np.uint8), kernel).astype(bool)
        frontier = grown & free & (dist < 0)
        dist[frontier] = step
    return dist


def _walk_back(dist: np.ndarray, goal: tuple[int, int]) -> list[tuple[int, int]]:
    path = [goal]
    r, c = goal
    h, w = dist.shape
    while dist[r, c] > 0:
        best = None
        for dr, dc in _NEIGHBOURS:
            rr, cc = r + dr, c + dc
            # a neighbour one step closer; prefer straight moves for straighter paths
            if (
                0 <= rr < h
                and 0 <= cc < w
                and dist[rr, cc] == dist[r, c] - 1
                and (best is None or dr == 0 or dc == 0)
            ):
                best = (rr, cc)
        assert best is not None  # a BFS distance > 0 has a neighbour one step closer
        r, c = best
        path.append(best)
    return path[::-1]


def plan_path(scene: Scene, rng: np.random.Generator, length: float) -> np.ndarray:
    """A smooth polyline (N, 2), sampled every 5 cm, at least ``length`` metres long."""
    res = scene.grid_res
    # keep well away from walls and furniture when the room allows it
    need = max(2.0, 0.12 * scene.clearance.size * res * res)
    free = None
    for clearance in (1.1, 0.9, 0.75, CAMERA_CLEARANCE, 0.4, 0.3):
        cand = scene.clearance >= clearance
        n, labels, stats, _ = cv2.connectedComponentsWithStats(
            cand.astype(np.uint8), connectivity=8
        )
        if n > 1 and (
            stats[1:, cv2.CC_STAT_AREA].max() * res * res >= need or clearance <= CAMERA_CLEARANCE
        ):
            free = cand
            break
    if free is None:
        msg = 'room has no free floor for the camera'
        raise RuntimeError(msg)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    free = labels == biggest
    cells = np.argwhere(free)
    cur = tuple(cells[rng.integers(len(cells))])
    points = [np.array(cur, np.float64)]
    total = 0.0
    heading = None
    legs = 0
    while total < length + 2.0 and legs < 200:
        legs += 1
        dist = _geodesic(free, cur)
        reach = np.argwhere(dist > 0)
        if len(reach) == 0:  # a single cell: stand still
            points.append(points[-1])
            total += 0.05
            continue
        steps = dist[reach[:, 0], reach[:, 1]] * res
        weight = np.clip(steps, 0.0, 4.0) ** 2  # prefer far goals
        if heading is not None:  # and goals ahead rather than behind
            d = reach - np.array(cur)
            cosang = (d @ heading) / np.maximum(np.linalg.norm(d, axis=1), 1e-9)
            weight = weight * (0.15 + np.clip(cosang, 0, 1))
        goal = tuple(reach[rng.choice(len(reach), p=weight / weight.sum())])
        leg = np.array(_walk_back(dist, goal), np.float64)
        if len(leg) >= 2:
            last = leg[-1] - leg[max(0, len(leg) - 6)]
            heading = last / max(np.linalg.norm(last), 1e-9)
        points.extend(leg[1:])
        total += float(np.sum(np.linalg.norm(np.diff(leg, axis=0), axis=1))) * res
        cur = goal
    rc = np.array(points)
    xy = np.stack([(rc[:, 1] + 0.5) * res, (rc[:, 0] + 0.5) * res], 1)
    # resample every 5 cm, then smooth (sigma 0.35 m)
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    keep = np.concatenate([[True], seg > 1e-9])
    xy, s = xy[keep], s[keep]
    if len(s) < 2:
        return np.repeat(xy[:1], 2, axis=0)
    grid = np.arange(0.0, s[-1], 0.05)
    xy = np.stack([np.interp(grid, s, xy[:, 0]), np.interp(grid, s, xy[:, 1])], 1)
    return _gauss_smooth(xy, 0.35 / 0.05)


def _wall_distance(
    yaw: np.ndarray, x: np.ndarray, y: np.ndarray, size_x: float, size_y: float
) -> np.ndarray:
    """Distance from (x, y) to the room's rectangle boundary along heading ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    with np.errstate(divide='ignore'):
        tx = np.where(c > 0, (size_x - x) / c, np.where(c < 0, -x / c, np.inf))
        ty = np.where(s > 0, (size_y - y) / s, np.where(s < 0, -y / s, np.inf))
    return np.minimum(tx, ty)


def _turn_from_walls(
    yaw: np.ndarray, x: np.ndarray, y: np.ndarray, size_x: float, size_y: float
) -> np.ndarray:
    """Turn the view towards the room centre when it would stare at a nearby wall."""
    ahead = _wall_distance(yaw, x, y, size_x, size_y)
    weight = np.clip((2.2 - ahead) / 1.6, 0.0, 1.0)
    to_centre = np.arctan2(size_y / 2 - y, size_x / 2 - x)
    delta = (to_centre - yaw + np.pi) % (2 * np.pi) - np.pi
    return yaw + 0.8 * weight * delta


def _look_targets(
    scene: Scene,
    rng: np.random.Generator,
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    heading: np.ndarray,
):
    """Where a curious camera operator looks: a new object of interest every 2.5-6 s, chosen
    among those ahead and not too close; the heading when there is none."""
    centres = [
        (o.footprint.mean(0)[0], o.footprint.mean(0)[1], 0.5 * (o.z0 + o.z1))
        for o in scene.objects
        if o.z0 < 2.0
    ]
    centres.append((scene.size[0] / 2, scene.size[1] / 2, 0.6))
    targets = np.array(centres, np.float64)
    yaw = heading.copy()
    pitch = np.full(len(t), np.deg2rad(rng.uniform(-20, -8)))
    start = 0
    while start < len(t):
        dur = rng.uniform(2.5, 6.0)
        stop = int(np.searchsorted(t, t[start] + dur))
        stop = max(stop, start + 1)
        dx, dy = targets[:, 0] - x[start], targets[:, 1] - y[start]
        dist = np.hypot(dx, dy)
        ang = np.arctan2(dy, dx)
        ahead = np.cos(ang - heading[start])
        weight = (ahead > 0.2) * (dist > 1.2) * (dist < 6.0) * (ahead + 0.2)
        if weight.sum() > 0:
            k = int(rng.choice(len(targets), p=weight / weight.sum()))
            seg = slice(start, stop)
            tx, ty, tz = targets[k]
            yaw[seg] = np.arctan2(ty - y[seg], tx - x[seg])
            horiz = np.maximum(np.hypot(tx - x[seg], ty - y[seg]), 0.3)
            pitch[seg] = np.arctan2(tz - z[seg], horiz)
        start = stop
    return yaw, pitch


def camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-from-camera rotation; camera optical frame (x right, y down, z forward), z-up world.

    ``pitch`` > 0 looks up, ``yaw`` is the heading of the optical axis about world z.
    """
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    r = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    d = np.cross(f, r)
    r2 = np.cos(roll) * r + np.sin(roll) * d
    d2 = -np.sin(roll) * r + np.cos(roll) * d
    return np.stack([r2, d2, f], 1)


def make_trajectory(
    scene: Scene, rng: np.random.Generator, num_frames: int, fps: float
) -> np.ndarray:
    """(num_frames, 4, 4) world-from-camera poses sampled at ``fps``."""
    if num_frames <= 0:
        return np.zeros((0, 4, 4))
    t = np.arange(num_frames) / fps
    v0 = rng.uniform(0.55, 0.9)

    def wobble(amp: float, f_lo: float, f_hi: float) -> np.ndarray:
        return amp * np.sin(2 * np.pi * rng.uniform(f_lo, f_hi) * t + rng.uniform(0, 2 * np.pi))

    speed = np.clip(v0 + wobble(0.15, 0.03, 0.1) + wobble(0.05, 0.1, 0.3), 0.45, 1.0)
    s = np.concatenate([[0.0], np.cumsum(speed[1:] / fps)])
    path = plan_path(scene, rng, float(s[-1]))
    ps = np.arange(len(path)) * 0.05
    s = np.minimum(s, ps[-1])
    x, y = np.interp(s, ps, path[:, 0]), np.interp(s, ps, path[:, 1])
    # heading from the path tangent 0.4 m ahead/behind, unwrapped and smoothed over ~0.7 s
    ahead = np.minimum(s + 0.4, ps[-1])
    behind = np.maximum(s - 0.4, 0.0)
    dx = np.interp(ahead, ps, path[:, 0]) - np.interp(behind, ps, path[:, 0])
    dy = np.interp(ahead, ps, path[:, 1]) - np.interp(behind, ps, path[:, 1])
    heading = np.unwrap(np.arctan2(dy, dx))
    heading = _gauss_smooth(heading, 0.7 * fps)
    z = rng.uniform(1.2, 1.6) + wobble(0.03, 0.02, 0.08) + wobble(0.004, 1.5, 2.0)
    look_yaw, look_pitch = _look_targets(scene, rng, t, x, y, z, heading)
    # turn the head towards things of interest, never more than 75 degrees off the heading
    off = (look_yaw - heading + np.pi) % (2 * np.pi) - np.pi
    yaw = heading + np.clip(off, -np.deg2rad(75), np.deg2rad(75))
    yaw = _turn_from_walls(yaw, x, y, scene.size[0], scene.size[1])
    yaw = _gauss_smooth(np.unwrap(yaw), 0.5 * fps) + wobble(np.deg2rad(4), 0.15, 0.35)
    pitch = _gauss_smooth(np.clip(look_pitch, np.deg2rad(-35), np.deg2rad(-4)), 0.5 * fps)
    pitch = pitch + wobble(np.deg2rad(3), 0.05, 0.2)
    roll = wobble(np.deg2rad(1.5), 0.05, 0.2)
    poses = np.zeros((num_frames, 4, 4))
    for i in range(num_frames):
        poses[i, :3, :3] = camera_rotation(yaw[i], pitch[i], roll[i])
        poses[i, :3, 3] = (x[i], y[i], z[i])
        poses[i, 3, 3] = 1.0
    return poses
