"""Depth encodings on the device (torch twin of ``rgbd_seg_ros.core.depth`` / ``core.hha``).

``encode_depth_torch(depth_m [B,1,H,W], K [B,3,3], encoding, params) -> [B,C,H,W]`` float32 in
``[0, 1]``, invalid pixels 0, for ``'metric'``, ``'jet'``, ``'hha'`` and ``'none'``. It follows
the numpy code operation by operation (same parameters, defaults and validation, same float64
/ float32 split in the HHA normals, same gravity and floor estimates), so a network trained on
numpy-encoded data sees the same inputs at run time. Agreement (``test/unit/
test_depth_torch.py``): metric and jet to 1e-6; HHA to 1e-4 on all but a handful of pixels
whose normal sits exactly on a threshold, and within 2/255 everywhere.

Everything is batched tensor maths on the input's device: no ``.item()``, no boolean
indexing, no host round trips, so it can run inside a CUDA stream (and a CUDA graph) without
synchronising. Per-image choices (gravity, floor level, per-image jet range) are made with
``torch.where``. The smallest eigenvector of the 3x3 gravity matrix uses repeated squaring
rather than ``torch.linalg.eigh``, whose error check synchronises with the host.

Cost: metric and jet are a handful of element-wise kernels. HHA at 480x640 is about 220
kernels with ``gravity`` given (from TF or an IMU) and about 980 when gravity is estimated
(10 iterations of Gupta's scheme on 3x3 matrices, each a few dozen tiny kernels): eager
launch overhead dominates on a GPU (not measured in this project's CI, which has none), so
give ``gravity`` where the robot knows it, or capture the call in a CUDA graph. On one CPU
thread the torch path takes about twice the numpy one (no OpenCV box filter).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from rgbd_seg_ros.core.depth import JET_KNOTS, depth_channels, resolve_depth_params
from rgbd_seg_ros.core.hha import (
    ANGLE_OFFSET_DEG,
    DEGENERATE_REL,
    EIG_SQUARINGS,
    GRAVITY_MIN_NORMALS,
    GRAVITY_SCHEDULE,
    INITIAL_UP,
    MIN_NORMAL_POINTS,
)
from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.modes import DepthEncoding


def _as_batch(depth_m: torch.Tensor) -> torch.Tensor:
    if depth_m.dim() == 2:
        depth_m = depth_m[None, None]
    elif depth_m.dim() == 3:
        depth_m = depth_m[:, None]
    if depth_m.dim() != 4 or depth_m.shape[1] != 1:
        raise FrameError(f'depth must be [B,1,H,W], got {tuple(depth_m.shape)}')
    return depth_m


def sanitise_depth(depth_m: torch.Tensor) -> torch.Tensor:
    """float32 metres with NaN, +-inf, 0 and negative values set to 0."""
    d = depth_m.to(torch.float32)
    return torch.where(torch.isfinite(d) & (d > 0), d, torch.zeros((), device=d.device))


def _jet(t: torch.Tensor) -> torch.Tensor:
    """matplotlib ``jet`` (continuous segment data) on t in [0, 1]: [B,1,H,W] -> [B,3,H,W]."""
    t = t.clamp(0.0, 1.0)
    channels = []
    for knots, values in JET_KNOTS:
        # piecewise-linear interpolation as a sum of ramps: y0 + sum (s_i - s_{i-1}) relu(t - x_i)
        out = torch.full_like(t, values[0])
        previous = 0.0
        for i in range(len(knots) - 1):
            slope = (values[i + 1] - values[i]) / (knots[i + 1] - knots[i])
            if slope != previous:
                out = out + (slope - previous) * torch.relu(t - knots[i])
            previous = slope
        channels.append(out)
    return torch.cat(channels, dim=1)


def _box_sums(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Window sums (zeros outside the image) of every channel of [B,C,H,W]."""
    # integral image: O(1) per pixel on every device (avg_pool2d is O(k^2) on the CPU)
    k = 2 * radius + 1
    s = F.pad(x, (radius + 1, radius, radius + 1, radius)).cumsum(-1).cumsum(-2)
    return s[..., k:, k:] - s[..., :-k, k:] - s[..., k:, :-k] + s[..., :-k, :-k]


