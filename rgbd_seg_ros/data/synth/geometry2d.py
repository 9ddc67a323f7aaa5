"""Small 2-D helpers for floor-plan placement: oriented rectangles and convex polygons."""

from __future__ import annotations

import numpy as np


def rect(center, half_x: float, half_y: float, yaw: float) -> np.ndarray:
    """Corners (4, 2) of a rectangle with half sizes along its local x/y, rotated by ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[-half_x, -half_y], [half_x, -half_y], [half_x, half_y], [-half_x, half_y]])
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + np.asarray(center, np.float64)[:2]


def _axes(poly: np.ndarray) -> np.ndarray:
    edges = np.roll(poly, -1, axis=0) - poly
    normals = np.stack([-edges[:, 1], edges[:, 0]], 1)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def overlap(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    """True when convex polygons ``a`` and ``b`` come closer than ``margin`` (SAT test)."""
    for axis in np.concatenate([_axes(a), _axes(b)]):
        pa, pb = a @ axis, b @ axis
        if pa.max() + margin <= pb.min() or pb.max() + margin <= pa.min():
            return False
    return True


def inside(inner: np.ndarray, outer: np.ndarray, margin: float = 0.0) -> bool:
    """True when every corner of ``inner`` lies in convex ``outer`` (CCW), ``margin`` inside."""
    edges = np.roll(outer, -1, axis=0) - outer
    rel = inner[:, None, :] - outer[None, :, :]
    cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
    lengths = np.linalg.norm(edges, axis=1)[None]
    return bool(np.all(cross / lengths >= margin))


def rasterise(poly: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boolean grid (len(ys), len(xs)) of cell centres inside convex CCW ``poly``."""
    gx, gy = np.meshgrid(xs, ys)
    mask = np.ones(gx.shape, bool)
    for i in range(len(poly)):
        p, q = poly[i], poly[(i + 1) % len(poly)]
        mask &= (q[0] - p[0]) * (gy - p[1]) - (q[1] - p[1]) * (gx - p[0]) >= 0
    return mask
