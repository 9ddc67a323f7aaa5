"""ONNX export details beyond the registry suite's parity check: opset, inputs, metadata."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from backend_testing import make_inputs

from rgbd_seg_ros.backends.export import export_onnx, onnx_input_names, run_onnx
from rgbd_seg_ros.backends.registry import build_backend

SMALL = {
    'encoder': 'resnet18',
    'easpp_channels': 32,
    'easpp_bottleneck': 8,
    'decoder_channels': 32,
}


def test_unimodal_depth_export(tmp_path: Path) -> None:
    model = build_backend('adapnetpp', 4, modality='depth', depth_channels=3, **SMALL)
    model.train()
    path = export_onnx(model, tmp_path / 'sub' / 'depth.onnx', 48, 64, depth_channels=3)
    assert model.training  # mode restored
    assert sorted(p.name for p in path.parent.iterdir()) == ['depth.onnx']  # no temp files
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')] == [17]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta['num_classes'] == '4'
    assert meta['height'] == '48' and meta['width'] == '64'
    assert meta['inputs'] == 'depth'
    assert onnx_input_names(path) == ['depth']
    model.eval()
    rgb, depth = make_inputs(1, 48, 64, 3)
    with torch.no_grad():
        expected = model(None, depth).numpy()
    assert abs(run_onnx(path, rgb, depth) - expected).max() < 1e-3


def test_rgb_export_keeps_only_rgb(tmp_path: Path) -> None:
    model = build_backend('adapnetpp', 3, **SMALL).eval()
    path = export_onnx(model, tmp_path / 'rgb.onnx', 32, 32, depth_channels=1)
    assert onnx_input_names(path) == ['rgb']
    out = run_onnx(path, torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))
    assert out.shape == (1, 3, 32, 32)
