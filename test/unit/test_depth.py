"""Depth conversion (16UC1 mm, 32FC1 m; 0/NaN/inf/negative invalid) and the numpy encodings."""

from __future__ import annotations

import numpy as np
import pytest

from rgbd_seg_ros.core import depth, depth_params, depth_units
from rgbd_seg_ros.core.depth import (
    DEPTH_PARAM_DEFAULTS,
    depth_channels,
    depth_to_metres,
    encode_depth,
    encode_depth_numpy,
    jet_colormap,
    jet_uint8,
    resolve_depth_params,
    valid_mask,
)
from rgbd_seg_ros.errors import ConfigError, FrameError

K = np.array([[500.0, 0, 3.5], [0, 500.0, 2.5], [0, 0, 1]])


def test_16uc1_millimetres() -> None:
    mm = np.array([[0, 1, 1000], [1500, 65535, 42]], dtype=np.uint16)
    m = depth_to_metres(mm)
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, [[0, 0.001, 1.0], [1.5, 65.535, 0.042]], rtol=1e-6)
    assert mm[1, 1] == 65535  # input untouched


def test_32fc1_metres_with_holes_nan_inf_negative() -> None:
    raw = np.array([[np.nan, np.inf, -np.inf], [-0.5, 0.0, 2.25]], dtype=np.float32)
    before = raw.copy()
    m = depth_to_metres(raw)
    assert m.dtype == np.float32
    np.testing.assert_array_equal(m, [[0, 0, 0], [0, 0, 2.25]])
    np.testing.assert_array_equal(raw, before)  # never modified in place
    np.testing.assert_array_equal(valid_mask(raw), [[False] * 3, [False, False, True]])
    assert np.all(np.isfinite(m))


def test_other_dtypes_and_shapes() -> None:
    np.testing.assert_allclose(depth_to_metres(np.array([[1.5, np.nan]])), [[1.5, 0]])
    np.testing.assert_allclose(depth_to_metres(np.array([[-3, 2000]], np.int32)), [[0, 2]])
    np.testing.assert_allclose(
        depth_to_metres(np.array([[7, 8]], np.uint16), scale=0.1), [[0.7, 0.8]], rtol=1e-6
    )
    assert depth_to_metres(np.ones((4, 5, 1), np.uint16)).shape == (4, 5)
    with pytest.raises(FrameError):
        depth_to_metres(np.ones((2, 2, 3), np.float32))
    with pytest.raises(FrameError):
        depth_to_metres(np.ones((2, 2), bool))


def test_depth_channels() -> None:
    assert [depth_channels(e) for e in ('metric', 'jet', 'hha', 'none')] == [1, 3, 3, 0]
    with pytest.raises(ConfigError, match='valid'):
        depth_channels('lidar')


def test_core_depth_reexports_the_shared_pieces() -> None:
    # callers keep importing from core.depth; the table and the conversion live below it and
    # below core.hha, which reads them too
    assert depth.resolve_depth_params is depth_params.resolve_depth_params
    assert depth.DEPTH_PARAM_DEFAULTS is depth_params.DEPTH_PARAM_DEFAULTS
    assert depth.depth_channels is depth_params.depth_channels
    assert depth.depth_to_metres is depth_units.depth_to_metres
    assert depth.valid_mask is depth_units.valid_mask
    assert set(depth.__all__) >= {'ENCODINGS', 'resolve_depth_params', 'depth_to_metres'}


def test_params_validation() -> None:
    assert resolve_depth_params('metric', None) == {'max_depth_m': 10.0}
    assert resolve_depth_params('jet', {'max_depth_m': 5})['max_depth_m'] == 5.0
    with pytest.raises(ConfigError, match='max_depth_m'):
        resolve_depth_params('metric', {'max_depth': 5})
    with pytest.raises(ConfigError):
        resolve_depth_params('metric', {'max_depth_m': -1})
    with pytest.raises(ConfigError):
        resolve_depth_params('jet', {'min_depth_m': 6, 'max_depth_m': 5})
    with pytest.raises(ConfigError):
        resolve_depth_params('hha', {'gravity': [0, 0, 0]})
    with pytest.raises(ConfigError):
        resolve_depth_params('hha', {'normal_radius_px': 2.5})
    assert set(DEPTH_PARAM_DEFAULTS) == {'metric', 'jet', 'hha', 'none'}


