"""HHA depth encoding (Gupta, Girshick, Arbelaez, Malik, ECCV 2014), vectorised numpy.

Three channels per pixel, computed from metric depth and the pinhole intrinsics ``K``:

1. **Horizontal disparity**: ``disparity_scale / max(depth, min_depth_m)``
   (Gupta's ``31000 / depth_cm`` with depth floored at 1 m: defaults 310 and 1.0).
2. **Height above ground** in centimetres. The ground is ``camera_height_m`` below the camera
   when given (a robot usually knows it); otherwise it is the ``floor_percentile`` percentile
   of the points' heights along gravity (Gupta: the lowest point), and when that lies less than
   ``min_floor_drop_m`` below the camera it is assumed to be ``fallback_camera_height_m`` below
   (Gupta's 0.9 m and 1.3 m).
3. **Angle** in degrees between the local surface normal (oriented towards the camera) and
   the "up" direction, offset by +38 like Gupta's ``angle + 128 - 90`` (floor 38, walls 128).

Scaling (fixed, so training and inference agree): each channel is clipped to ``[0, 255]``
(height to ``[0, max_height_cm]``) and divided by 255 (height by ``max_height_cm``), giving
float32 in ``[0, 1]``. Multiply by 255 and round to get Gupta's uint8 images. Pixels without
valid depth are 0 in all three channels; pixels with depth but no defined normal (fewer than
``MIN_NORMAL_POINTS`` valid neighbours, or collinear ones) have 0 in the angle channel.

Normals: the total-least-squares plane of the valid points in a ``(2r+1)^2`` window
(``r = normal_radius_px``), as in Gupta's ``computeNormalsSquareSupport``: the window sums of
``1, p, p p^T`` come from box filters (integral images), the per-pixel 3x3 covariance's
smallest-eigenvalue eigenvector is found in closed form by two steps of inverse iteration
with the covariance's adjugate, started from the viewing ray (exact after one step for
noise-free planes; the error shrinks by ``lambda_min / lambda_mid`` per step otherwise).

Gravity: given as ``gravity`` (the direction gravity pulls, i.e. "down", in the camera's
optical frame, e.g. ``[0, 1, 0]`` for a level camera; from an IMU or TF), or estimated from
the normals with Gupta et al.'s iterative scheme (``getYDir``): start from the camera's
``-y`` axis; repeatedly collect normals within ``theta`` of parallel (floors, table tops,
ceilings) and within ``theta`` of perpendicular (walls) to the current estimate, and take the
direction minimising ``sum (n_wall . g)^2 - sum (n_floor . g)^2`` (smallest eigenvector of
a 3x3 matrix); ``theta`` = 45 degrees for 5 iterations, then 15 degrees for 5 more. The
normals for this step are computed on the point cloud subsampled by ``gravity_stride`` in
both directions (same window in samples, so ``gravity_stride`` times the support): depth noise
biases small-support normals towards the viewing ray, and on the analytic test room with 0.5 %
depth noise this keeps the gravity error near 1 degree where full-resolution normals are
several degrees off.

Everything here is mirrored, operation by operation, by ``rgbd_seg_ros.inference.
depth_encoding`` in torch; keep them in step.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rgbd_seg_ros.core.depth_params import resolve_depth_params
from rgbd_seg_ros.core.depth_units import depth_to_metres
from rgbd_seg_ros.errors import FrameError

ANGLE_OFFSET_DEG = 38.0  # Gupta: angle + 128 - 90
MIN_NORMAL_POINTS = 6
GRAVITY_SCHEDULE: tuple[tuple[float, int], ...] = ((45.0, 5), (15.0, 5))
GRAVITY_MIN_NORMALS = 10
EIG_SQUARINGS = 16  # (||A|| I - A)^65536: converges unless two eigenvalues nearly tie
DEGENERATE_REL = 1e-9  # |adj(C) v| below this x trace(C)^2 |v|: no plane (collinear points)
INITIAL_UP = (0.0, -1.0, 0.0)  # optical frame: y points down in the image

try:  # OpenCV's box filter is the fastest; the integral-image fallback gives the same sums.
    import cv2 as _cv2
except ImportError:  # pragma: no cover - exercised by forcing _cv2 = None in the tests
    _cv2 = None  # type: ignore[assignment]  # the numpy fallback; cv2's own types stay in use


@dataclass
class HHAGeometry:
    """The physical quantities behind the three HHA channels (for tests and inspection)."""

    valid: np.ndarray  # H x W bool, depth usable
    normals: np.ndarray  # H x W x 3 float32 unit normals towards the camera, 0 where undefined
    normal_ok: np.ndarray  # H x W bool
    up: np.ndarray  # (3,) float64 unit "up" (minus gravity) in the camera frame
    floor_level_m: float  # height of the ground along ``up`` relative to the camera
    disparity: np.ndarray  # H x W float32, disparity_scale / max(depth, min_depth_m)
    height_m: np.ndarray  # H x W float32, height above the ground
    angle_deg: np.ndarray  # H x W float32, angle between normal and up; 0 where undefined


def _box_sum_numpy(image: np.ndarray, radius: int) -> np.ndarray:
    """Integral-image box sum (no OpenCV): zero padding, then one 2-D cumulative sum."""
    k = 2 * radius + 1
    h, w = image.shape
    padded = np.zeros((h + 2 * radius + 1, w + 2 * radius + 1), dtype=image.dtype)
    padded[radius + 1 : radius + 1 + h, radius + 1 : radius + 1 + w] = image
    integral = padded.cumsum(axis=0).cumsum(axis=1)
    sums: np.ndarray = (
        integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k]
    )
    return sums


def box_sum(image: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the ``(2r+1)^2`` window around each pixel, zeros outside the image."""
    if _cv2 is not None:
        k = 2 * radius + 1
        return _cv2.boxFilter(image, -1, (k, k), normalize=False, borderType=_cv2.BORDER_CONSTANT)
    return _box_sum_numpy(image, radius)


