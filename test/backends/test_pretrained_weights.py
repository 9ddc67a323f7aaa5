"""ImageNet weight files in the layouts users have (torchvision ResNet, timm resnetv2, the ERFNet
authors' encoder; .pth or safetensors) load into every encoder that takes them, every tensor
replaced; a file that does not fit, is damaged or is a pickle with code is refused, naming why."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.backends.encoders import build_encoder
from rgbd_seg_ros.backends.erfnet import ERFNetEncoder
from rgbd_seg_ros.backends.pretrained import (
    load_encoder_weights,
    load_stream_weights,
    match_weights,
    read_weight_file,
)
from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.errors import CheckpointError
from rgbd_seg_ros.tools import synthetic_weights as wf


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _forward(encoder: Encoder, channels: int = 3) -> Tensor:
    torch.manual_seed(11)
    x = torch.randn(1, channels, 48, 64)
    with torch.no_grad():
        return encoder.eval()(x)[-1]


def _assert_all_replaced(
    encoder: Encoder, before: dict[str, Tensor], expected: dict[str, Tensor]
) -> None:
    """Every parameter and BN statistic now holds the file's value and differs from before."""
    after = encoder.state_dict()
    for name, _ in encoder.named_parameters():
        assert not torch.equal(after[name], before[name]), f'{name} kept its initial value'
    for key, value in after.items():
        if key.endswith('num_batches_tracked') and key not in expected:
            continue
        torch.testing.assert_close(value, expected[key].to(value.dtype), msg=key)


def _encoder_view_torchvision(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if not k.startswith('fc.')}


def _encoder_view_timm(state: dict[str, Tensor], stages: int) -> dict[str, Tensor]:
    return {
        wf.timm_to_encoder_key(k, stages): v for k, v in state.items() if not k.startswith('head.')
    }


@pytest.mark.parametrize(
    ('name', 'fmt'),
    [
        ('resnet18', 'pth'),
        ('resnet18', 'safetensors'),
        ('resnet34', 'pth'),
        ('resnet50', 'safetensors'),
        ('resnet101', 'pth'),
    ],
)
def test_torchvision_file_replaces_every_tensor(tmp_path: Path, name: str, fmt: str) -> None:
    state = wf.torchvision_resnet(name, seed=1)
    path = wf.write(state, tmp_path / f'{name}.{fmt}', fmt)
    # a dilated trunk (the ANN / depth-gating layout) takes the same file
    encoder = build_encoder(name, output_stride=8)
    before, out_before = _snapshot(encoder), _forward(encoder)
    report = load_encoder_weights(encoder, path)
    print(report)
    assert report.layout == 'torchvision'
    assert report.tensors == len(state) - 2  # all but fc.weight, fc.bias
    assert report.parameters == sum(p.numel() for p in encoder.parameters())
    assert sorted(report.ignored) == ['fc.bias', 'fc.weight']
    assert report.adapted == ''
    _assert_all_replaced(encoder, before, _encoder_view_torchvision(state))
    assert not torch.allclose(_forward(encoder), out_before)


@pytest.mark.parametrize(
    ('file', 'encoder_name', 'fmt'),
    [
        ('resnetv2_50', 'preact_resnet50', 'pth'),
        ('resnetv2_50', 'preact_resnet50', 'safetensors'),
        ('resnetv2_101', 'preact_resnet101', 'safetensors'),
    ],
)
def test_timm_resnetv2_file_replaces_every_tensor(
    tmp_path: Path, file: str, encoder_name: str, fmt: str
) -> None:
    state = wf.timm_resnetv2(file, seed=2)
    path = wf.write(state, tmp_path / f'{file}.{fmt}', fmt)
    # AdapNet++'s encoder: output stride 16 with the paper's multiscale units
    encoder = build_encoder(encoder_name, output_stride=16, multiscale='paper')
    before, out_before = _snapshot(encoder), _forward(encoder)
    report = load_encoder_weights(encoder, path)
    assert report.layout == 'timm-resnetv2'
    assert sorted(report.ignored) == ['head.fc.bias', 'head.fc.weight']
    _assert_all_replaced(encoder, before, _encoder_view_timm(state, 4))
    assert not torch.allclose(_forward(encoder), out_before)