def test_metric_encoding() -> None:
    raw = np.array([[0, 1000, 5000], [20000, 2500, 0]], dtype=np.uint16)
    out = encode_depth_numpy(depth_to_metres(raw), None, 'metric', {'max_depth_m': 10.0})
    assert out.shape == (1, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [[0, 0.1, 0.5], [1.0, 0.25, 0]], rtol=1e-6)
    # Unsanitised float input is handled too.
    bad = np.array([[np.nan, np.inf, -1, 1.0]], np.float32)
    np.testing.assert_allclose(encode_depth_numpy(bad, None, 'metric')[0], [[0, 0, 0, 0.1]])


def test_jet_matches_matplotlib() -> None:
    matplotlib = pytest.importorskip('matplotlib')
    t = np.linspace(0, 1, 1001)
    ours = jet_colormap(t)
    theirs = matplotlib.colormaps['jet'](t)[:, :3]
    # matplotlib quantises to a 256-entry table; the segment data's largest slope is ~4.5.
    assert np.abs(ours - theirs).max() < 4.5 / 255 + 1e-6
    np.testing.assert_allclose(
        jet_colormap(np.array([0.0, 0.5, 1.0])),
        matplotlib.colormaps['jet']([0.0, 0.5, 1.0])[:, :3],
        atol=0.02,
    )


def test_jet_encoding_fixed_range_and_holes() -> None:
    d = np.array([[0.0, 1.0, 5.0, 10.0, 50.0, np.nan]], dtype=np.float32)
    out = encode_depth_numpy(d, None, 'jet', {'min_depth_m': 0.0, 'max_depth_m': 10.0})
    assert out.shape == (3, 1, 6) and out.dtype == np.float32
    colours = out[:, 0].T
    np.testing.assert_array_equal(colours[0], 0)  # hole: black
    np.testing.assert_array_equal(colours[5], 0)  # NaN: black
    np.testing.assert_allclose(colours[2], jet_colormap(np.array(0.5)))
    np.testing.assert_allclose(colours[3], colours[4])  # clipped at max range
    assert np.all(colours[1:5].max(axis=1) > 0.4)  # jet never yields black for valid depth
    assert out.min() >= 0 and out.max() <= 1


def test_jet_per_image_range() -> None:
    d = np.array([[2.0, 3.0, 4.0, 0.0]], dtype=np.float32)
    out = encode_depth_numpy(d, None, 'jet', {'per_image': True})[:, 0].T
    np.testing.assert_allclose(out[0], jet_colormap(np.array(0.0)))
    np.testing.assert_allclose(out[1], jet_colormap(np.array(0.5)))
    np.testing.assert_allclose(out[2], jet_colormap(np.array(1.0)))
    np.testing.assert_array_equal(out[3], 0)
    img = jet_uint8(d, per_image=True)
    assert img.dtype == np.uint8 and img.shape == (1, 4, 3)


def test_none_and_spec_driven() -> None:
    d = np.ones((4, 6), np.float32)
    assert encode_depth_numpy(d, None, 'none').shape == (0, 4, 6)
    spec = {'depth_encoding': 'metric', 'depth_params': {'max_depth_m': 2.0}}
    np.testing.assert_allclose(encode_depth(d, None, spec), 0.5)

    class Spec:
        depth_encoding = 'jet'
        depth_params = {}

    assert encode_depth(d, None, Spec()).shape == (3, 4, 6)
    with pytest.raises(FrameError, match='intrinsics'):
        encode_depth_numpy(d, None, 'hha')


def test_hha_through_the_dispatcher() -> None:
    d = np.full((24, 32), 2.0, np.float32)
    d[3, 4] = np.nan
    out = encode_depth_numpy(d, K, 'hha', {'camera_height_m': 1.0, 'gravity': [0, 1, 0]})
    assert out.shape == (3, 24, 32) and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out[:, 3, 4], 0)
