"""Joint augmentation: depth follows the zoom, labels stay in the id set, colour-only jitter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rgbd_seg_ros.training.augment import Frame, augment_frame, photometric, resize_frame
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
    out = augment_frame(f, _cfg(scale_set=[zoom]), np.random.default_rng(1), IGNORE)
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
