"""Depth-aware gating: f/Z bins, branch mixing, gate sources, recurrent unrolls, focal length."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from backend_testing import make_inputs, make_K, randomise_bn_statistics

from rgbd_seg_ros.backends.base import SegOutput
from rgbd_seg_ros.backends.depth_gating import (
    NYU_BIN_EDGES_M,
    NYU_KINECT_FOCAL_PX,
    DepthAwareGating,
    DepthGatingConfig,
    DepthGatingNet,
    depth_bin_loss,
    fz_edges,
    log_depth_loss,
    sensor_bin_probs,
)
from rgbd_seg_ros.errors import ConfigError, FrameError

SMALL = {'encoder': 'resnet18', 'width': 32, 'depth_head_width': 16}
EDGES = fz_edges(NYU_BIN_EDGES_M, NYU_KINECT_FOCAL_PX)


def _focal(f: float, batch: int = 1) -> torch.Tensor:
    return torch.full((batch,), f)


def test_fz_bins_reproduce_the_metric_bins_and_transfer_across_cameras() -> None:
    depth = torch.tensor([1.0, 1.8, 2.5, 4.0, 6.0]).view(1, 1, 1, 5)
    probs, valid = sensor_bin_probs(depth, _focal(NYU_KINECT_FOCAL_PX), EDGES, 1)
    assert valid.all()
    # near -> bin 4 (dilation 16), far -> bin 0 (dilation 1), the paper's NYU bins
    assert probs.argmax(1).flatten().tolist() == [4, 3, 2, 1, 0]
    # a camera with twice the focal sees the same apparent size at twice the distance
    probs2, _ = sensor_bin_probs(depth * 2, _focal(2 * NYU_KINECT_FOCAL_PX), EDGES, 1)
    assert torch.equal(probs, probs2)


def test_sensor_bins_min_pool_and_holes() -> None:
    depth = torch.full((1, 1, 8, 16), 6.0)  # far everywhere
    depth[0, 0, 3, 2] = 1.0  # one near pixel in the first cell
    depth[0, 0, :, 8:] = 0.0  # the second cell has no depth
    probs, valid = sensor_bin_probs(depth, _focal(NYU_KINECT_FOCAL_PX), EDGES, 8)
    assert probs.shape == (1, 5, 1, 2)
    assert valid[0, 0].tolist() == [[True, False]]
    assert probs[0, :, 0, 0].tolist() == [0, 0, 0, 0, 1]  # the near pixel wins (min-pool)
    assert torch.allclose(probs[0, :, 0, 1], torch.full((5,), 0.2))  # hole: uniform


def test_gating_mixes_branches_by_bin_probabilities() -> None:
    gating = DepthAwareGating(4).eval()
    randomise_bn_statistics(gating)
    x = torch.randn(1, 4, 10, 12)
    with torch.no_grad():
        branches = [b(x) for b in gating.branches]
        for k in range(5):
            onehot = torch.zeros(1, 5, 10, 12)
            onehot[:, k] = 1
            assert torch.allclose(gating(x, onehot), branches[k], atol=1e-6)
        probs = torch.softmax(torch.randn(1, 5, 10, 12), 1)
        mixed = sum(probs[:, k : k + 1] * branches[k] for k in range(5))
        assert torch.allclose(gating(x, probs), mixed, atol=1e-6)
        uniform = torch.full((1, 5, 10, 12), 0.2)
        assert torch.allclose(gating(x, uniform), torch.stack(branches).mean(0), atol=1e-6)
    assert [b[0].dilation for b in gating.branches] == [(d, d) for d in (1, 2, 4, 8, 16)]


@pytest.mark.parametrize('loops', [0, 1, 2])
def test_num_loops(loops: int) -> None:
    model = DepthGatingNet(4, DepthGatingConfig(num_loops=loops, **SMALL))
    rgb, depth = make_inputs(2, 40, 56, 1)
    out = model(rgb, depth)
    assert isinstance(out, SegOutput) and out.logits.shape == (2, 4, 40, 56)
    assert len(out.aux) == loops  # feed-forward + (loops - 1) intermediate predictions
    assert out.aux_weights == ((0.2,) + (1.0,) * (loops - 1) if loops else ())
    out.logits.mean().backward()
    outs = model.eval().forward_all(rgb, depth)
    assert len(outs.logits) == loops + 1
    assert len(outs.bin_logits) == len(outs.log_depth) == len(outs.gates) == loops + 1


def test_training_output_carries_the_depth_branch_of_every_step() -> None:
    """The depth heads reach the loss through SegOutput.depth, cropped like the aux logits."""
    model = DepthGatingNet(4, DepthGatingConfig(num_loops=2, **SMALL))
    assert model.predicts_depth()
    rgb, _ = make_inputs(2, 37, 51, 1)  # padded to 40 x 56, 5 x 7 cells at stride 8
    out = model(rgb)
    assert isinstance(out, SegOutput) and out.depth is not None
    assert len(out.depth.bin_logits) == len(out.depth.log_depth) == 3  # feed-forward + 2 loops
    assert all(b.shape == (2, 5, 5, 7) for b in out.depth.bin_logits)
    assert all(d.shape == (2, 1, 5, 7) for d in out.depth.log_depth)
    assert out.depth.bin_edges_fz == model.edges_fz == EDGES
    with torch.no_grad():
        outs = model.forward_all(rgb.new_zeros(2, 3, 40, 56))
    assert outs.bin_logits[0].shape == (2, 5, 5, 7)
    # the depth terms give every depth head a gradient, the log-depth conv included
    depth = torch.full((2, 1, 37, 51), 2.0)
    focal = torch.full((2,), NYU_KINECT_FOCAL_PX)
    loss = sum(depth_bin_loss(b, depth, focal, EDGES) for b in out.depth.bin_logits)
    loss = loss + sum(log_depth_loss(d, depth) for d in out.depth.log_depth)
    loss.backward()
    for step in (model.ff, model.loop):
        assert step.depth_head.log_depth.weight.grad.abs().sum() > 0
        assert step.depth_head.bins.weight.grad.abs().sum() > 0


def test_baseline_is_the_dilation_1_branch_without_a_depth_branch() -> None:
    """gating_source='none' is the paper's feed-forward baseline (first training stage)."""
    base = DepthGatingNet(4, DepthGatingConfig(gating_source='none', num_loops=0, **SMALL))
    gated = DepthGatingNet(4, DepthGatingConfig(gating_source='predicted', num_loops=0, **SMALL))
    assert not base.predicts_depth() and not base.uses_depth() and not base.requires_depth()
    # the same tensors under the same names: the next stage starts from the baseline's weights
    assert {k: v.shape for k, v in base.state_dict().items()} == {
        k: v.shape for k, v in gated.state_dict().items()
    }
    rgb, depth = make_inputs(1, 32, 48, 1)
    out = base.train()(rgb, depth)
    assert isinstance(out, SegOutput) and out.depth is None and out.aux == ()
    randomise_bn_statistics(base)
    base.eval()
    with torch.no_grad():
        outs = base.forward_all(rgb)
        res6 = base.res6(base.encoder(rgb)[-1])
        expected = base.ff.classifier(base.ff.post(base.ff.gating.branches[0](res6)))
        assert torch.equal(outs.step_logits[0], expected)
        assert outs.bin_logits == outs.log_depth == outs.gates == ()
        assert torch.equal(base(rgb), base(rgb, None))
    with pytest.raises(ConfigError, match='no depth branch'):
        base.predict_depth(rgb)


