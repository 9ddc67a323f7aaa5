"""HHA on an analytic scene: a room (floor, front wall, side wall, a 30-degree ramp) seen by a
camera 1.2 m above the floor with known yaw, pitch and roll. Depth is ray-cast in closed form,
so the true height above the floor, the true surface angle and the true gravity are known per
pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rgbd_seg_ros.core import hha
from rgbd_seg_ros.core.depth import encode_depth_numpy, resolve_depth_params
from rgbd_seg_ros.core.hha import bench_hha, hha_encode, hha_geometry

CAMERA_HEIGHT = 1.2
RAMP_DEG = 30.0
# Inward-facing half-spaces n . P >= d of a convex room; per plane the angle of its normal
# with "up" (world z).
PLANES = (
    ((0.0, 0.0, 1.0), 0.0, 0.0),  # floor
    ((-1.0, 0.0, 0.0), -4.0, 90.0),  # front wall, x <= 4
    ((0.0, -1.0, 0.0), -2.5, 90.0),  # left wall, y <= 2.5
    (
        (-math.sin(math.radians(RAMP_DEG)), 0.0, math.cos(math.radians(RAMP_DEG))),
        -3.0 * math.sin(math.radians(RAMP_DEG)),
        RAMP_DEG,
    ),  # ramp from x = 3 up the front wall
)


def camera_to_world(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Columns: the optical frame's x (right), y (down), z (forward) in world coordinates."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    fwd = np.array([math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), -math.sin(p)])
    right = np.array([math.sin(y), -math.cos(y), 0.0])
    down = np.cross(fwd, right)
    right, down = (
        math.cos(r) * right + math.sin(r) * down,
        -math.sin(r) * right + math.cos(r) * down,
    )
    return np.stack([right, down, fwd], axis=1)


def room_scene(height=480, width=640, yaw=20.0, pitch=25.0, roll=5.0):
    f = 0.9 * width
    K = np.array([[f, 0.0, width / 2 - 0.5], [0.0, f, height / 2 - 0.5], [0.0, 0.0, 1.0]])
    R = camera_to_world(yaw, pitch, roll)
    C = np.array([0.0, 0.0, CAMERA_HEIGHT])
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u)], axis=-1)
    w = rays @ R.T  # world direction per unit of camera z
    t = np.full(u.shape, np.inf)
    plane = np.full(u.shape, -1)
    for index, (normal, d, _) in enumerate(PLANES):
        n = np.asarray(normal)
        denom = w @ n
        with np.errstate(divide='ignore', invalid='ignore'):
            hit = (d - n @ C) / denom
        better = (denom < 0) & (hit > 0) & (hit < t)
        t = np.where(better, hit, t)
        plane = np.where(better, index, plane)
    assert np.all(np.isfinite(t))
    points_world = C + t[..., None] * w
    truth = {
        'height': points_world[..., 2],
        'angle': np.choose(plane, [p[2] for p in PLANES]),
        'plane': plane,
        'up': R.T @ np.array([0.0, 0.0, 1.0]),  # world up in the optical frame
    }
    return t.astype(np.float32), K, truth


def interior(plane: np.ndarray, margin: int) -> np.ndarray:
    """Pixels whose whole (2 margin + 1)^2 neighbourhood lies on their own plane."""
    h, w = plane.shape
    keep = np.ones_like(plane, dtype=bool)
    padded = np.pad(plane, margin, constant_values=-2)
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            keep &= padded[dy : dy + h, dx : dx + w] == plane
    return keep


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


@pytest.fixture(scope='module')
def scene():
    return room_scene()


def test_scene_sees_every_plane(scene) -> None:
    _, _, truth = scene
    inside = interior(truth['plane'], 6)
    for index in range(len(PLANES)):
        assert (inside & (truth['plane'] == index)).sum() > 200, index


def test_gravity_is_recovered(scene) -> None:
    depth, K, truth = scene
    geo = hha_geometry(depth, K)
    assert angle_between(geo.up, truth['up']) < 0.5
    # the initial guess (camera -y) is far off: pitch 25, roll 5
    assert angle_between(np.array(hha.INITIAL_UP), truth['up']) > 20


def test_height_and_angle_match_the_scene(scene) -> None:
    depth, K, truth = scene
    geo = hha_geometry(depth, K)
    radius = resolve_depth_params('hha', None)['normal_radius_px']
    inside = interior(truth['plane'], radius + 1)
    # a gravity error of 0.5 degrees moves a point 4 m away by 3.5 cm
    assert geo.floor_level_m == pytest.approx(-CAMERA_HEIGHT, abs=0.035)
    np.testing.assert_allclose(geo.height_m[inside], truth['height'][inside], atol=0.035)
    assert geo.normal_ok[inside].all()
    for index, (_, _, angle) in enumerate(PLANES):
        sel = inside & (truth['plane'] == index)
        np.testing.assert_allclose(geo.angle_deg[sel], angle, atol=0.5)

    # the encoded channels carry the same numbers on their documented scales
    out = hha_encode(depth, K)
    assert out.shape == (3, *depth.shape) and out.dtype == np.float32
    height_cm = np.clip(truth['height'] * 100, 0, 255)
    np.testing.assert_allclose(out[1][inside] * 255, height_cm[inside], atol=3.5)
    np.testing.assert_allclose(out[2][inside] * 255, truth['angle'][inside] + 38, atol=0.5)

    # with the true gravity the height is exact up to float32 rounding
    exact = hha_geometry(depth, K, {'gravity': list(-truth['up'])})
    assert exact.floor_level_m == pytest.approx(-CAMERA_HEIGHT, abs=1e-4)
    np.testing.assert_allclose(exact.height_m, truth['height'], atol=2e-4)
    for index, (_, _, angle) in enumerate(PLANES):
        sel = inside & (truth['plane'] == index)
        np.testing.assert_allclose(exact.angle_deg[sel], angle, atol=0.1)
    exact_out = hha_encode(depth, K, {'gravity': list(-truth['up'])})
    np.testing.assert_allclose(exact_out[1] * 255, height_cm, atol=0.02)
    disparity = np.minimum(310 / np.maximum(depth, 1.0), 255)
    np.testing.assert_allclose(out[0] * 255, disparity, rtol=1e-5)


def test_explicit_gravity_and_camera_height(scene) -> None:
    depth, K, truth = scene
    params = {'gravity': list(-truth['up'] * 9.81), 'camera_height_m': CAMERA_HEIGHT}
    geo = hha_geometry(depth, K, params)
    np.testing.assert_allclose(geo.up, truth['up'], atol=1e-12)
    np.testing.assert_allclose(geo.height_m, truth['height'], atol=2e-4)
    out = encode_depth_numpy(depth, K, 'hha', params)
    np.testing.assert_allclose(out, hha_encode(depth, K, params))


def test_gravity_under_depth_noise() -> None:
    depth, K, truth = room_scene(yaw=-10.0, pitch=20.0, roll=-8.0)
    rng = np.random.default_rng(7)
    noisy = depth * (1 + 0.005 * rng.standard_normal(depth.shape)).astype(np.float32)
    noisy[rng.random(depth.shape) < 0.05] = 0
    geo = hha_geometry(noisy, K)
    assert angle_between(geo.up, truth['up']) < 3.0
    inside = interior(truth['plane'], 6) & (noisy > 0)
    floor = inside & (truth['plane'] == 0)
    assert floor.sum() > 1000 and (inside & (truth['plane'] == 1)).sum() > 1000
    assert np.median(geo.angle_deg[floor]) < 8.0  # noise alone tilts 9x11-pixel normals
    walls = inside & (truth['angle'] == 90)
    assert abs(np.median(geo.angle_deg[walls]) - 90) < 5.0
    assert np.median(np.abs(geo.height_m[inside] - truth['height'][inside])) < 0.05


def test_holes_nan_and_inf_give_finite_defined_output(scene) -> None:
    depth, K, _ = scene
    damaged = depth.copy()
    rng = np.random.default_rng(1)
    damaged[rng.random(depth.shape) < 0.2] = 0
    damaged[10:50, 20:90] = np.nan
    damaged[100:120, :] = np.inf
    damaged[200:, 300:] = -1
    damaged[60:64, 60:64] = 0  # an isolated hole larger than nothing
    out = hha_encode(damaged, K)
    assert np.all(np.isfinite(out))
    assert out.min() >= 0 and out.max() <= 1
    invalid = ~(np.isfinite(damaged) & (damaged > 0))
    np.testing.assert_array_equal(out[:, invalid], 0)
    assert np.all(out[0][~invalid] > 0)  # disparity is defined wherever depth is


def test_degenerate_inputs() -> None:
    K = np.array([[100.0, 0, 10], [0, 100.0, 8], [0, 0, 1]])
    assert not hha_encode(np.zeros((16, 20), np.float32), K).any()
    assert not hha_encode(np.full((16, 20), np.nan, np.float32), K).any()
    single = np.zeros((16, 20), np.float32)
    single[5, 5] = 2.0  # one point: disparity only, no normal
    out = hha_encode(single, K)
    assert out[0, 5, 5] > 0 and out[2, 5, 5] == 0 and np.isfinite(out).all()
    line = np.zeros((16, 20), np.float32)
    line[8, :] = 2.0  # collinear points: no plane
    geo = hha_geometry(line, K)
    assert not geo.normal_ok.any()
    tiny = hha_encode(np.full((2, 3), 1.5, np.float32), K)
    assert tiny.shape == (3, 2, 3) and np.isfinite(tiny).all()
    assert hha_encode(np.full((16, 20), 1500, np.uint16), K).shape == (3, 16, 20)


def test_floor_fallback_when_looking_at_a_wall() -> None:
    # Level camera facing a wall 2 m away, seeing only 0.3 m below itself: Gupta's rule
    # puts the ground 1.3 m below the camera.
    K = np.array([[500.0, 0, 31.5], [0, 500.0, 23.5], [0, 0, 1]])
    depth = np.full((48, 64), 2.0, np.float32)
    geo = hha_geometry(depth, K, {'gravity': [0, 1, 0]})
    assert geo.floor_level_m == pytest.approx(-1.3)
    np.testing.assert_allclose(geo.height_m[24, 32], 1.3 - 2.0 * (24 - 23.5) / 500, atol=1e-5)
    geo = hha_geometry(
        depth, K, {'gravity': [0, 1, 0], 'fallback_camera_height_m': 0.5, 'min_floor_drop_m': 0.01}
    )
    assert geo.floor_level_m == pytest.approx(-2.0 * (47 - 23.5) / 500, abs=1e-5)


def test_floor_percentile(scene) -> None:
    depth, K, truth = scene
    low = hha_geometry(depth, K, {'gravity': list(-truth['up'])})
    high = hha_geometry(depth, K, {'gravity': list(-truth['up']), 'floor_percentile': 50.0})
    assert high.floor_level_m > low.floor_level_m
    rel = low.height_m + low.floor_level_m
    assert high.floor_level_m == pytest.approx(
        float(np.percentile(rel, 50, method='lower')), abs=1e-6
    )


def test_box_sums_without_opencv(scene, monkeypatch: pytest.MonkeyPatch) -> None:
    depth, K, _ = scene
    x = np.random.default_rng(0).random((37, 53))
    for radius in (1, 3, 7):
        naive = np.zeros_like(x)
        padded = np.pad(x, radius)
        for dy in range(2 * radius + 1):
            for dx in range(2 * radius + 1):
                naive += padded[dy : dy + 37, dx : dx + 53]
        np.testing.assert_allclose(hha._box_sum_numpy(x, radius), naive, rtol=1e-10)
        np.testing.assert_allclose(hha.box_sum(x, radius), naive, rtol=1e-10)
    with_cv2 = hha_encode(depth, K)
    monkeypatch.setattr(hha, '_cv2', None)
    np.testing.assert_allclose(hha_encode(depth, K), with_cv2, atol=1e-4)  # float32 acos


def test_smallest_eigenvector() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        values = rng.uniform(-5, 5, 3)
        A = Q @ np.diag(values) @ Q.T
        expected = Q[:, np.argmin(values)]
        v = hha.smallest_eigvec_sym3(A)
        assert abs(abs(v @ expected) - 1) < 1e-9
        start = expected + 0.5 * rng.standard_normal(3)
        v = hha.smallest_eigvec_sym3(A, start)
        assert v @ expected * (start @ expected) > 0  # keeps the start's side
        assert abs(abs(v @ expected) - 1) < 1e-9


def test_bench_reports_timings() -> None:
    result = bench_hha(height=48, width=64, iters=2)
    assert result['iters'] == 2 and result['threads'] == 1
    assert 0 < result['min_ms'] <= result['median_ms']
    assert {'height', 'width', 'mean_ms', 'p90_ms', 'box_filter'} <= set(result)
