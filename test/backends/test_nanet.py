"""NANet: spatial and channel fusion modules, MNAM variants, the two-stream network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from backend_testing import make_inputs, randomise_bn_statistics

from rgbd_seg_ros.backends.base import SegOutput
from rgbd_seg_ros.backends.mnam import MNAM, ChannelFusionModule, SpatialFusionModule
from rgbd_seg_ros.backends.nanet import NANet, NANetConfig, mnam_parameter_table
from rgbd_seg_ros.errors import ConfigError

SMALL = {
    'encoder': 'resnet18',
    'variant': 'lite',
    'aspp_channels': 32,
    'low_channels': 16,
    'aux_channels': 32,
}


def test_sfm_matches_literal_broadcast_then_modality_softmax() -> None:
    sfm = SpatialFusionModule(6).eval()
    randomise_bn_statistics(sfm)
    f_r, f_d = torch.randn(2, 6, 7, 9), torch.randn(2, 6, 7, 9)
    with torch.no_grad():
        out_r, out_d, fs = sfm(f_r, f_d)
        h, w = 7, 9
        # the paper's order: conv on strips, expand to H x W, softmax over the modality axis
        v = torch.stack(
            [
                sfm.v_rgb(f_r.mean(2, keepdim=True)).expand(-1, -1, h, w),
                sfm.v_depth(f_d.mean(2, keepdim=True)).expand(-1, -1, h, w),
            ]
        )
        hh = torch.stack(
            [
                sfm.h_rgb(f_r.mean(3, keepdim=True)).expand(-1, -1, h, w),
                sfm.h_depth(f_d.mean(3, keepdim=True)).expand(-1, -1, h, w),
            ]
        )
        ref = (torch.softmax(v, 0) * v).sum(0) + (torch.softmax(hh, 0) * hh).sum(0)
    assert torch.allclose(fs, ref, atol=1e-5)
    assert torch.allclose(out_r, f_r + ref, atol=1e-5)
    assert torch.allclose(out_d, f_d + ref, atol=1e-5)


def test_sfm_context_is_a_cross_of_rows_and_columns() -> None:
    """Position (i, j) sees rows i-1..i+1 and columns j-1..j+1 only (a 3-wide cross)."""
    sfm = SpatialFusionModule(2).eval()
    f_r = torch.zeros(1, 2, 9, 9, requires_grad=True)
    f_d = torch.zeros(1, 2, 9, 9)
    sfm(f_r, f_d)[2][0, :, 4, 4].sum().backward()
    reach = f_r.grad[0].abs().sum(0) > 0
    for i in range(9):
        for j in range(9):
            assert bool(reach[i, j]) == (abs(i - 4) <= 1 or abs(j - 4) <= 1)


@pytest.mark.parametrize('reduction', [None, 4])
def test_cfm_weights(reduction: int | None) -> None:
    cfm = ChannelFusionModule(8, reduction)
    f_r, f_d = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
    alpha, beta = cfm.weights(f_r, f_d)
    assert alpha.shape == beta.shape == (2, 8, 1, 1)
    assert (alpha > 0).all() and (alpha < 1).all() and (beta > 0).all() and (beta < 1).all()
    assert torch.allclose(cfm(f_r, f_d), alpha * f_r + beta * f_d)


def test_mnam_literal_and_lite_sizes() -> None:
    full = mnam_parameter_table('resnet50', 'full')
    sfm = sum(v for k, v in full.items() if k.endswith('sfm'))
    cfm = sum(v for k, v in full.items() if k.endswith('cfm'))
    # doc/backends/nanet.md §3.5: SFM 66.9 M (0.79 + 3.15 + 12.6 + 50.3),
    # CFM 22.3 M (0.26 + 1.05 + 4.2 + 16.8)
    assert sfm == pytest.approx(66.9e6, rel=0.01)
    assert cfm == pytest.approx(22.3e6, rel=0.01)
    lite = sum(mnam_parameter_table('resnet50', 'lite').values())
    assert lite < 0.05 * (sfm + cfm)
    m = MNAM(16, lite=True)
    assert m(torch.randn(1, 16, 6, 8), torch.randn(1, 16, 6, 8)).shape == (1, 16, 6, 8)


@pytest.mark.parametrize('head_mode', ['dual', 'fused'])
def test_network_train_and_eval(head_mode: str) -> None:
    model = NANet(4, NANetConfig(head_mode=head_mode, **SMALL))
    rgb, depth = make_inputs(2, 45, 61, 1)
    out = model(rgb, depth)
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (2, 4, 45, 61)
    assert out.aux_weights == (0.2,) and out.aux[0].shape[:2] == (2, 4)
    (out.logits.mean() + out.aux[0].mean()).backward()
    assert model.mnams['4'].cfm.phi.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert model(rgb, depth).shape == (2, 4, 45, 61)
    if head_mode == 'fused':
        assert not hasattr(model, 'head_rgb')


def test_feedback_none_leaves_the_streams_unimodal() -> None:
    model = NANet(3, NANetConfig(feedback='none', **SMALL)).eval()
    rgb, depth = make_inputs(1, 64, 64, 1)
    with torch.no_grad():
        streams = model.streams(rgb, depth)
        plain = model.encoder_rgb(rgb)
    for s in range(1, 5):
        assert torch.equal(streams['rgb'][s], plain[s])
    fed = NANet(3, NANetConfig(feedback='both', **SMALL)).eval()
    fed.load_state_dict(model.state_dict())
    with torch.no_grad():
        streams = fed.streams(rgb, depth)
    assert torch.equal(streams['rgb'][1], plain[1] + streams['mnam'][1])


def test_stage_selection_and_validation() -> None:
    model = NANet(3, NANetConfig(mnam_stages=(2, 4), **SMALL))
    assert sorted(model.mnams) == ['2', '4']
    with pytest.raises(ConfigError):
        NANetConfig(head_mode='fused', mnam_stages=(2, 3, 4))
    with pytest.raises(ConfigError):
        NANetConfig(mnam_stages=(1, 2, 3))  # aux head reads stage 4
    NANetConfig(mnam_stages=(1, 2, 3), aux_weight=0.0)
    with pytest.raises(ConfigError):
        NANetConfig(variant='huge')


@pytest.mark.slow
def test_onnx_parity_with_feedback(tmp_path: Path) -> None:
    """The feedback path amplifies activations under random BN statistics: relative check."""
    from rgbd_seg_ros.backends.export import export_onnx, run_onnx

    model = NANet(4, NANetConfig(**SMALL))
    randomise_bn_statistics(model)
    model.eval()
    path = export_onnx(model, tmp_path / 'nanet.onnx', 64, 96, 1)
    rgb, depth = make_inputs(1, 64, 96, 1, seed=3)
    with torch.no_grad():
        expected = model(rgb, depth).numpy()
    diff = abs(run_onnx(path, rgb, depth) - expected).max()
    assert diff <= 1e-5 * max(1.0, float(abs(expected).max()))