def test_loops_share_weights_and_are_a_runtime_knob() -> None:
    a = DepthGatingNet(4, DepthGatingConfig(num_loops=0, **SMALL))
    b = DepthGatingNet(4, DepthGatingConfig(num_loops=2, **SMALL))
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    rgb, _ = make_inputs(1, 32, 48, 1)
    with torch.no_grad():
        outs = b.forward_all(rgb)
        b.set_num_loops(0)
        assert torch.equal(b(rgb), a(rgb))
        assert torch.equal(a(rgb), outs.logits[0])  # the feed-forward (anytime) prediction
        b.set_num_loops(2)
        assert torch.equal(b(rgb), outs.logits[2])
        assert not torch.equal(outs.logits[1], outs.logits[2])


def test_predicted_mode_runs_without_depth() -> None:
    model = DepthGatingNet(3, DepthGatingConfig(gating_source='predicted', **SMALL)).eval()
    assert not model.uses_depth()
    rgb, depth = make_inputs(1, 33, 47, 1)
    with torch.no_grad():
        assert torch.equal(model(rgb), model(rgb, depth))
        assert torch.equal(model(rgb, None), model(rgb, torch.zeros_like(depth)))
        d, bins = model.predict_depth(rgb)
    assert d.shape == (1, 1, 33, 47) and (d > 0).all()
    assert bins.shape == (1, 33, 47) and int(bins.max()) <= 4


