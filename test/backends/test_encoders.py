"""Encoders: torchvision-compatible keys, the features API at every output stride, multiscale
residual units, and the local pretrained-weight loader with its report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rgbd_seg_ros.backends.blocks import MultiScaleConv2d
from rgbd_seg_ros.backends.encoder_base import ADAPNETPP_RATES, FeatureInfo
from rgbd_seg_ros.backends.encoders import build_encoder, list_encoders
from rgbd_seg_ros.backends.pretrained import (
    LoadReport,
    WeightMatch,
    load_encoder_weights,
    match_weights,
    read_weight_file,
)
from rgbd_seg_ros.errors import CheckpointError, ConfigError

BN = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
LAYERS = {
    'resnet18': (2, 2, 2, 2),
    'resnet34': (3, 4, 6, 3),
    'resnet50': (3, 4, 6, 3),
    'resnet101': (3, 4, 23, 3),
}


def torchvision_keys(name: str) -> set[str]:
    """torchvision ResNet state-dict keys, written out from its naming (fc excluded)."""
    bottleneck = name in ('resnet50', 'resnet101')
    convs = ('conv1', 'conv2', 'conv3') if bottleneck else ('conv1', 'conv2')
    keys = {'conv1.weight', *(f'bn1.{p}' for p in BN)}
    for layer, blocks in enumerate(LAYERS[name], start=1):
        for b in range(blocks):
            prefix = f'layer{layer}.{b}.'
            for i, conv in enumerate(convs, start=1):
                keys.add(prefix + f'{conv}.weight')
                keys.update(prefix + f'bn{i}.{p}' for p in BN)
            if b == 0 and (layer > 1 or bottleneck):
                keys.add(prefix + 'downsample.0.weight')
                keys.update(prefix + f'downsample.1.{p}' for p in BN)
    return keys


def timm_resnetv2_keys(layers: tuple[int, ...]) -> set[str]:
    """timm ``resnetv2_50``-layout keys (PreActBottleneck, BatchNormAct2d, conv head)."""
    keys = {'stem.conv.weight', 'head.fc.weight', 'head.fc.bias', *(f'norm.{p}' for p in BN)}
    for s, blocks in enumerate(layers):
        for b in range(blocks):
            prefix = f'stages.{s}.blocks.{b}.'
            for i in (1, 2, 3):
                keys.add(prefix + f'conv{i}.weight')
                keys.update(prefix + f'norm{i}.{p}' for p in BN)
            if b == 0:
                keys.add(prefix + 'downsample.conv.weight')
    return keys


def native_to_timm(state: dict[str, torch.Tensor], stages: int) -> dict[str, torch.Tensor]:
    """The inverse of the loader's renaming, written independently for the test."""
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith('stem.norm.'):
            new = 'stages.0.blocks.0.norm1.' + key[len('stem.norm.') :]
        elif key.startswith('stages.') and '.norm.' in key and '.blocks.' not in key:
            s = int(key.split('.')[1])
            rest = key.split('.norm.', 1)[1]
            new = 'norm.' + rest if s == stages - 1 else f'stages.{s + 1}.blocks.0.norm1.{rest}'
        out[new] = value
    return out


@pytest.mark.parametrize('name', ['resnet18', 'resnet34', 'resnet50', 'resnet101'])
def test_torchvision_key_compatibility(name: str) -> None:
    with torch.device('meta'):
        encoder = build_encoder(name, output_stride=32)
    state = encoder.state_dict()
    assert set(state) == torchvision_keys(name)
    assert tuple(state['conv1.weight'].shape) == (64, 3, 7, 7)
    assert state['layer4.1.conv2.weight'].shape[0] == 512


def test_multiscale_keeps_keys_and_shapes() -> None:
    with torch.device('meta'):
        plain = build_encoder('preact_resnet50', multiscale=None).state_dict()
        multi = build_encoder('preact_resnet50', multiscale='paper').state_dict()
        v1 = build_encoder('resnet50', multiscale='paper').state_dict()
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in multi.items()}
    assert set(v1) == torchvision_keys('resnet50')


def test_preact_layout_matches_timm_after_renaming() -> None:
    with torch.device('meta'):
        encoder = build_encoder('preact_resnet50')
    timm_like = native_to_timm(encoder.state_dict(), 4)
    assert set(timm_like) | {'head.fc.weight', 'head.fc.bias'} == timm_resnetv2_keys((3, 4, 6, 3))


EXPECTED_STRIDES = {8: [2, 4, 8, 8, 8], 16: [2, 4, 8, 16, 16], 32: [2, 4, 8, 16, 32]}


