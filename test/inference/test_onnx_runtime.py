"""The engine's ONNX Runtime forward gives the torch forward's outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.inference.engine import Engine
from rgbd_seg_ros.paths import DEFAULT_MODEL

DEFAULT = Path(__file__).resolve().parents[2] / DEFAULT_MODEL
K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])


def frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    depth = np.linspace(500, 6000, 240, dtype=np.float32)[:, None].repeat(320, 1)
    return rgb, depth.astype(np.uint16)


def test_onnxruntime_matches_torch_on_the_default_model():
    torch_engine = Engine.from_checkpoint(DEFAULT, device='cpu')
    onnx_engine = Engine.from_checkpoint(DEFAULT, device='cpu', runtime='onnxruntime')
    outputs = ('labels', 'confidence')
    for seed in (0, 1):  # the second frame reuses the session built for the first
        rgb, depth = frame(seed)
        a = torch_engine.predict(rgb, depth, K, outputs=outputs)
        b = onnx_engine.predict(rgb, depth, K, outputs=outputs)
        # Float reassociation can flip a pixel whose two best logits tie to ~1e-6.
        assert np.mean(a.labels == b.labels) > 0.999
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    assert len(onnx_engine._onnx._sessions) == 1


def test_onnxruntime_feeds_each_frame_intrinsics_to_depth_gating(tmp_path):
    """depth_gating bins on the focal of each frame; its graph takes K as an input."""
    import torch

    from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec, save_checkpoint
    from rgbd_seg_ros.backends.registry import build_backend

    torch.manual_seed(0)
    options = {'width': 32, 'depth_head_width': 16, 'num_loops': 1, 'gating_source': 'sensor'}
    model = build_backend('depth_gating', num_classes=4, encoder='resnet18', **options)
    meta = CheckpointMeta(
        backend='depth_gating',
        config=dict(vars(model.config)),
        class_names=['a', 'b', 'c', 'd'],
        input_spec=InputSpec(resolution={'policy': 'fixed', 'height': 48, 'width': 64}),
    )
    save_checkpoint(tmp_path / 'g.safetensors', model, meta)
    torch_engine = Engine.from_checkpoint(tmp_path / 'g.safetensors', device='cpu')
    onnx_engine = Engine.from_checkpoint(
        tmp_path / 'g.safetensors', device='cpu', runtime='onnxruntime'
    )
    rgb, depth = frame()
    confidences = []
    for focal in (300.0, 1200.0):  # one session, two cameras
        K_cam = np.array([[focal, 0, 160], [0, focal, 120], [0, 0, 1]])
        a = torch_engine.predict(rgb, depth, K_cam)
        b = onnx_engine.predict(rgb, depth, K_cam)
        assert np.mean(a.labels == b.labels) > 0.999
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
        confidences.append(b.confidence)
    assert np.abs(confidences[0] - confidences[1]).max() > 1e-3  # the graph reads K
    assert len(onnx_engine._onnx._sessions) == 1


def test_onnxruntime_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match='runtime must be one of'):
        Engine.from_checkpoint(DEFAULT, device='cpu', runtime='tensorrt')


class _Unexportable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 3, 1)

    def forward(self, rgb, depth):
        # cummax has no ONNX (opset 17) form: the exporter raises UnsupportedOperatorError.
        return torch.cummax(self.conv(torch.cat([rgb, depth], 1)), dim=-1).values


def _meta(resolution=None):
    return CheckpointMeta(
        'conv', {'depth_channels': 1}, ['a', 'b', 'c'], input_spec=InputSpec(resolution=resolution)
    )


def test_auto_is_onnxruntime_on_the_cpu_and_exports_a_fixed_size_model_while_it_loads():
    engine = Engine.from_checkpoint(DEFAULT, device='cpu', runtime='auto')
    assert engine.runtime == 'onnxruntime'
    fixed = engine.fixed_network_size
    assert fixed is not None and list(engine._onnx._sessions) == [fixed]  # before any frame
    reference = Engine.from_checkpoint(DEFAULT, device='cpu', runtime='torch')
    rgb, depth = frame(3)
    a = reference.predict(rgb, depth, K, outputs=('labels', 'confidence'))
    b = engine.predict(rgb, depth, K, outputs=('labels', 'confidence'))
    assert np.mean(a.labels == b.labels) > 0.999
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    assert list(engine._onnx._sessions) == [fixed]  # no second export


def test_auto_falls_back_to_torch_for_a_size_that_does_not_export():
    model = _Unexportable()
    reference = Engine(copy.deepcopy(model), _meta(), torch.device('cpu'), runtime='torch')
    with pytest.warns(RuntimeWarning, match='torch runs that size'):
        engine = Engine(model, _meta(), torch.device('cpu'), runtime='auto')
        rgb, depth = frame(0)
        got = engine.predict(rgb, depth, K, outputs=('labels', 'confidence'))
    assert engine.runtime.startswith('onnxruntime; torch for 240x320: ')
    expected = reference.predict(rgb, depth, K, outputs=('labels', 'confidence'))
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.confidence, expected.confidence)
    engine.predict(rgb, depth, K)  # the failed size is not exported again
    assert list(engine._onnx.fallbacks) == [(240, 320)]


def test_explicit_onnxruntime_refuses_a_model_that_does_not_export():
    fixed = {'policy': 'fixed', 'height': 48, 'width': 64}
    with pytest.raises(Exception, match='cummax'):
        Engine(_Unexportable(), _meta(fixed), torch.device('cpu'), runtime='onnxruntime')
    with pytest.warns(RuntimeWarning, match='at 48x64'):
        engine = Engine(_Unexportable(), _meta(fixed), torch.device('cpu'), runtime='auto')
    assert engine.runtime.startswith('onnxruntime; torch for 48x64: ')  # while it loaded


def test_a_new_thread_budget_reopens_the_session_without_a_new_export():
    """The node's cpu_threads sets torch's budget at run time; ONNX Runtime must follow it."""
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    engine = Engine.from_checkpoint(DEFAULT, device='cpu', runtime='onnxruntime')
    rgb, depth = frame(0)
    try:
        first = engine.predict(rgb, depth, K).labels
        (size,) = engine._onnx.session_threads()
        path = engine._onnx._sessions[size].path
        exported_at = path.stat().st_mtime_ns
        torch.set_num_threads(other)
        again = engine.predict(rgb, depth, K).labels
        assert engine._onnx.session_threads() == {size: other}
        options = engine._onnx._sessions[size].session.get_session_options()
        assert options.intra_op_num_threads == other  # what ONNX Runtime itself was given
        assert path.stat().st_mtime_ns == exported_at  # reopened, not exported again
        np.testing.assert_array_equal(first, again)
    finally:
        torch.set_num_threads(before)
