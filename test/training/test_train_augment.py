"""Joint augmentation: depth follows the zoom only when asked, labels stay in the id set, skew
moves every modality alike, vignetting and jitter touch colour only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rgbd_seg_ros.training.augment import (
    Frame,
    augment_frame,
    photometric,
    resize_frame,
    sample_skew,
)
from rgbd_seg_ros.training.config import AugmentConfig

IGNORE = 255


def _frame(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (h // 8, w // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    depth = (1.0 + labels.astype(np.float32)) * 1.5  # depth is a function of the label
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    return Frame(rgb, depth, labels, K)


def _cfg(**kw):
    base = dict(crop=None, scale=[1.0, 1.0], rotation_deg=0.0, hflip=False)
    base.update(kw)
    return AugmentConfig(**base)


@pytest.mark.parametrize('zoom', [0.5, 1.6, 2.0])
def test_depth_divided_by_zoom(zoom):
    f = _frame()
    cfg = _cfg(scale_set=[zoom], depth_follows_scale=True)
    out = augment_frame(f, cfg, np.random.default_rng(1), IGNORE)
    valid = (out.labels != IGNORE) & (out.depth_m > 0)
    assert valid.mean() > 0.2
    # every valid pixel keeps depth(label) / zoom
    expected = (1.0 + out.labels[valid].astype(np.float32)) * 1.5 / zoom
    np.testing.assert_allclose(out.depth_m[valid], expected, rtol=1e-6)
    # intrinsics follow the warp: focal lengths times the zoom
    assert np.isclose(out.K[0, 0], 50.0 * zoom) and np.isclose(out.K[1, 1], 50.0 * zoom)


def test_depth_unchanged_when_disabled():
    f = _frame()
    out = augment_frame(
        f, _cfg(scale_set=[2.0], depth_follows_scale=False), np.random.default_rng(1), IGNORE
    )
    valid = out.labels != IGNORE
    np.testing.assert_allclose(out.depth_m[valid], (1.0 + out.labels[valid]) * 1.5, rtol=1e-6)


def test_depth_only_resized_by_default():
    """Only depth-aware gating scales depth with the zoom; by default depth is only resized."""
    assert AugmentConfig().depth_follows_scale is False
    f = _frame()
    cfg = AugmentConfig(crop=None, scale_set=[1.7], rotation_deg=0.0, hflip=False)
    out = augment_frame(f, cfg, np.random.default_rng(2), IGNORE)
    valid = out.labels != IGNORE
    assert valid.mean() > 0.5
    np.testing.assert_allclose(out.depth_m[valid], (1.0 + out.labels[valid]) * 1.5, rtol=1e-6)


def _label_coloured_frame(seed: int = 0) -> Frame:
    """Colour, depth and labels all functions of the label, so alignment is checkable."""
    f = _frame(seed=seed)
    rgb = np.zeros((*f.labels.shape, 3), np.uint8)
    rgb[..., 0] = f.labels * 60
    rgb[..., 1] = 255 - f.labels * 50
    rgb[..., 2] = 100
    return Frame(rgb, f.depth_m, f.labels, f.K)


def _interior(labels: np.ndarray, r: int = 2) -> np.ndarray:
    """Pixels whose (2r+1)^2 neighbourhood holds one label: the bilinear footprint of their
    source point lies inside one label region, so their colour is that label's exactly."""
    h, w = labels.shape
    pad = np.pad(labels, r, constant_values=IGNORE)  # the frame's edge blends with the fill
    same = np.ones(labels.shape, bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= pad[dy : dy + h, dx : dx + w] == labels
    return same


def test_skew_moves_colour_depth_and_labels_alike():
    f = _label_coloured_frame()
    cfg = _cfg(skew=[0.05, 0.10])
    rng = np.random.default_rng(4)
    changed = 0
    for _ in range(12):
        out = augment_frame(f, cfg, rng, IGNORE)
        changed += not np.array_equal(out.labels, f.labels)
        # nearest for labels and depth: no new ids, no blended depths
        assert set(np.unique(out.labels)) <= {0, 1, 2, 3, IGNORE}
        assert set(np.unique(out.depth_m)) <= set(np.unique(f.depth_m)) | {0.0}
        valid = out.labels != IGNORE
        np.testing.assert_allclose(out.depth_m[valid], (1.0 + out.labels[valid]) * 1.5)
        assert np.all(out.depth_m[~valid] == 0)
        # bilinear colour agrees with the label wherever the labels are locally constant
        inner = _interior(out.labels) & valid
        assert inner.mean() > 0.25
        np.testing.assert_allclose(out.rgb[..., 0][inner], out.labels[inner] * 60.0, atol=1e-3)
        np.testing.assert_allclose(
            out.rgb[..., 1][inner], 255.0 - out.labels[inner] * 50.0, atol=1e-3
        )
    assert changed == 12  # a shear of at least 0.05 moves the 8-pixel blocks


def test_skew_draws_magnitude_sign_and_axis():
    rng = np.random.default_rng(0)
    assert np.array_equal(sample_skew(rng, None), np.eye(2))
    seen = set()
    for _ in range(40):
        m = sample_skew(rng, [0.05, 0.10])
        k, axis = (m[0, 1], 'x') if m[0, 1] != 0 else (m[1, 0], 'y')
        assert 0.05 <= abs(k) <= 0.10 and m[0, 0] == m[1, 1] == 1.0
        assert m[0, 1] == 0 or m[1, 0] == 0
        seen.add((axis, k > 0))
    assert len(seen) == 4


def test_vignetting_darkens_colour_only_away_from_the_centre():
    f = _frame()
    geo = _cfg()
    vig = dataclasses.replace(geo, vignetting=[8.0, 10.0])
    a = augment_frame(f, geo, np.random.default_rng(6), IGNORE)
    b = augment_frame(f, vig, np.random.default_rng(6), IGNORE)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(b.rgb[23:25, 31:33], a.rgb[23:25, 31:33], rtol=5e-3)  # centre
    assert np.all(b.rgb <= a.rgb + 1e-4)
    corners = b.rgb[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(corners <= 0.2 * a.rgb[[0, 0, -1, -1], [0, -1, 0, -1]] + 1e-4)


def test_labels_stay_in_id_set_and_outside_is_ignore():
    f = _frame()
    cfg = _cfg(crop=[40, 56], scale=[0.5, 2.0], rotation_deg=15.0, hflip=True)
    rng = np.random.default_rng(3)
    saw_ignore = False
    for _ in range(20):
        out = augment_frame(f, cfg, rng, IGNORE)
        assert out.rgb.shape == (40, 56, 3) and out.depth_m.shape == (40, 56)
        assert out.labels.shape == (40, 56) and out.labels.dtype == np.uint8
        assert set(np.unique(out.labels)) <= {0, 1, 2, 3, IGNORE}
        ignored = out.labels == IGNORE
        saw_ignore |= bool(ignored.any())
        # pixels from outside the image: ignore label and invalid depth together
        assert np.all(out.depth_m[ignored] == 0)
    assert saw_ignore


def test_flip_mirrors_all_modalities_and_principal_point():
    f = _frame()
    cfg = _cfg(hflip=True)
    rng = np.random.default_rng(0)
    for _ in range(10):
        out = augment_frame(f, cfg, rng, IGNORE)
        if np.array_equal(out.labels, f.labels[:, ::-1]):
            np.testing.assert_array_equal(out.depth_m, f.depth_m[:, ::-1])
            np.testing.assert_allclose(out.rgb, f.rgb[:, ::-1].astype(np.float32))
            assert np.isclose(out.K[0, 2], 63 - 31.5)
            return
        np.testing.assert_array_equal(out.labels, f.labels)
    pytest.fail('no flip in 10 draws')


def test_photometric_touches_colour_only():
    f = _frame()
    geo = _cfg()
    jitter = dataclasses.replace(
        geo, brightness=40.0, contrast=[0.5, 1.5], saturation=0.3, noise_std=5.0
    )
    a = augment_frame(f, geo, np.random.default_rng(5), IGNORE)
    b = augment_frame(f, jitter, np.random.default_rng(5), IGNORE)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.allclose(a.rgb, b.rgb)
    assert b.rgb.min() >= 0 and b.rgb.max() <= 255
    out = photometric(f.rgb, jitter, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == f.rgb.shape


def test_identity_and_resize():
    f = _frame()
    out = augment_frame(f, _cfg(), np.random.default_rng(0), IGNORE)
    np.testing.assert_array_equal(out.labels, f.labels)
    np.testing.assert_array_equal(out.depth_m, f.depth_m)
    small = resize_frame(f, (24, 32), IGNORE)
    assert small.labels.shape == (24, 32)
    assert set(np.unique(small.labels)) <= set(np.unique(f.labels))
    assert np.isclose(small.K[0, 0], 25.0)
    # a plain resize keeps depth values (no zoom semantics)
    assert set(np.unique(small.depth_m)) <= set(np.unique(f.depth_m))


def test_fixed_output_size_without_crop():
    f = _frame()
    out = augment_frame(
        f, _cfg(scale=[0.8, 1.2]), np.random.default_rng(0), IGNORE, out_hw=(24, 32)
    )
    assert out.labels.shape == (24, 32)