@pytest.mark.parametrize('output_stride', [8, 16, 32])
@pytest.mark.parametrize('name', list_encoders())
def test_feature_info_per_output_stride(name: str, output_stride: int) -> None:
    with torch.device('meta'):
        encoder = build_encoder(name, output_stride=output_stride)
        feats = encoder(torch.empty(1, 3, 97, 130))
    channels = {
        'resnet18': [64, 64, 128, 256, 512],
        'resnet34': [64, 64, 128, 256, 512],
        'resnet18_half': [32, 32, 64, 128, 256],
    }.get(name, [64, 256, 512, 1024, 2048])
    assert all(isinstance(f, FeatureInfo) for f in encoder.feature_info)
    assert encoder.channels == channels
    assert encoder.strides == EXPECTED_STRIDES[output_stride]
    assert encoder.output_stride == output_stride
    for feat, info in zip(feats, encoder.feature_info, strict=True):
        # 7x7/2 conv and the 3x3/2 max-pool round up, as do the strided 3x3s
        h, w = 97, 130
        for _ in range(info.stride.bit_length() - 1):
            h, w = (h + 1) // 2, (w + 1) // 2
        assert tuple(feat.shape[1:]) == (info.channels, h, w), info


def test_small_encoder_forward_values() -> None:
    encoder = build_encoder('resnet18', output_stride=16).eval()
    with torch.no_grad():
        feats = encoder(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (2, 64, 32, 32),
        (2, 64, 16, 16),
        (2, 128, 8, 8),
        (2, 256, 4, 4),
        (2, 512, 4, 4),
    ]
    assert all(torch.isfinite(f).all() for f in feats)


def test_paper_multiscale_rates_are_placed_on_the_right_units() -> None:
    with torch.device('meta'):
        encoder = build_encoder('preact_resnet50', output_stride=16, multiscale='paper')
    rates = {}
    for s, stage in enumerate(encoder.stages):
        for b, block in enumerate(stage.blocks):
            if isinstance(block.conv2, MultiScaleConv2d):
                rates[f'res{s + 2}{"abcdef"[b]}'] = block.conv2.rates
    assert rates == {
        'res3d': (1, 2),
        'res4c': (1, 2),
        'res4d': (1, 4),
        'res4e': (1, 8),
        'res4f': (1, 16),
        'res5a': (2, 4),
        'res5b': (2, 8),
        'res5c': (2, 16),
    }
    with torch.device('meta'):
        code = build_encoder('preact_resnet50', multiscale='code')
    assert {b.conv2.rates for b in code.stages[3].blocks} == {(2, 2)}
    with torch.device('meta'):
        custom = build_encoder('preact_resnet50', multiscale=[[], [], [[1, 3]], [[2, 6]]])
    assert custom.stages[2].blocks[-1].conv2.rates == (1, 3)
    assert custom.stages[3].blocks[-1].conv2.rates == (2, 6)
    assert not isinstance(custom.stages[3].blocks[0].conv2, MultiScaleConv2d)
    assert ADAPNETPP_RATES[2][-1] == (1, 16)


def test_multiscale_rates_scale_with_output_stride() -> None:
    with torch.device('meta'):
        os8 = build_encoder('preact_resnet50', output_stride=8, multiscale='paper')
        os32 = build_encoder('preact_resnet50', output_stride=32, multiscale='paper')
    assert os8.stages[3].blocks[0].conv2.rates == (4, 8)
    assert os8.stages[2].blocks[-1].conv2.rates == (2, 32)
    assert os32.stages[3].blocks[0].conv2.rates == (1, 2)


def test_multiscale_conv_is_two_dilated_convs_on_the_output_halves() -> None:
    conv = MultiScaleConv2d(8, 6, (1, 3), stride=2)
    x = torch.randn(2, 8, 17, 19)
    y = conv(x)
    a = F.conv2d(x, conv.weight[:3], stride=2, padding=1, dilation=1)
    b = F.conv2d(x, conv.weight[3:], stride=2, padding=3, dilation=3)
    torch.testing.assert_close(y, torch.cat((a, b), 1))
    plain = MultiScaleConv2d(8, 6, (1, 1))
    torch.testing.assert_close(plain(x), F.conv2d(x, plain.weight, padding=1))


def test_bad_encoder_options() -> None:
    with pytest.raises(ConfigError, match='valid encoders'):
        build_encoder('resnet9000')
    with pytest.raises(ConfigError, match='output_stride'):
        build_encoder('resnet18', output_stride=4)
    with pytest.raises(ConfigError, match='multiscale'):
        build_encoder('resnet18', multiscale='sometimes')


def _torchvision_file(tmp_path: Path, drop: str, extra: str) -> tuple[Path, dict]:
    torch.manual_seed(7)
    source = build_encoder('resnet18', output_stride=32)
    state = dict(source.state_dict())
    state['fc.weight'] = torch.randn(1000, 512)
    state['fc.bias'] = torch.randn(1000)
    state[extra] = torch.zeros(3)
    del state[drop]
    path = tmp_path / 'resnet18-local.pth'
    torch.save(state, path)
    return path, state


