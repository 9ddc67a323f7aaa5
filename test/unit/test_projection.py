"""Back-projection against hand-computed points, and intrinsics for resized images."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rgbd_seg_ros.core.projection import backproject, pixel_rays, scale_intrinsics
from rgbd_seg_ros.errors import FrameError

K = np.array([[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])


def test_hand_computed_points() -> None:
    depth = np.zeros((480, 640), np.float32)
    depth[240, 320] = 2.0  # principal point: on the optical axis
    depth[0, 0] = 1.0
    depth[479, 639] = 4.0
    depth[100, 500] = 3.0
    pts = backproject(depth, K)
    assert pts.shape == (480, 640, 3) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[240, 320], [0.0, 0.0, 2.0])
    np.testing.assert_allclose(pts[0, 0], [-320 / 500, -240 / 400, 1.0], rtol=1e-6)
    np.testing.assert_allclose(pts[479, 639], [4 * 319 / 500, 4 * 239 / 400, 4.0], rtol=1e-6)
    np.testing.assert_allclose(pts[100, 500], [3 * 180 / 500, 3 * -140 / 400, 3.0], rtol=1e-6)
    # everything else is invalid: NaN in all coordinates
    valid = ~np.isnan(pts).any(-1)
    assert valid.sum() == 4
    assert np.isnan(pts[~valid]).all()


def test_invalid_values_and_skew() -> None:
    depth = np.array([[np.nan, np.inf, -1.0, 0.0, 2.0]], np.float32)
    Ks = np.array([[100.0, 5.0, 2.0], [0.0, 100.0, 0.0], [0.0, 0.0, 1.0]])
    pts = backproject(depth, Ks)
    assert np.isnan(pts[0, :4]).all()
    # u = fx X + s Y + cx with Y = 0 on row 0: X = (4 - 2) / 100
    np.testing.assert_allclose(pts[0, 4], [2 * 0.02, 0.0, 2.0], rtol=1e-6)
    depth2 = np.full((3, 3), 1.0, np.float32)
    pts2 = backproject(depth2, Ks)
    Y = (2 - 0) / 100
    np.testing.assert_allclose(pts2[2, 1], [(1 - 2 - 5 * Y) / 100, Y, 1.0], rtol=1e-6)
    with pytest.raises(FrameError):
        backproject(np.ones((2, 2), np.uint16), K)
    with pytest.raises(FrameError):
        backproject(np.ones((2, 2), np.float32), np.eye(2))
    with pytest.raises(ValueError):
        backproject(np.ones((2, 2), np.float32), K, stride=0)


def test_stride_picks_every_nth_pixel() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 5, (48, 64)).astype(np.float32)
    full = backproject(depth, K)
    for stride in (2, 3, 5):
        sub = backproject(depth, K, stride=stride)
        np.testing.assert_array_equal(sub, full[::stride, ::stride])


def test_rays_are_cached_and_fast() -> None:
    a = pixel_rays(K, 480, 640)
    b = pixel_rays(K.copy(), 480, 640)
    assert a[0] is b[0]
    assert not a[0].flags.writeable
    depth = np.random.default_rng(0).uniform(0.5, 5, (480, 640)).astype(np.float32)
    backproject(depth, K)
    start = time.perf_counter()
    for _ in range(5):
        backproject(depth, K)
    per_call = (time.perf_counter() - start) / 5
    assert per_call < 0.1  # a few ms normally; generous for loaded CI machines


def test_scale_intrinsics_maps_pixel_centres() -> None:
    K2 = scale_intrinsics(K, (480, 640), (240, 320))
    np.testing.assert_allclose(K2, [[250, 0, 159.75], [0, 200, 119.75], [0, 0, 1]])
    # a 3D point projects to the pixel that cv2.resize / F.interpolate maps it to
    point = np.array([0.3, -0.2, 2.0])
    u0, v0, _ = K @ point / point[2]
    u1, v1, _ = K2 @ point / point[2]
    assert u1 == pytest.approx((u0 + 0.5) * 0.5 - 0.5)
    assert v1 == pytest.approx((v0 + 0.5) * 0.5 - 0.5)
    np.testing.assert_allclose(scale_intrinsics(K2, (240, 320), (480, 640)), K)
    np.testing.assert_allclose(scale_intrinsics(K, (480, 640), (480, 640)), K)
    with pytest.raises(ValueError):
        scale_intrinsics(K, (0, 640), (240, 320))
