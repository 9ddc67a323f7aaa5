"""Pinhole back-projection of depth images to point clouds, and intrinsics for resized images.

Frame: the camera's optical frame (x right, y down, z forward, metres), as in ROS
``*_optical_frame``. Pixel ``(u, v)`` (column, row) has its centre at integer coordinates, the
``sensor_msgs/CameraInfo`` convention.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from rgbd_seg_ros.errors import FrameError


def check_intrinsics(K: np.ndarray) -> np.ndarray:
    """``K`` as a float64 3x3 array; ``FrameError`` unless it is a usable pinhole matrix."""
    K = np.asarray(K, dtype=np.float64)
    if K.size == 9:
        K = K.reshape(3, 3)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise FrameError(f'invalid camera intrinsics K: {K.tolist()}')
    return K


@lru_cache(maxsize=16)
def _rays(
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    skew: float,
    height: int,
    width: int,
    stride: int,
) -> tuple[np.ndarray, np.ndarray]:
    """x/z and y/z of each (strided) pixel, float32, read-only (shared by every call)."""
    u = np.arange(0, width, stride, dtype=np.float64)
    v = np.arange(0, height, stride, dtype=np.float64)
    ry = ((v - cy) / fy)[:, None]
    rx = (u[None, :] - cx - skew * ry) / fx
    rx = np.ascontiguousarray(np.broadcast_to(rx, (len(v), len(u))), dtype=np.float32)
    ry = np.ascontiguousarray(np.broadcast_to(ry, (len(v), len(u))), dtype=np.float32)
    rx.flags.writeable = False
    ry.flags.writeable = False
    return rx, ry


def pixel_rays(
    K: np.ndarray, height: int, width: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Cached per (K, shape, stride): x/z and y/z of every (strided) pixel, float32."""
    K = check_intrinsics(K)
    return _rays(
        float(K[0, 0]),
        float(K[1, 1]),
        float(K[0, 2]),
        float(K[1, 2]),
        float(K[0, 1]),
        int(height),
        int(width),
        int(stride),
    )


def backproject(depth_m: np.ndarray, K: np.ndarray, stride: int = 1) -> np.ndarray:
    """Depth (metres, 0/NaN/inf/negative = invalid) -> float32 ``h x w x 3`` points.

    ``h, w = ceil(H / stride), ceil(W / stride)`` (pixels ``[::stride, ::stride]``); invalid
    pixels are NaN in all three coordinates, the PointCloud2 convention for organised clouds.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise FrameError(f'depth must be H x W, got shape {depth_m.shape}')
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f'stride must be a positive integer, got {stride!r}')
    height, width = depth_m.shape
    rx, ry = pixel_rays(K, height, width, stride)
    z = depth_m[::stride, ::stride]
    if z.dtype != np.float32:
        if np.issubdtype(z.dtype, np.integer):
            raise FrameError(
                'backproject expects depth in metres (float); use depth_to_metres first'
            )
        z = z.astype(np.float32)
    invalid = ~(z > 0) | np.isinf(z)
    z = np.where(invalid, np.float32(np.nan), z)
    out = np.empty((*z.shape, 3), dtype=np.float32)
    np.multiply(rx, z, out=out[..., 0])
    np.multiply(ry, z, out=out[..., 1])
    out[..., 2] = z
    return out


def scale_intrinsics(
    K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]
) -> np.ndarray:
    """Intrinsics of an image resized from ``from_size`` to ``to_size``, both (height, width).

    Exact for resizes that map pixel centres as ``cv2.resize`` and
    ``F.interpolate(align_corners=False)`` do: ``u' = (u + 0.5) * sx - 0.5``, so
    ``fx' = fx * sx`` and ``cx' = (cx + 0.5) * sx - 0.5`` (likewise for y; skew scales by sx).
    """
    K = check_intrinsics(K)
    (h0, w0), (h1, w1) = from_size, to_size
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f'sizes must be positive, got {from_size} -> {to_size}')
    sx, sy = w1 / w0, h1 / h0
    out: np.ndarray = K.copy()
    out[0, 0] = K[0, 0] * sx
    out[0, 1] = K[0, 1] * sx
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 1] = K[1, 1] * sy
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def scale_camera_matrix(
    M: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]
) -> np.ndarray:
    """K (3x3) or P (3x4) of an image resized from ``from_size`` to ``to_size`` (height, width).

    The same pixel-centre rule as :func:`scale_intrinsics`, written as the image-plane map
    ``S`` applied on the left, so P's translation column (a stereo baseline times fx) scales
    with the focal lengths. No validity check: a published camera_info may carry a zero K.
    """
    (h0, w0), (h1, w1) = from_size, to_size
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f'sizes must be positive, got {from_size} -> {to_size}')
    sx, sy = w1 / w0, h1 / h0
    S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    out: np.ndarray = S @ np.asarray(M, dtype=np.float64)
    return out