def test_torchvision_file_match_reports_missing_and_unexpected(tmp_path: Path) -> None:
    """The match names what does not fit; the load then refuses the file as a whole."""
    path, state = _torchvision_file(tmp_path, drop='layer3.1.bn2.bias', extra='layer5.0.weird')
    encoder = build_encoder('resnet18', output_stride=16)
    before = encoder.state_dict()['layer2.0.conv1.weight'].clone()
    found = match_weights(encoder, read_weight_file(path))
    assert isinstance(found, WeightMatch)
    assert found.layout == 'torchvision'
    assert found.missing == ('layer3.1.bn2.bias',)
    assert found.unexpected == ('layer5.0.weird',)
    assert sorted(found.ignored) == ['fc.bias', 'fc.weight']
    assert not found.mismatched and not found.ok
    assert 'missing from the file (1): layer3.1.bn2.bias' in found.problems()
    key = 'layer2.0.conv1.weight'
    torch.testing.assert_close(found.loadable[key], state[key])
    with pytest.raises(CheckpointError, match=r'layer3\.1\.bn2\.bias'):
        load_encoder_weights(encoder, path)
    torch.testing.assert_close(encoder.state_dict()['layer2.0.conv1.weight'], before)  # untouched


def test_load_clean_torchvision_file_is_ok_and_matches(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = build_encoder('resnet18', output_stride=32).eval()
    state = {
        **source.state_dict(),
        'fc.weight': torch.randn(1000, 512),
        'fc.bias': torch.zeros(1000),
    }
    path = tmp_path / 'wrapped.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in state.items()}}, path)
    target = build_encoder('resnet18', output_stride=32).eval()
    report = load_encoder_weights(target, path)
    assert isinstance(report, LoadReport)
    assert report.tensors == len(state) - 2, str(report)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        for a, b in zip(source(x), target(x), strict=True):
            torch.testing.assert_close(a, b)


def test_load_timm_resnetv2_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(5)
    source = build_encoder('preact_resnet50', output_stride=32, multiscale=None).eval()
    timm_state = native_to_timm(source.state_dict(), 4)
    timm_state['head.fc.weight'] = torch.randn(1000, 2048, 1, 1)
    timm_state['head.fc.bias'] = torch.zeros(1000)
    assert set(timm_state) == timm_resnetv2_keys((3, 4, 6, 3))
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in timm_state.items()}, str(path))
    target = build_encoder('preact_resnet50', output_stride=32, multiscale=None).eval()
    report = load_encoder_weights(target, path)
    assert report.layout == 'timm-resnetv2'
    assert sorted(report.ignored) == ['head.fc.bias', 'head.fc.weight']
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        for a, b in zip(source(x), target(x), strict=True):
            torch.testing.assert_close(a, b)
    # multiscale units take the same file and split the 3x3 weights along the outputs
    multi = build_encoder('preact_resnet50', multiscale='paper')
    assert load_encoder_weights(multi, path).tensors == report.tensors
    torch.testing.assert_close(
        multi.stages[3].blocks[2].conv2.weight, source.stages[3].blocks[2].conv2.weight
    )


def test_match_adapts_stem_to_one_channel_and_reports_mismatch(tmp_path: Path) -> None:
    _, state = _torchvision_file(tmp_path, drop='layer1.0.bn1.bias', extra='extra')
    state2 = dict(state)
    state2['layer4.1.conv2.weight'] = torch.zeros(7, 7, 3, 3)
    depth_encoder = build_encoder('resnet18', in_channels=1)
    found = match_weights(depth_encoder, state2)
    assert found.adapted == 'mean over its 3 input channels'
    torch.testing.assert_close(
        found.loadable['conv1.weight'], state['conv1.weight'].mean(1, keepdim=True)
    )
    assert len(found.mismatched) == 1 and found.mismatched[0].startswith('layer4.1.conv2')
    assert 'layer4.1.conv2.weight' not in found.missing


def test_load_rejects_unreadable_or_foreign_files(tmp_path: Path) -> None:
    encoder = build_encoder('resnet18')
    with pytest.raises(CheckpointError, match='not found'):
        load_encoder_weights(encoder, tmp_path / 'absent.pth')
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a torch file at all')
    with pytest.raises(CheckpointError):
        load_encoder_weights(encoder, junk)
    foreign = tmp_path / 'foreign.pth'
    torch.save({'something.else': torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match=r'unexpected in the file \(1\): something\.else'):
        load_encoder_weights(encoder, foreign)
