"""The ``ann`` backend, the ANN paper's own network: layout, Stage4 deep supervision, RGB only.
(Its size against the paper is in test_backends2_figures.py; the registry suite covers the
forward contract, checkpoints and ONNX.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from backend_testing import make_inputs, randomise_bn_statistics
from torch import nn

from rgbd_seg_ros.backends.ann import ANNConfig, ANNNet
from rgbd_seg_ros.backends.base import SegOutput
from rgbd_seg_ros.backends.nonlocal_blocks import AFNB, APNB
from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.errors import ConfigError

SMALL = {
    'encoder': 'resnet18',
    'context_channels': 32,
    'key_channels': 16,
    'value_channels': 16,
    'aux_channels': 16,
}


def test_layout_is_the_papers() -> None:
    """AFNB: keys/values from Stage4 (1024), queries from Stage5 (2048), output 2048; a 3x3
    2048 -> 512; APNB on 512 with shared query/key and the {1,3,6,8} anchors; Stage4 head."""
    with torch.device('meta'):
        model = build_backend('ann', 19)
    assert isinstance(model, ANNNet) and model.output_stride == 8
    assert model.encoder.strides[-2:] == [8, 8]  # Stage4 and Stage5 dilated
    afnb, apnb = model.context.afnb, model.context.apnb
    assert isinstance(afnb, AFNB) and isinstance(apnb, APNB)
    assert afnb.f_key[0].in_channels == 1024 and afnb.f_value.in_channels == 1024
    assert afnb.f_query[0].in_channels == 2048 and afnb.w_out.out_channels == 2048
    assert afnb.f_key[0].out_channels == 256 and afnb.f_value.out_channels == 256
    reduce = model.context.reduce[0]
    assert (reduce.in_channels, reduce.out_channels, reduce.kernel_size) == (2048, 512, (3, 3))
    assert apnb.share == 'qk' and apnb.anchors == 110 and apnb.w_out.out_channels == 512
    assert model.classifier.in_channels == 512 and model.classifier.out_channels == 19
    aux_conv = model.aux_head[0]
    assert (aux_conv.in_channels, aux_conv.out_channels, aux_conv.kernel_size) == (
        1024,
        512,
        (3, 3),
    )
    assert model.aux_weights == (0.4,)
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert dropouts == [0.05] * 3  # AFNB fusion, APNB fusion, Stage4 head


def test_stage4_supervision_in_training_only() -> None:
    model = ANNNet(5, ANNConfig(**SMALL))
    calls: list[int] = []
    model.aux_head.register_forward_hook(lambda *_: calls.append(1))
    rgb, _ = make_inputs(2, 45, 61, 1)  # padded to 48 x 64
    out = model(rgb)
    assert isinstance(out, SegOutput) and out.logits.shape == (2, 5, 45, 61)
    assert len(out.aux) == 1 and out.aux_weights == (0.4,)
    assert out.aux[0].shape == (2, 5, 6, 8)  # Stage4 at stride 8, cropped to the image
    assert out.depth is None
    model.eval()
    calls.clear()
    with torch.no_grad():
        logits = model(rgb)
    assert isinstance(logits, torch.Tensor) and calls == []  # not computed at inference


def test_rgb_only() -> None:
    model = ANNNet(4, ANNConfig(**SMALL)).eval()
    randomise_bn_statistics(model)
    assert not model.uses_depth() and not model.requires_depth()
    assert not model.needs_intrinsics and not model.predicts_depth()
    rgb, depth = make_inputs(1, 40, 56, 1)
    with torch.no_grad():
        ref = model(rgb)
        assert torch.equal(model(rgb, depth), ref)
        assert torch.equal(model(rgb, depth * 7.0), ref)
        assert torch.equal(model(rgb, torch.zeros(1, 3, 8, 8)), ref)  # not even checked
    with pytest.raises(ValueError, match='rgb'):
        model(None, depth)


def test_exported_graph_reads_rgb_only(tmp_path: Path) -> None:
    from rgbd_seg_ros.backends.export import export_onnx, onnx_input_names, run_onnx

    model = ANNNet(4, ANNConfig(**SMALL, zero_init=False)).eval()
    randomise_bn_statistics(model)
    path = export_onnx(model, tmp_path / 'ann.onnx', 32, 48, 1)
    assert onnx_input_names(path) == ['rgb']
    rgb, depth = make_inputs(1, 32, 48, 1)
    with torch.no_grad():
        expected = model(rgb).numpy()
    assert abs(run_onnx(path, rgb, depth) - expected).max() < 1e-4


def test_zero_initialised_blocks_start_as_no_ops() -> None:
    """With the reference code's zero W_o, a fresh network's context is its inputs alone."""
    model = ANNNet(4, ANNConfig(**SMALL)).eval()
    randomise_bn_statistics(model)
    for block in (model.context.afnb, model.context.apnb):
        assert not block.w_out.weight.any() and not block.w_out.bias.any()
    rgb, _ = make_inputs(1, 32, 48, 1)
    with torch.no_grad():
        feats = model.encoder(rgb)
        before = model(rgb)
        for module in (model.context.afnb.f_key, model.context.apnb.f_value):
            for p in module.parameters():
                p.add_(1.0)  # keys and values do not matter while W_o is zero
        assert torch.equal(model(rgb), before)
        assert feats[-1].shape[-2:] == feats[-2].shape[-2:] == (4, 6)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        ANNConfig(pyramid_sizes=())
    with pytest.raises(ConfigError):
        ANNConfig(aux_weight=-0.4)
