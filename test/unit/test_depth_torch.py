"""The torch depth encodings equal the numpy ones (the data loaders' and the node's inputs agree).

Tolerances: metric and jet 1e-6 (same float32 formulas); HHA 1e-4 (0.025 units on the 0..255
scale) on all but 0.1 % of the pixels and 2/255 everywhere: the normals' inverse iteration
runs in float32 and near-flat floors hit float32 acos rounding, and a normal lying exactly on
a threshold may fall on either side. The CUDA test also checks that nothing synchronises with
the host.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rgbd_seg_ros.core.depth import depth_to_metres, encode_depth_numpy
from rgbd_seg_ros.core.hha import synthetic_room
from rgbd_seg_ros.errors import ConfigError, FrameError
from rgbd_seg_ros.inference.depth_encoding import encode_depth_torch, sanitise_depth

HHA_ATOL = 1e-4
HHA_OUTLIER_FRACTION = 1e-3
HHA_MAX = 2 / 255


def noisy_room(
    seed: int, height: int = 120, width: int = 160, pitch: float = 20.0, roll: float = 3.0
):
    depth, K, _ = synthetic_room(height, width, pitch_deg=pitch, roll_deg=roll)
    rng = np.random.default_rng(seed)
    depth = depth * (1 + 0.003 * rng.standard_normal(depth.shape)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.03] = 0
    depth[10:30, 40:80] = np.nan
    depth[50:53, :] = np.inf
    depth[60:62, 5:9] = -1
    return depth, K


def run_torch(depths, Ks, encoding, params, device='cpu'):
    d = torch.from_numpy(np.stack(depths))[:, None].to(device)
    K = torch.from_numpy(np.stack(Ks)).to(device)
    return encode_depth_torch(d, K, encoding, params).cpu().numpy()


def assert_hha_close(ours: np.ndarray, reference: np.ndarray) -> None:
    diff = np.abs(ours - reference)
    assert diff.max() <= HHA_MAX, diff.max()
    assert (diff > HHA_ATOL).mean() <= HHA_OUTLIER_FRACTION, (diff > HHA_ATOL).mean()


@pytest.mark.parametrize(
    ('encoding', 'params'),
    [
        ('metric', {}),
        ('metric', {'max_depth_m': 3.0}),
        ('jet', {}),
        ('jet', {'min_depth_m': 1.0, 'max_depth_m': 4.0}),
        ('jet', {'per_image': True}),
        ('none', {}),
    ],
)
def test_metric_and_jet_match_numpy(encoding: str, params: dict) -> None:
    depth, K = noisy_room(0)
    ours = run_torch([depth], [K], encoding, params)[0]
    ref = encode_depth_numpy(depth, K, encoding, params)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    'params',
    [
        {},
        {'gravity': [0.0, 9.8, 1.5], 'camera_height_m': 1.1},
        {'floor_percentile': 2.0},
        {'normal_radius_px': 2, 'gravity_stride': 2},
        {'gravity': [[0.0, 1.0, 0.3], [0.1, 1.0, 0.0]]},
    ],
)
def test_hha_matches_numpy_per_image_in_a_batch(params: dict) -> None:
    scenes = [noisy_room(1), noisy_room(2, pitch=35.0, roll=-6.0)]
    depths = [s[0] for s in scenes]
    Ks = [s[1] for s in scenes]
    Ks[1] = Ks[1].copy()
    Ks[1][0, 2] += 7.0  # a different camera per batch item
    ours = run_torch(depths, Ks, 'hha', params)
    assert ours.shape == (2, 3, 120, 160) and np.isfinite(ours).all()
    for i in range(2):
        p = dict(params)
        if 'gravity' in p and np.ndim(p['gravity']) == 2:
            p['gravity'] = p['gravity'][i]
        assert_hha_close(ours[i], encode_depth_numpy(depths[i], Ks[i], 'hha', p))


def test_hha_gravity_as_device_tensor() -> None:
    depth, K = noisy_room(3)
    g = torch.tensor([0.0, 1.0, 0.2])
    ours = run_torch([depth], [K], 'hha', {'gravity': g})[0]
    assert_hha_close(ours, encode_depth_numpy(depth, K, 'hha', {'gravity': [0.0, 1.0, 0.2]}))


def test_input_shapes_and_sanitising() -> None:
    raw = np.array([[np.nan, np.inf, -np.inf, -1.0, 0.0, 2.0]], np.float32)
    np.testing.assert_array_equal(
        sanitise_depth(torch.from_numpy(raw)).numpy(), depth_to_metres(raw)
    )
    d = torch.full((4, 6), 2.0)
    assert encode_depth_torch(d, None, 'metric').shape == (1, 1, 4, 6)
    assert encode_depth_torch(d[None], None, 'jet').shape == (1, 3, 4, 6)
    K = torch.tensor([[50.0, 0, 3], [0, 50.0, 2], [0, 0, 1]])
    assert encode_depth_torch(d[None, None].expand(2, 1, 4, 6), K, 'hha').shape == (2, 3, 4, 6)
    with pytest.raises(FrameError, match='intrinsics'):
        encode_depth_torch(d, None, 'hha')
    with pytest.raises(FrameError):
        encode_depth_torch(torch.zeros(2, 2, 4, 6), None, 'metric')
    with pytest.raises(ConfigError):
        encode_depth_torch(d, None, 'jet', {'max_depth': 3})
    with pytest.raises(ConfigError):
        encode_depth_torch(d, None, 'lidar')


def test_all_invalid_batch_item() -> None:
    depth, K = noisy_room(4)
    empty = np.zeros_like(depth)
    for encoding in ('metric', 'jet', 'hha'):
        params = {'per_image': True} if encoding == 'jet' else {}
        out = run_torch([depth, empty], [K, K], encoding, params)
        assert np.isfinite(out).all()
        assert not out[1].any()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_matches_numpy_without_host_syncs() -> None:
    scenes = [noisy_room(5, 480, 640), noisy_room(6, 480, 640, pitch=30.0)]
    depths = [s[0] for s in scenes]
    Ks = [s[1] for s in scenes]
    d = torch.from_numpy(np.stack(depths))[:, None].cuda()
    K = torch.from_numpy(np.stack(Ks)).cuda()
    for encoding in ('metric', 'jet', 'hha'):
        encode_depth_torch(d, K, encoding)  # warm-up (kernel loading may synchronise)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        outs = {e: encode_depth_torch(d, K, e) for e in ('metric', 'jet', 'hha')}
        outs['jet_per_image'] = encode_depth_torch(d, K, 'jet', {'per_image': True})
        outs['hha_pct'] = encode_depth_torch(d, K, 'hha', {'floor_percentile': 1.0})
    finally:
        torch.cuda.set_sync_debug_mode('default')
    for i in range(2):
        np.testing.assert_allclose(
            outs['metric'][i].cpu().numpy(),
            encode_depth_numpy(depths[i], Ks[i], 'metric'),
            atol=1e-6,
        )
        np.testing.assert_allclose(
            outs['jet'][i].cpu().numpy(), encode_depth_numpy(depths[i], Ks[i], 'jet'), atol=1e-6
        )
        assert_hha_close(outs['hha'][i].cpu().numpy(), encode_depth_numpy(depths[i], Ks[i], 'hha'))
        assert_hha_close(
            outs['hha_pct'][i].cpu().numpy(),
            encode_depth_numpy(depths[i], Ks[i], 'hha', {'floor_percentile': 1.0}),
        )


@pytest.mark.parametrize('encoding', ['metric', 'jet', 'hha', 'none'])
def test_already_sanitised_depth_encodes_the_same_and_is_left_as_it_was(encoding):
    """The engine hands its uploaded depth (float32, invalid pixels 0) with sanitised=True; the
    result must equal the full path's, and the tensor, which the cloud reads afterwards, must
    not be written (at the camera's size the network input is a view of it)."""
    depth, K = noisy_room(7)
    raw = torch.from_numpy(depth)[None, None]
    clean = sanitise_depth(raw)
    before = clean.clone()
    K_t = torch.from_numpy(K)[None]
    expected = encode_depth_torch(raw, K_t, encoding)
    got = encode_depth_torch(clean, K_t, encoding, sanitised=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert torch.equal(clean, before)