def test_erfnet_authors_imagenet_file(tmp_path: Path) -> None:
    data = wf.erfnet_imagenet(seed=3)
    path = wf.write(data, tmp_path / 'erfnet_encoder_pretrained.pth.tar', 'pth')
    encoder = ERFNetEncoder(3)
    before, out_before = _snapshot(encoder), _forward(encoder)
    report = load_encoder_weights(encoder, path)
    assert report.layout == 'erfnet-imagenet'
    assert sorted(report.ignored) == ['classifier.linear.bias', 'classifier.linear.weight']
    expected = {
        k.removeprefix('features.encoder.'): v
        for k, v in wf.flat(data).items()
        if k.startswith('features.encoder.')
    }
    _assert_all_replaced(encoder, before, expected)
    assert not torch.allclose(_forward(encoder), out_before)


def test_depth_stream_first_conv_mean_for_one_channel_kept_for_three(tmp_path: Path) -> None:
    state = wf.torchvision_resnet('resnet18', seed=4)
    path = wf.write(state, tmp_path / 'resnet18.pth', 'pth')
    metric = build_encoder('resnet18', in_channels=1)
    report = load_encoder_weights(metric, path)
    assert report.adapted == 'mean over its 3 input channels'
    torch.testing.assert_close(metric.conv1.weight, state['conv1.weight'].mean(1, keepdim=True))
    hha = build_encoder('resnet18', in_channels=3)
    assert load_encoder_weights(hha, path).adapted == ''
    torch.testing.assert_close(hha.conv1.weight, state['conv1.weight'])
    four = build_encoder('resnet18', in_channels=4)
    assert 'repeated' in load_encoder_weights(four, path).adapted
    assert tuple(four.conv1.weight.shape) == (64, 4, 7, 7)


def test_stream_weights_fill_both_trunks_of_a_backend(tmp_path: Path) -> None:
    model = build_backend('nanet', num_classes=4, encoder='resnet18', depth_channels=3)
    files = {
        'rgb': str(wf.write(wf.torchvision_resnet('resnet18', 5), tmp_path / 'a.pth', 'pth')),
        'depth': str(
            wf.write(wf.torchvision_resnet('resnet18', 6), tmp_path / 'b.st', 'safetensors')
        ),
    }
    before = _snapshot(model)
    reports = load_stream_weights(model.encoder_streams(), files)
    assert set(reports) == {'rgb', 'depth'}
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    encoder_keys = {k for k in after if k.startswith(('encoder_rgb.', 'encoder_depth.'))}
    assert encoder_keys <= changed
    assert not (changed - encoder_keys), 'only the encoders may change'


# ------------------------------------------------------------------------------ refused files


def _refused(encoder: Encoder, path: Path) -> str:
    before = _snapshot(encoder)
    with pytest.raises(CheckpointError) as info:
        load_encoder_weights(encoder, path)
    after = encoder.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after), 'a refused file changed weights'
    print(info.value)
    return str(info.value)


def test_wrong_layout_is_refused_naming_keys(tmp_path: Path) -> None:
    timm_file = wf.write(wf.timm_resnetv2('resnetv2_50'), tmp_path / 'v2.pth', 'pth')
    message = _refused(build_encoder('resnet50'), timm_file)
    assert 'missing from the file' in message and 'conv1.weight' in message
    assert 'unexpected in the file' in message and 'stem.conv.weight' in message
    assert "torchvision's ResNet state dict" in message  # what this encoder takes
    tv_file = wf.write(wf.torchvision_resnet('resnet50'), tmp_path / 'r50.pth', 'pth')
    message = _refused(build_encoder('preact_resnet50'), tv_file)
    assert 'layer1.0.conv1.weight' in message and 'resnetv2_50' in message


