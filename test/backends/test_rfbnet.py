"""RFBNet: gated fusion unit, residual fusion blocks, both base networks, unimodal init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from backend_testing import make_inputs, randomise_bn_statistics

from rgbd_seg_ros.backends.base import SegOutput
from rgbd_seg_ros.backends.erfnet import ERFNetEnc, ERFNetEncConfig, ERFNetEncoder
from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.backends.rfb import GatedFusionUnit, split_unit
from rgbd_seg_ros.backends.rfbnet import RFBNet, RFBNetConfig
from rgbd_seg_ros.errors import CheckpointError, ConfigError

SMALL_ADAPNET = {
    'easpp_channels': 32,
    'easpp_bottleneck': 16,
    'decoder_channels': 32,
    'skip_channels': 8,
}


def _unimodal_features(model: RFBNet, rgb: torch.Tensor, depth: torch.Tensor):
    ur, ud = model.unimodal_modules()
    depth = F.avg_pool2d(depth, 2)
    if model.config.base == 'erfnet':
        return ur(rgb)[-1], ud(depth)[-1]
    return ur.encoder(ur.input_norm(rgb))[-1], ud.encoder(ud.input_norm(depth))[-1]


def _perturb_zero_gammas(model: RFBNet) -> None:
    with torch.no_grad():
        for block in model.rfbs:
            block.gfu.com_rgb[1].weight.fill_(0.5)
            block.gfu.com_depth[1].weight.fill_(0.5)


# --- gated fusion unit ---------------------------------------------------------------------------


def test_gfu_shapes_and_half_resolution() -> None:
    gfu = GatedFusionUnit(16)
    x_r, x_d = torch.randn(2, 16, 12, 20), torch.randn(2, 16, 6, 10)
    com_r, x_rd, com_d = gfu(x_r, None, x_d)
    assert com_r.shape == x_r.shape and com_d.shape == x_d.shape
    assert x_rd.shape == (2, 8, 6, 10)  # depth size, half the channels
    com_r, x_rd2, com_d = gfu(x_r, x_rd, x_d)
    assert x_rd2.shape == x_rd.shape
    # zero-initialised complement scale: the complements start at exactly zero
    assert torch.count_nonzero(com_r) == 0 and torch.count_nonzero(com_d) == 0


def test_gates_off_equals_gates_fixed_to_one() -> None:
    """Ablation "G" off = every gate the constant 1 (same other weights, same output)."""
    torch.manual_seed(1)
    on = GatedFusionUnit(8).eval()
    off = GatedFusionUnit(8, gates=False).eval()
    with torch.no_grad():
        for m in (on.com_rgb[1], on.com_depth[1]):
            m.weight.fill_(1.0)
        for conv in (on.gate_rgb_in, on.gate_depth_in, on.gate_rgb_out[1], on.gate_depth_out[1]):
            conv.weight.zero_()
            conv.bias.fill_(60.0)  # sigmoid(60) == 1 in float32
    missing, unexpected = off.load_state_dict(on.state_dict(), strict=False)
    assert not missing and unexpected  # gates-off builds no gate subnets
    assert all(k.startswith('gate') for k in unexpected)
    x_r, x_d, x_rd = torch.randn(1, 8, 8, 12), torch.randn(1, 8, 4, 6), torch.randn(1, 4, 4, 6)
    with torch.no_grad():
        for a, b in zip(on(x_r, x_rd, x_d), off(x_r, x_rd, x_d), strict=True):
            assert torch.allclose(a, b, atol=1e-6)


def test_gates_gate_the_inputs() -> None:
    gfu = GatedFusionUnit(8).eval()
    with torch.no_grad():
        gfu.gate_rgb_in.weight.zero_()
        gfu.gate_rgb_in.bias.fill_(-60.0)  # RGB input gate closed
        gfu.gate_depth_in.weight.zero_()  # depth gate constant (it also reads RGB)
    x_d, x_rd = torch.randn(1, 8, 4, 6), torch.randn(1, 4, 4, 6)
    with torch.no_grad():
        a = gfu(torch.randn(1, 8, 8, 12), x_rd, x_d)[1]
        b = gfu(torch.randn(1, 8, 8, 12), x_rd, x_d)[1]
    assert torch.allclose(a, b, atol=1e-6)  # RGB no longer reaches the interaction stream


@pytest.mark.parametrize('encoder', ['erfnet', 'resnet18', 'resnet50', 'preact_resnet50'])
def test_split_unit_finish_none_is_the_unit(encoder: str) -> None:
    if encoder == 'erfnet':
        units = ERFNetEncoder().os8_units[:2]
        x = torch.randn(1, 128, 6, 8)
    else:
        model = RFBNet(3, RFBNetConfig(encoder=encoder, multiscale='paper', **SMALL_ADAPNET))
        units = [
            model.expert_rgb.encoder.layer2[0]
            if encoder.startswith('resnet')
            else model.expert_rgb.encoder.stages[1].blocks[0]
        ]
        cin = units[0].conv1.in_channels
        x = torch.relu(torch.randn(1, cin, 8, 8))
    for unit in units:
        unit.eval()
        _feat, finish = split_unit(unit, x)
        with torch.no_grad():
            assert torch.equal(finish(None, 'R'), unit(x))


# --- whole network -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('encoder', 'point', 'gates'),
    [
        ('erfnet', 'R', True),
        ('erfnet', 'T', True),
        ('erfnet', 'R', False),
        ('resnet18', 'R', True),
        ('resnet18', 'T', False),
        ('preact_resnet50', 'R', True),
    ],
)
def test_zero_init_equals_unimodal_encoders(encoder: str, point: str, gates: bool) -> None:
    extra = {} if encoder == 'erfnet' else SMALL_ADAPNET
    model = RFBNet(4, RFBNetConfig(encoder=encoder, rfb_point=point, rfb_gates=gates, **extra))
    randomise_bn_statistics(model)
    model.eval()
    rgb, depth = make_inputs(1, 64, 96, 1)
    with torch.no_grad():
        enc = model.encode(rgb, depth)
        ref_r, ref_d = _unimodal_features(model, rgb, depth)
        assert torch.equal(enc.rgb, ref_r)
        assert torch.equal(enc.depth, ref_d)
        assert enc.depth.shape[-1] * 2 == enc.rgb.shape[-1]  # depth at half resolution
        _perturb_zero_gammas(model)
        enc = model.encode(rgb, depth)
    assert not torch.allclose(enc.rgb, ref_r)


def test_aggregation_only_leaves_the_encoders_unimodal() -> None:
    """point='none': the interaction stream aggregates but sends nothing back."""
    model = RFBNet(4, RFBNetConfig(encoder='erfnet', rfb_point='none')).eval()
    randomise_bn_statistics(model)
    rgb, depth = make_inputs(1, 48, 64, 1)
    with torch.no_grad():
        enc = model.encode(rgb, depth)
        ref_r, ref_d = _unimodal_features(model, rgb, depth)
    assert torch.equal(enc.rgb, ref_r) and torch.equal(enc.depth, ref_d)
    assert enc.interaction.shape == (1, 64, 3, 4)
    assert not hasattr(model.rfbs[0].gfu, 'com_rgb')


def test_erfnet_base_structure() -> None:
    model = RFBNet(6, RFBNetConfig(encoder='erfnet', depth_channels=3))
    assert len(model.rfbs) == 8 and model.output_stride == 8 and model.pad_multiple == 16
    model.eval()
    rgb, depth = make_inputs(1, 50, 70, 3)
    with torch.no_grad():
        assert model(rgb, depth).shape == (1, 6, 50, 70)


@pytest.mark.slow
def test_adapnet_base_rfb_placement() -> None:
    model = RFBNet(3, RFBNetConfig(encoder='preact_resnet50', **SMALL_ADAPNET))
    # block2's second unit through block4: 3 + 6 + 3
    assert model.rfb_index[0] == (1, 1) and len(model.rfbs) == 12
    widths = [b.gfu.channels for b in model.rfbs]
    assert widths == [128] * 3 + [256] * 6 + [512] * 3
    res3 = RFBNet(3, RFBNetConfig(encoder='preact_resnet50', rfb_stages='res3', **SMALL_ADAPNET))
    assert len(res3.rfbs) == 3
    assert model.pad_multiple == 32


@pytest.mark.slow
def test_adapnet_base_train_backward_and_onnx(tmp_path: Path) -> None:
    from rgbd_seg_ros.backends.export import export_onnx, run_onnx

    model = build_backend('rfbnet', 4, encoder='resnet18', rfb_stages='res3', **SMALL_ADAPNET)
    model.train()
    rgb, depth = make_inputs(2, 45, 61, 1)
    out = model(rgb, depth)
    assert isinstance(out, SegOutput) and out.logits.shape == (2, 4, 45, 61)
    assert out.aux_weights == (0.6, 0.5)
    loss = out.logits.logsumexp(1).mean() + sum(a.mean() for a in out.aux)
    loss.backward()
    assert model.ssma_latent.fuse.weight.grad is not None
    randomise_bn_statistics(model)
    model.eval()
    path = export_onnx(model, tmp_path / 'rfbnet.onnx', 64, 96, 1)
    rgb, depth = make_inputs(1, 64, 96, 1, seed=3)
    with torch.no_grad():
        expected = model(rgb, depth).numpy()
    assert abs(run_onnx(path, rgb, depth) - expected).max() < 1e-3


def test_init_from_unimodal_erfnet(tmp_path: Path) -> None:
    from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, save_checkpoint
    from rgbd_seg_ros.backends.registry import config_to_dict

    rgb_model = ERFNetEnc(4, ERFNetEncConfig(modality='rgb'))
    depth_model = ERFNetEnc(4, ERFNetEncConfig(modality='depth', depth_shrink=True))
    randomise_bn_statistics(rgb_model, seed=7)
    randomise_bn_statistics(depth_model, seed=8)
    path = tmp_path / 'depth.safetensors'
    meta = CheckpointMeta(
        backend='erfnet_enc',
        config=config_to_dict(depth_model.config),
        class_names=['a', 'b', 'c', 'd'],
        palette=[(0, 0, 0)] * 4,
    )
    save_checkpoint(path, depth_model, meta)
    model = RFBNet(4, RFBNetConfig(encoder='erfnet'))
    report = model.init_from_unimodal(rgb_model, path)
    assert not any(report.values())
    model.eval()
    rgb_model.eval()
    depth_model.eval()
    rgb, depth = make_inputs(1, 48, 80, 1)
    with torch.no_grad():
        enc = model.encode(rgb, depth)
        assert torch.equal(enc.rgb, rgb_model.encoder(rgb)[-1])
        assert torch.equal(enc.depth, depth_model.encoder(F.avg_pool2d(depth, 2))[-1])
    fusion = {id(p) for p in model.fusion_parameters()}
    assert all(id(p) not in fusion for p in model.encoder_rgb.parameters())
    with pytest.raises(CheckpointError):
        model.init_from_unimodal(
            rgb_model, ERFNetEnc(4, ERFNetEncConfig(modality='depth', depth_channels=3))
        )


def test_init_from_unimodal_adapnetpp() -> None:
    kw = dict(encoder='resnet18', multiscale='none', **SMALL_ADAPNET)
    rgb_model = build_backend('adapnetpp', 3, modality='rgb', **kw)
    depth_model = build_backend('adapnetpp', 3, modality='depth', **kw)
    model = build_backend('rfbnet', 3, rfb_stages='res3', **kw)
    assert not any(model.init_from_unimodal(rgb_model, depth_model).values())
    for a, b in zip(
        model.expert_rgb.state_dict().values(), rgb_model.expert.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        RFBNetConfig(rfb_point='X')
    with pytest.raises(ConfigError):
        RFBNetConfig(rfb_stages='res9')


@pytest.mark.parametrize('encoder', ['erfnet', 'resnet18'])
@pytest.mark.parametrize('zero_init', [True, False])
def test_complement_gains_follow_rfb_zero_init(encoder: str, zero_init: bool) -> None:
    """rfb_zero_init=False starts every complementary projection's BN scale at one."""
    extra = {} if encoder == 'erfnet' else SMALL_ADAPNET
    model = RFBNet(4, RFBNetConfig(encoder=encoder, rfb_zero_init=zero_init, **extra))
    expected = 0.0 if zero_init else 1.0
    for rfb in model.rfbs:
        for projection in (rfb.gfu.com_rgb, rfb.gfu.com_depth):
            assert torch.all(projection[1].weight == expected)


@pytest.mark.parametrize('encoder', ['erfnet', 'resnet18'])
def test_encode_gives_the_streams_and_the_stage_features(encoder: str) -> None:
    extra = {} if encoder == 'erfnet' else SMALL_ADAPNET
    model = RFBNet(4, RFBNetConfig(encoder=encoder, **extra)).eval()
    rgb, depth = make_inputs(1, 64, 96, 1)
    with torch.no_grad():
        enc = model.encode(rgb, depth)
    assert enc.interaction.shape[-2:] == enc.depth.shape[-2:]
    if encoder == 'erfnet':
        assert enc.feats_rgb == [] and enc.feats_depth == []
    else:  # stem, then one entry per stage; the last is the final feature
        assert len(enc.feats_rgb) == len(enc.feats_depth) == 5
        assert enc.feats_rgb[-1] is enc.rgb and enc.feats_depth[-1] is enc.depth