def backproject_zero(depth_m: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, ...]:
    """x, y, z (float64, H x W) in the optical frame; 0 where depth is 0."""
    h, w = depth_m.shape
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    z = depth_m.astype(np.float64)
    ry = (np.arange(h, dtype=np.float64) - cy) / fy
    rx = (np.arange(w, dtype=np.float64)[None, :] - cx - skew * ry[:, None]) / fx
    return rx * z, ry[:, None] * z, z


def surface_normals(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, valid: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (3 x H x W float32, towards the camera) of the local TLS planes, and the
    mask of pixels where one is defined. ``x, y, z`` (float64) are 0 at invalid pixels.

    Window sums and the covariance are float64 (the covariance subtracts nearly equal
    numbers); the adjugate and the inverse iteration run in float32.
    """
    f64 = np.float64
    n = box_sum(valid.astype(f64), radius)
    inv = 1.0 / np.maximum(n, 1.0)
    coords = (x, y, z)
    means = []
    for c in coords:
        m = box_sum(c, radius)
        m *= inv
        means.append(m)
    buf = np.empty_like(x)
    cov = []
    for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)):
        np.multiply(coords[i], coords[j], out=buf)
        s = box_sum(buf, radius)
        s *= inv
        np.multiply(means[i], means[j], out=buf)
        s -= buf
        cov.append(s.astype(np.float32))
    a, b, c, d, e, f = cov  # covariance entries: a b c / b d e / c e f
    mx, my, mz = (m.astype(np.float32) for m in means)
    del means, buf
    # adjugate (proportional to the inverse): its dominant eigenvector is C's smallest
    a00 = d * f
    a00 -= e * e
    a01 = c * e
    a01 -= b * f
    a02 = b * e
    a02 -= c * d
    a11 = a * f
    a11 -= c * c
    a12 = b * c
    a12 -= a * e
    a22 = a * d
    a22 -= b * b
    trace = a + d + f
    del a, b, c, d, e, f, cov
    vx, vy, vz = mx, my, mz  # start: the viewing ray through the window's centroid
    norm = trace
    for _ in range(2):
        nx = a00 * vx
        nx += a01 * vy
        nx += a02 * vz
        ny = a01 * vx
        ny += a11 * vy
        ny += a12 * vz
        nz = a02 * vx
        nz += a12 * vy
        nz += a22 * vz
        # rescale before squaring: adjugate entries are ~ spread^4 and would underflow
        big = np.maximum(np.maximum(np.abs(nx), np.abs(ny)), np.abs(nz))
        big = np.maximum(big, np.float32(1e-30), out=big)
        np.divide(1.0, big, out=big)
        nx *= big
        ny *= big
        nz *= big
        norm = np.sqrt(nx * nx + ny * ny + nz * nz)
        scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
        vx, vy, vz = nx * scale, ny * scale, nz * scale
        if _ == 0:
            first_gain = big  # 1 / max|adj(C) v0|, v0 = centroid (not unit)
    # degenerate (collinear or too few points): adj(C) v ~ 0 relative to trace^2 |v0|
    v0 = np.sqrt(mx * mx + my * my + mz * mz)
    ok = valid & (n >= MIN_NORMAL_POINTS)
    ok &= (1.0 / first_gain) > np.float32(DEGENERATE_REL) * trace * trace * v0
    # orient towards the camera (against the viewing ray)
    flip = np.where(vx * mx + vy * my + vz * mz > 0, np.float32(-1), np.float32(1))
    flip *= ok
    return np.stack([vx * flip, vy * flip, vz * flip]), ok


def smallest_eigvec_sym3(A: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Unit eigenvector of the smallest eigenvalue of a symmetric 3x3 matrix (float64).

    ``B = ||A||_F I - A`` is positive semi-definite with A's smallest eigenvalue as its
    largest; ``B^(2^EIG_SQUARINGS)`` (repeated squaring, rescaled by its trace every 4
    squarings) applied to ``start`` (default: its largest column) is that eigenvector unless
    the two smallest eigenvalues of A nearly tie. The torch twin does the same batched, where
    ``torch.linalg.eigh`` would synchronise with the host.
    """
    A = np.asarray(A, dtype=np.float64)
    c = np.sqrt(np.sum(A * A)) + 1e-300
    B = c * np.eye(3) - A
    for i in range(EIG_SQUARINGS):
        if i % 4 == 0:  # eigenvalues then lie in [0, 1], the largest >= 1/3: no underflow
            B = B / (np.trace(B) + 1e-300)
        B = B @ B
    if start is None:
        start = B[:, int(np.argmax(np.sum(B * B, axis=0)))]
    v = B @ np.asarray(start, dtype=np.float64)
    unit: np.ndarray = v / (np.linalg.norm(v) + 1e-300)
    return unit


def estimate_up(
    normals: np.ndarray,
    normal_ok: np.ndarray,
    stride: int = 4,
    initial: tuple[float, float, float] = INITIAL_UP,
) -> np.ndarray:
    """Gupta et al.'s iterative "up" (minus gravity) estimate from surface normals."""
    sub = normals[:, ::stride, ::stride].reshape(3, -1)
    keep = normal_ok[::stride, ::stride].reshape(-1)
    N = sub[:, keep].T  # M x 3
    up = np.asarray(initial, dtype=np.float64)
    for theta, iterations in GRAVITY_SCHEDULE:
        cos_t, sin_t = math.cos(math.radians(theta)), math.sin(math.radians(theta))
        for _ in range(iterations):
            s = np.abs(N @ up)
            par = (s > cos_t).astype(np.float64)
            perp = (s < sin_t).astype(np.float64)
            wgt = perp - par
            A = (N * wgt[:, None]).T @ N
            if par.sum() + perp.sum() < GRAVITY_MIN_NORMALS:
                break
            new = smallest_eigvec_sym3(A, up)
            up = new * (1.0 if float(new @ up) >= 0 else -1.0)
    unit: np.ndarray = up / np.linalg.norm(up)
    return unit


def floor_level(height: np.ndarray, valid: np.ndarray, params: Mapping[str, Any]) -> float:
    """Height of the ground along "up" relative to the camera (negative below it)."""
    if params['camera_height_m'] is not None:
        return -float(params['camera_height_m'])
    values = height[valid]
    if values.size == 0:
        return -float(params['fallback_camera_height_m'])
    q = float(params['floor_percentile'])
    if q == 0.0:
        level = float(values.min())
    else:
        index = math.floor((values.size - 1) * (q / 100.0))
        level = float(np.partition(values, index)[index])
    if level > -float(params['min_floor_drop_m']):
        level = -float(params['fallback_camera_height_m'])
    return level


def _prepare(
    depth_m: np.ndarray, K: np.ndarray, params: Mapping[str, Any] | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    p = resolve_depth_params('hha', params)
    K = np.asarray(K, dtype=np.float64)
    if (
        K.size != 9
        or not np.all(np.isfinite(K))
        or K.reshape(3, 3)[0, 0] <= 0
        or K.reshape(3, 3)[1, 1] <= 0
    ):
        raise FrameError(f'invalid camera intrinsics K: {K.tolist()}')
    depth = np.asarray(depth_m)
    if depth.dtype != np.float32 or not bool(np.all(np.isfinite(depth))) or depth.min() < 0:
        depth = depth_to_metres(depth.astype(np.float32, copy=False))
    return depth, K.reshape(3, 3), p


def _core(
    depth: np.ndarray, K: np.ndarray, p: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
    """valid, normals (3xHxW), normal_ok, up, floor level, height along up (float32)."""
    valid = depth > 0
    x, y, z = backproject_zero(depth, K)
    normals, ok = surface_normals(x, y, z, valid, int(p['normal_radius_px']))
    if p['gravity'] is not None:
        g = np.asarray(p['gravity'], dtype=np.float64).reshape(-1, 3)[0]
        up = -g / np.linalg.norm(g)
    else:
        # normals of the subsampled cloud: same window in samples, `stride` times the support
        stride = int(p['gravity_stride'])
        sub = (slice(None, None, stride), slice(None, None, stride))
        normals_g, ok_g = surface_normals(
            np.ascontiguousarray(x[sub]),
            np.ascontiguousarray(y[sub]),
            np.ascontiguousarray(z[sub]),
            np.ascontiguousarray(valid[sub]),
            int(p['normal_radius_px']),
        )
        up = estimate_up(normals_g, ok_g, 1)
    # height along up = depth * (ray . up); ray . up separates into a row and a column term
    h, w = depth.shape
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    ry = (np.arange(h, dtype=np.float64) - cy) / fy
    col = (np.arange(w, dtype=np.float64) - cx) / fx * up[0] + up[2]
    row = ry * (up[1] - skew / fx * up[0])
    ray_up = col[None, :].astype(np.float32) + row[:, None].astype(np.float32)
    height_rel = np.multiply(depth, ray_up, out=ray_up)
    level = floor_level(height_rel, valid, p)
    return valid, normals, ok, up, level, height_rel


def _angle_deg(normals: np.ndarray, up: np.ndarray) -> np.ndarray:
    u = up.astype(np.float32)
    cos_a = normals[0] * u[0]
    cos_a += normals[1] * u[1]
    cos_a += normals[2] * u[2]
    np.clip(cos_a, -1.0, 1.0, out=cos_a)
    angle: np.ndarray = np.arccos(cos_a, out=cos_a)
    angle *= np.float32(180.0 / math.pi)
    return angle


def _disparity(depth: np.ndarray, valid: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    disparity: np.ndarray = np.maximum(depth, np.float32(p['min_depth_m']))
    np.divide(np.float32(p['disparity_scale']), disparity, out=disparity)
    disparity *= valid
    return disparity


def hha_geometry(
    depth_m: np.ndarray, K: np.ndarray, params: Mapping[str, Any] | None = None
) -> HHAGeometry:
    """Normals, gravity, disparity, height and angle of a depth image (metres, 0/NaN/inf
    invalid). ``params`` as in ``DEPTH_PARAM_DEFAULTS['hha']``."""
    depth, K, p = _prepare(depth_m, K, params)
    valid, normals, ok, up, level, height_rel = _core(depth, K, p)
    height = height_rel - np.float32(level)
    height *= valid
    angle = _angle_deg(normals, up)
    angle *= ok
    return HHAGeometry(
        valid,
        normals.transpose(1, 2, 0),
        ok,
        up,
        level,
        _disparity(depth, valid, p),
        height,
        angle,
    )


def hha_encode(
    depth_m: np.ndarray, K: np.ndarray, params: Mapping[str, Any] | None = None
) -> np.ndarray:
    """HHA as float32 3 x H x W in [0, 1] (see the module docstring for the scaling)."""
    depth, K, p = _prepare(depth_m, K, params)
    valid, normals, ok, up, level, height_rel = _core(depth, K, p)
    out = np.empty((3, *depth.shape), dtype=np.float32)
    disparity = _disparity(depth, valid, p)
    np.clip(disparity, 0, 255, out=out[0])
    out[0] *= np.float32(1 / 255)
    max_h = np.float32(p['max_height_cm'])
    height_rel -= np.float32(level)
    height_rel *= np.float32(100.0 / max_h)
    np.clip(height_rel, 0, 1, out=out[1])
    out[1] *= valid
    angle = _angle_deg(normals, up)
    angle += np.float32(ANGLE_OFFSET_DEG)
    np.clip(angle, 0, 255, out=out[2])
    out[2] *= np.float32(1 / 255)
    out[2] *= ok
    return out


def synthetic_room(
    height: int = 480,
    width: int = 640,
    camera_height_m: float = 1.2,
    pitch_deg: float = 20.0,
    roll_deg: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A floor and a wall 4 m ahead seen by a pitched, rolled camera: (depth_m, K, up)."""
    f = 0.9 * width
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    th, ph = math.radians(pitch_deg), math.radians(roll_deg)
    fwd = np.array([math.cos(th), 0.0, -math.sin(th)])
    right = np.array([0.0, -1.0, 0.0])
    down = np.cross(fwd, right)
    right, down = (
        math.cos(ph) * right + math.sin(ph) * down,
        -math.sin(ph) * right + math.cos(ph) * down,
    )
    R = np.stack([right, down, fwd], axis=1)  # camera -> world
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u)], axis=-1)
    w = rays @ R.T
    t = np.full(u.shape, np.inf)
    for normal, d in (((0.0, 0.0, 1.0), 0.0), ((-1.0, 0.0, 0.0), -4.0)):
        n = np.asarray(normal)
        denom = w @ n
        hit = (d - n @ np.array([0.0, 0.0, camera_height_m])) / np.where(denom < 0, denom, -1)
        t = np.where((denom < 0) & (hit > 0), np.minimum(t, hit), t)
    depth = np.where(np.isfinite(t), t, 0).astype(np.float32)
    return depth, K, R.T @ np.array([0.0, 0.0, 1.0])


def bench_hha(height: int = 480, width: int = 640, iters: int = 20) -> dict[str, Any]:
    """Time ``hha_encode`` (normals, gravity and floor estimated) on one CPU thread.

    The input is ``synthetic_room`` with 0.3 % depth noise and 2 % holes. ``*_ms`` are wall
    clock; ``median_cpu_ms`` is the thread's CPU time, which a busy machine inflates less.
    """
    depth, K, _ = synthetic_room(height, width)
    rng = np.random.default_rng(0)
    depth = depth * (1 + 0.003 * rng.standard_normal(depth.shape)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.02] = 0  # holes
    threads = None
    if _cv2 is not None:
        threads = _cv2.getNumThreads()
        _cv2.setNumThreads(1)
    try:
        hha_encode(depth, K)  # warm-up
        times, cpu = [], []
        for _ in range(max(1, iters)):
            start, start_cpu = time.perf_counter(), time.thread_time()
            hha_encode(depth, K)
            times.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.thread_time() - start_cpu) * 1e3)
    finally:
        if threads is not None:
            _cv2.setNumThreads(threads)
    times.sort()
    return {
        'name': 'hha_numpy',
        'height': height,
        'width': width,
        'iters': len(times),
        'threads': 1,
        'box_filter': 'opencv' if _cv2 is not None else 'numpy',
        'median_ms': statistics.median(times),
        'mean_ms': statistics.fmean(times),
        'min_ms': times[0],
        'p90_ms': times[min(len(times) - 1, int(0.9 * len(times)))],
        'median_cpu_ms': statistics.median(cpu),  # this thread's CPU time: robust to load
    }