def test_wrong_depth_and_wrong_widths_are_refused(tmp_path: Path) -> None:
    r34 = wf.write(wf.torchvision_resnet('resnet34'), tmp_path / 'r34.pth', 'pth')
    message = _refused(build_encoder('resnet18'), r34)
    assert 'layer1.2.conv1.weight' in message  # ResNet-34 has a third unit in layer1
    r18 = wf.write(wf.torchvision_resnet('resnet18'), tmp_path / 'r18.pth', 'pth')
    message = _refused(build_encoder('resnet18_half'), r18)
    assert 'wrong shape' in message and 'layer1.0.conv1.weight (file (64, 64, 3, 3)' in message
    erf = wf.write(wf.erfnet_imagenet(), tmp_path / 'erf.pth', 'pth')
    message = _refused(ERFNetEncoder(1), erf)  # 15 first filters for 1 channel, 13 in the file
    assert 'initial_block.conv.weight (file (13, 3, 3, 3)' in message


def test_groupnorm_bit_file_and_partial_file_are_refused(tmp_path: Path) -> None:
    state = wf.timm_resnetv2('resnetv2_50')
    no_stats = {k: v for k, v in state.items() if 'running_' not in k}  # GroupNorm-like norms
    message = _refused(
        build_encoder('preact_resnet50'), wf.write(no_stats, tmp_path / 'bit.pth', 'pth')
    )
    assert 'stem.norm.running_mean' in message and 'GroupNorm' in message
    tv = wf.torchvision_resnet('resnet18')
    partial = {k: v for k, v in tv.items() if k != 'layer3.1.bn2.bias'}
    partial['layer5.0.weird'] = torch.zeros(3)
    message = _refused(build_encoder('resnet18'), wf.write(partial, tmp_path / 'p.pth', 'pth'))
    assert 'missing from the file (1): layer3.1.bn2.bias' in message
    assert 'unexpected in the file (1): layer5.0.weird' in message


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_truncated_file_is_refused(tmp_path: Path, fmt: str) -> None:
    path = wf.write(wf.torchvision_resnet('resnet18'), tmp_path / f'r18.{fmt}', fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _refused(build_encoder('resnet18'), path)
    assert 'not a readable weight file' in message


class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: code, not data."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), 'w'))


def test_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / 'code_ran'
    state: dict[str, object] = dict(wf.torchvision_resnet('resnet18'))
    state['extra'] = _Payload(marker)
    path = tmp_path / 'evil.pth'
    torch.save(state, path)
    # the same file read by a plain unpickler would run the payload: the test can fail
    with open(path, 'rb') as stream:
        assert stream.read(2) == b'PK'  # a torch zip archive holding data.pkl
    message = _refused(build_encoder('resnet18'), path)
    assert 'refused' in message and 'weights_only' in message
    assert not marker.exists()
    legacy = tmp_path / 'legacy.pkl'
    legacy.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    assert 'refused' in _refused(build_encoder('resnet18'), legacy)
    assert not marker.exists()
    pickle.loads(legacy.read_bytes())  # what an unguarded reader would have done
    assert marker.exists()


def test_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    encoder = build_encoder('resnet18')
    assert 'not found' in _refused(encoder, tmp_path / 'absent.pth')
    listing = tmp_path / 'list.pth'
    torch.save([torch.zeros(2)], listing)
    assert 'holds no state dict' in _refused(encoder, listing)
    mixed = tmp_path / 'mixed.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'note': 'hello'}, mixed)
    assert 'not tensors: note' in _refused(encoder, mixed)
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(b'not a weight file at all')
    assert 'not a readable weight file' in _refused(encoder, junk)


def test_match_on_meta_device_reads_shapes_only(tmp_path: Path) -> None:
    """The trainer checks every file against its stage's encoders before training starts,
    with the networks on the meta device."""
    path = wf.write(wf.torchvision_resnet('resnet50'), tmp_path / 'r50.pth', 'pth')
    with torch.device('meta'):
        encoder = build_encoder('resnet50', output_stride=8)
    found = match_weights(encoder, read_weight_file(path))
    assert found.ok and found.layout == 'torchvision'