def test_sensor_mode_needs_depth_and_hybrid_fills_holes() -> None:
    sensor = DepthGatingNet(3, DepthGatingConfig(gating_source='sensor', **SMALL)).eval()
    rgb, _ = make_inputs(1, 32, 48, 1)
    with pytest.raises(ValueError):
        sensor(rgb)
    hybrid = DepthGatingNet(3, DepthGatingConfig(gating_source='hybrid', **SMALL)).eval()
    depth = torch.full((1, 1, 32, 48), 0.25)  # metric encoding: 2.5 m
    depth[..., :, 24:] = 0  # right half has no depth
    with torch.no_grad():
        outs = hybrid.forward_all(rgb, depth)
    gate = outs.gates[0]
    assert gate.shape == (1, 5, 4, 6)
    assert torch.equal(
        gate[0, :, :, :3], torch.tensor([0, 0, 1.0, 0, 0]).view(5, 1, 1).expand(5, 4, 3)
    )
    predicted = torch.softmax(outs.bin_logits[0], 1)
    assert torch.allclose(gate[..., 3:], predicted[..., 3:])
    # a dropped depth frame: hybrid degrades to predicted gating everywhere
    pred_model = DepthGatingNet(3, DepthGatingConfig(gating_source='predicted', **SMALL)).eval()
    pred_model.load_state_dict(hybrid.state_dict())
    with torch.no_grad():
        assert torch.equal(hybrid(rgb, None), pred_model(rgb))
        assert torch.equal(hybrid(rgb, torch.zeros(1, 1, 32, 48)), pred_model(rgb))


def test_focal_length_changes_the_sensor_bins() -> None:
    assert DepthGatingNet.needs_intrinsics
    model = DepthGatingNet(3, DepthGatingConfig(gating_source='sensor', num_loops=0, **SMALL))
    model.eval()
    rgb, _ = make_inputs(1, 16, 16, 1)
    depth = torch.full((1, 1, 16, 16), 0.25)  # 2.5 m -> bin 2 with the NYU Kinect
    long_k = make_K(1, 16, 16, focal=2 * NYU_KINECT_FOCAL_PX)
    # The configured focal is the fallback when no K comes with the frame.
    configured = DepthGatingNet(
        3,
        DepthGatingConfig(
            gating_source='sensor', num_loops=0, focal_px=2 * NYU_KINECT_FOCAL_PX, **SMALL
        ),
    ).eval()
    configured.load_state_dict(model.state_dict())
    with torch.no_grad():
        g_ref = model.forward_all(rgb, depth).gates[0]
        assert g_ref[0, :, 0, 0].argmax() == 2
        g_k = model.forward_all(rgb, depth, long_k).gates[0]
        g_kw = configured.forward_all(rgb, depth).gates[0]
        out_k = model(rgb, depth, long_k)
        out_kw = configured(rgb, depth)
        # one K per batch item: each frame is binned with its own focal
        both = torch.cat([make_K(1, 16, 16, NYU_KINECT_FOCAL_PX), long_k])
        g_both = model.forward_all(rgb.expand(2, -1, -1, -1), depth.expand(2, -1, -1, -1), both)
    assert g_k[0, :, 0, 0].argmax() == 4  # same depth, longer focal: looks nearer
    assert torch.equal(g_k, g_kw) and torch.equal(out_k, out_kw)
    assert g_both.gates[0][:, :, 0, 0].argmax(1).tolist() == [2, 4]
    with pytest.raises(FrameError):
        model(rgb, depth, torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match='K must be'):
        model(rgb, depth, long_k[0])  # K is always batched