def _smallest_eigvec(A: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """[B,3,3] symmetric (float64), [B,3] start -> [B,3] unit eigenvector of the smallest
    eigenvalue (mirror of core.hha.smallest_eigvec_sym3)."""
    eye = torch.eye(3, dtype=A.dtype, device=A.device)
    c = A.square().sum((-2, -1), keepdim=True).sqrt() + 1e-300
    B = c * eye - A
    for i in range(EIG_SQUARINGS):
        if i % 4 == 0:  # eigenvalues then lie in [0, 1], the largest >= 1/3: no underflow
            B = B / (B.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None] + 1e-300)
        B = B @ B
    v = (B @ start[:, :, None])[..., 0]
    norm: torch.Tensor = v.norm(dim=-1, keepdim=True)
    return v / (norm + 1e-300)


def _normals(
    x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, valid: torch.Tensor, radius: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror of core.hha.surface_normals, batched: [B,H,W] float64 coords -> [B,3,H,W] f32."""
    f64 = torch.float64
    stack = torch.stack([valid.to(f64), x, y, z, x * x, x * y, x * z, y * y, y * z, z * z], dim=1)
    sums = _box_sums(stack, radius)
    n = sums[:, 0]
    inv = 1.0 / n.clamp(min=1.0)
    means = sums[:, 1:4] * inv[:, None]
    mx, my, mz = means.unbind(1)
    pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    cov = [
        (sums[:, 4 + i] * inv - means[:, a] * means[:, b]).to(torch.float32)
        for i, (a, b) in enumerate(pairs)
    ]
    a, b, c, d, e, f = cov
    a00, a01, a02 = d * f - e * e, c * e - b * f, b * e - c * d
    a11, a12, a22 = a * f - c * c, b * c - a * e, a * d - b * b
    trace = a + d + f
    mx, my, mz = mx.to(torch.float32), my.to(torch.float32), mz.to(torch.float32)
    vx, vy, vz = mx, my, mz
    first_gain = None
    for step in range(2):
        nx = a00 * vx + a01 * vy + a02 * vz
        ny = a01 * vx + a11 * vy + a12 * vz
        nz = a02 * vx + a12 * vy + a22 * vz
        big = torch.maximum(torch.maximum(nx.abs(), ny.abs()), nz.abs()).clamp(min=1e-30)
        big = 1.0 / big
        nx, ny, nz = nx * big, ny * big, nz * big
        norm = torch.sqrt(nx * nx + ny * ny + nz * nz)
        scale = torch.where(norm > 0, 1.0 / torch.where(norm > 0, norm, 1.0), 0.0)
        vx, vy, vz = nx * scale, ny * scale, nz * scale
        if step == 0:
            first_gain = big
    assert first_gain is not None  # set by the loop's first step
    v0 = torch.sqrt(mx * mx + my * my + mz * mz)
    ok = valid & (n >= MIN_NORMAL_POINTS)
    ok = ok & ((1.0 / first_gain) > DEGENERATE_REL * trace * trace * v0)
    flip = torch.where(vx * mx + vy * my + vz * mz > 0, -1.0, 1.0) * ok
    return torch.stack([vx * flip, vy * flip, vz * flip], dim=1), ok


def _estimate_up(normals: torch.Tensor, ok: torch.Tensor, stride: int) -> torch.Tensor:
    """Gupta's iterative up estimate, batched: [B,3,H,W], [B,H,W] -> [B,3] float64."""
    bsz = normals.shape[0]
    N = normals[:, :, ::stride, ::stride].reshape(bsz, 3, -1).transpose(1, 2).to(torch.float64)
    keep = ok[:, ::stride, ::stride].reshape(bsz, -1)
    up = torch.zeros(bsz, 3, dtype=torch.float64, device=normals.device)
    for axis, value in enumerate(INITIAL_UP):  # fills, not a host-to-device copy
        if value:
            up[:, axis] = value
    for theta, iterations in GRAVITY_SCHEDULE:
        cos_t, sin_t = math.cos(math.radians(theta)), math.sin(math.radians(theta))
        active = torch.ones(bsz, dtype=torch.bool, device=normals.device)
        for _ in range(iterations):
            s = (N @ up[:, :, None])[..., 0].abs()
            par = (s > cos_t) & keep
            perp = (s < sin_t) & keep
            wgt = perp.to(torch.float64) - par.to(torch.float64)
            A = (N * wgt[:, :, None]).transpose(1, 2) @ N
            active = active & ((par.sum(-1) + perp.sum(-1)) >= GRAVITY_MIN_NORMALS)
            new = _smallest_eigvec(A, up)
            sign = torch.where((new * up).sum(-1, keepdim=True) >= 0, 1.0, -1.0)
            up = torch.where(active[:, None], new * sign, up)
    norm: torch.Tensor = up.norm(dim=-1, keepdim=True)
    return up / norm


def _gravity_up(gravity: Any, bsz: int, device: torch.device) -> torch.Tensor:
    g = torch.as_tensor(gravity, dtype=torch.float64, device=device).reshape(-1, 3)
    g = g.expand(bsz, 3) if g.shape[0] == 1 else g
    if g.shape[0] != bsz:
        raise FrameError(f'gravity has {g.shape[0]} rows for a batch of {bsz}')
    norm: torch.Tensor = g.norm(dim=-1, keepdim=True)
    return -g / norm


def _floor_level(height: torch.Tensor, valid: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    """[B] float32 ground level along up (mirror of core.hha.floor_level)."""
    bsz = height.shape[0]
    if p['camera_height_m'] is not None:
        return torch.full(
            (bsz,), -float(p['camera_height_m']), dtype=torch.float32, device=height.device
        )
    flat = torch.where(valid, height, float('inf')).reshape(bsz, -1)
    q = float(p['floor_percentile'])
    if q == 0.0:
        level = flat.amin(-1)
    else:
        count = valid.reshape(bsz, -1).sum(-1)
        index = torch.floor((count - 1).clamp(min=0).to(torch.float64) * (q / 100.0)).long()
        level = torch.gather(flat.sort(-1).values, 1, index[:, None])[:, 0]
    fallback = -float(p['fallback_camera_height_m'])
    return torch.where(level > -float(p['min_floor_drop_m']), fallback, level)


def _hha(depth: torch.Tensor, K: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    bsz, _, h, w = depth.shape
    d = depth[:, 0]
    valid = d > 0
    f64 = torch.float64
    K = K.to(device=d.device, dtype=f64)
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy, skew = K[:, 0, 2, None, None], K[:, 1, 2, None, None], K[:, 0, 1, None, None]
    u = torch.arange(w, dtype=f64, device=d.device)[None, None, :]
    v = torch.arange(h, dtype=f64, device=d.device)[None, :, None]
    ry = (v - cy) / fy  # [B,H,1]
    rx = (u - cx - skew * ry) / fx  # [B,H,W]
    z = d.to(f64)
    x, y = rx * z, ry * z
    normals, ok = _normals(x, y, z, valid, int(p['normal_radius_px']))
    if p['gravity'] is not None:
        up = _gravity_up(p['gravity'], bsz, d.device)
    else:
        st = int(p['gravity_stride'])
        sub = (slice(None), slice(None, None, st), slice(None, None, st))
        normals_g, ok_g = _normals(x[sub], y[sub], z[sub], valid[sub], int(p['normal_radius_px']))
        up = _estimate_up(normals_g, ok_g, 1)
    # height along up = depth * (ray . up), split into column and row terms as in numpy
    up0, up1, up2 = up[:, 0, None, None], up[:, 1, None, None], up[:, 2, None, None]
    col = ((u - cx) / fx * up0 + up2).to(torch.float32)  # [B,1,W]
    row = ((v - cy) / fy * (up1 - skew / fx * up0)).to(torch.float32)  # [B,H,1]
    height_rel = d * (col + row)
    level = _floor_level(height_rel, valid, p)

    disparity = float(p['disparity_scale']) / d.clamp(min=float(p['min_depth_m']))
    ch0 = (disparity * valid).clamp(0, 255) * (1 / 255)
    max_h = float(p['max_height_cm'])
    ch1 = ((height_rel - level[:, None, None]) * (100.0 / max_h)).clamp(0, 1) * valid
    up32 = up.to(torch.float32)
    cos_a = (
        normals[:, 0] * up32[:, 0, None, None]
        + normals[:, 1] * up32[:, 1, None, None]
        + normals[:, 2] * up32[:, 2, None, None]
    )
    angle = torch.acos(cos_a.clamp(-1.0, 1.0)) * (180.0 / math.pi)
    ch2 = (angle + ANGLE_OFFSET_DEG).clamp(0, 255) * (1 / 255) * ok
    return torch.stack([ch0, ch1, ch2], dim=1)


def encode_depth_torch(
    depth_m: torch.Tensor,
    K: torch.Tensor | None,
    encoding: DepthEncoding,
    params: Mapping[str, Any] | None = None,
    sanitised: bool = False,
) -> torch.Tensor:
    """Encode a batch of depth images (metres; 0/NaN/inf invalid) on their device.

    ``depth_m``: [B,1,H,W] (or [B,H,W], [H,W]); ``K``: [B,3,3] or [3,3] (needed by 'hha').
    ``sanitised``: ``depth_m`` is already float32 with every invalid pixel 0, as the engine's
    upload makes it; the four image-sized passes of :func:`sanitise_depth` are then skipped
    (they sit between a frame's arrival and its forward). ``depth_m`` is never modified.
    Returns float32 [B, depth_channels(encoding), H, W].
    """
    p = resolve_depth_params(encoding, params)
    depth = _as_batch(depth_m) if sanitised else sanitise_depth(_as_batch(depth_m))
    bsz = depth.shape[0]
    if encoding == 'metric':
        scale: float = 1.0 / p['max_depth_m']
        return depth.clamp(max=p['max_depth_m']).mul_(scale)
    if encoding == 'jet':
        valid = depth > 0
        lo = torch.full((bsz, 1, 1, 1), p['min_depth_m'], device=depth.device)
        hi = torch.full((bsz, 1, 1, 1), p['max_depth_m'], device=depth.device)
        if p['per_image']:
            vmin = torch.where(valid, depth, float('inf')).amin((1, 2, 3), keepdim=True)
            vmax = torch.where(valid, depth, float('-inf')).amax((1, 2, 3), keepdim=True)
            has = valid.any((1, 2, 3), keepdim=True)
            lo, hi = torch.where(has, vmin, lo), torch.where(has, vmax, hi)
        span = (hi - lo).clamp(min=1e-6)
        t = (depth - lo) * (1.0 / span)
        return _jet(t) * valid
    if encoding == 'hha':
        if K is None:
            raise FrameError("depth encoding 'hha' needs the camera intrinsics K")
        K = torch.as_tensor(K)
        if K.dim() == 2:
            K = K[None].expand(bsz, 3, 3)
        if tuple(K.shape) != (bsz, 3, 3):
            raise FrameError(f'K must be [B,3,3] for a batch of {bsz}, got {tuple(K.shape)}')
        return _hha(depth, K, p)
    depth_channels(encoding)
    return depth.new_zeros((bsz, 0, *depth.shape[2:]))