def test_depth_losses() -> None:
    bin_logits = torch.randn(2, 5, 4, 6, requires_grad=True)
    log_depth = torch.randn(2, 1, 4, 6, requires_grad=True)
    depth = torch.rand(2, 1, 32, 48) * 5
    depth[0, 0, :10] = 0
    loss = depth_bin_loss(bin_logits, depth, _focal(NYU_KINECT_FOCAL_PX, 2), EDGES)
    loss = loss + log_depth_loss(log_depth, depth)
    loss.backward()
    assert torch.isfinite(loss) and bin_logits.grad is not None and log_depth.grad is not None
    zero = torch.zeros(2, 1, 32, 48)
    assert float(log_depth_loss(log_depth, zero).detach()) == 0.0
    assert float(depth_bin_loss(bin_logits, zero, _focal(500.0, 2), EDGES).detach()) == 0.0


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        DepthGatingConfig(gating_source='stereo')
    with pytest.raises(ConfigError):
        DepthGatingNet(3, DepthGatingConfig(dilations=(1, 2, 4), **SMALL))
    with pytest.raises(ConfigError):
        DepthGatingNet(3, DepthGatingConfig(gating_source='sensor', depth_channels=3, **SMALL))


@pytest.mark.slow
def test_onnx_parity_with_sensor_gating(tmp_path: Path) -> None:
    from rgbd_seg_ros.backends.export import export_onnx, onnx_input_names, run_onnx

    model = DepthGatingNet(4, DepthGatingConfig(gating_source='hybrid', num_loops=1, **SMALL))
    randomise_bn_statistics(model)
    model.eval()
    path = export_onnx(model, tmp_path / 'dg.onnx', 64, 96, 1)
    assert onnx_input_names(path) == ['rgb', 'depth', 'K']
    rgb, _ = make_inputs(1, 64, 96, 1, seed=3)
    depth = torch.rand(1, 1, 64, 96) * 0.6
    depth[..., :20, :30] = 0
    outputs = []
    # K is a graph input, not a constant frozen at export: two cameras, one graph.
    for focal in (80.0, 4 * NYU_KINECT_FOCAL_PX):
        K = make_K(1, 64, 96, focal)
        with torch.no_grad():
            expected = model(rgb, depth, K).numpy()
        got = run_onnx(path, rgb, depth, K)
        diff = abs(got - expected).max()
        assert diff <= 1e-4 * max(1.0, float(abs(expected).max()))
        outputs.append(got)
    assert abs(outputs[0] - outputs[1]).max() > 1e-3
    with pytest.raises(ValueError, match="'K'"):
        run_onnx(path, rgb, depth)


def test_predicted_gating_exports_without_depth_or_k(tmp_path: Path) -> None:
    from rgbd_seg_ros.backends.export import export_onnx, onnx_input_names

    model = DepthGatingNet(3, DepthGatingConfig(gating_source='predicted', num_loops=0, **SMALL))
    path = export_onnx(model, tmp_path / 'dg.onnx', 32, 48, 1)
    assert onnx_input_names(path) == ['rgb']
