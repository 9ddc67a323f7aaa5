"""Synthetic ImageNet weight files in the layouts users download: the right key names and shapes,
random values. Written out here from each publisher's model definition (torchvision's ResNet,
timm's ``ResNetV2`` with BatchNorm, the ERFNet authors' ImageNet classifier), independently of
the package's encoders, so a test or a recipe check that loads them checks the package against
the real layout, not against itself. Nothing here is downloaded or needs the publishers' code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

RESNET_LAYERS = {
    'resnet18': ('basic', (2, 2, 2, 2)),
    'resnet34': ('basic', (3, 4, 6, 3)),
    'resnet50': ('bottleneck', (3, 4, 6, 3)),
    'resnet101': ('bottleneck', (3, 4, 23, 3)),
}
RESNETV2_LAYERS = {'resnetv2_50': (3, 4, 6, 3), 'resnetv2_101': (3, 4, 23, 3)}


class _Writer:
    """Random tensors of the right kind for each key (BN variances positive)."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.state: dict[str, Tensor] = {}

    def conv(self, key: str, out: int, inp: int, kh: int, kw: int | None = None) -> None:
        kw = kh if kw is None else kw
        self.state[key] = torch.randn(out, inp, kh, kw, generator=self.gen) * 0.05

    def bias(self, key: str, n: int) -> None:
        self.state[key] = torch.randn(n, generator=self.gen) * 0.1

    def bn(self, prefix: str, n: int, counter: bool = True) -> None:
        g = self.gen
        self.state[f'{prefix}.weight'] = 1.0 + 0.1 * torch.randn(n, generator=g)
        self.state[f'{prefix}.bias'] = 0.1 * torch.randn(n, generator=g)
        self.state[f'{prefix}.running_mean'] = 0.1 * torch.randn(n, generator=g)
        self.state[f'{prefix}.running_var'] = 0.5 + torch.rand(n, generator=g)
        if counter:
            self.state[f'{prefix}.num_batches_tracked'] = torch.tensor(1000, dtype=torch.long)


def torchvision_resnet(name: str, seed: int = 0, counter: bool = True) -> dict[str, Tensor]:
    """``torchvision.models.resnetNN().state_dict()``: names and shapes, classifier included."""
    kind, layers = RESNET_LAYERS[name]
    w = _Writer(seed)
    w.conv('conv1.weight', 64, 3, 7)
    w.bn('bn1', 64, counter)
    expansion = 1 if kind == 'basic' else 4
    channels = 64
    for i, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True), 1):
        out = width * expansion
        for b in range(blocks):
            p = f'layer{i}.{b}'
            inp = channels if b == 0 else out
            if kind == 'basic':
                w.conv(f'{p}.conv1.weight', width, inp, 3)
                w.bn(f'{p}.bn1', width, counter)
                w.conv(f'{p}.conv2.weight', width, width, 3)
                w.bn(f'{p}.bn2', width, counter)
            else:
                w.conv(f'{p}.conv1.weight', width, inp, 1)
                w.bn(f'{p}.bn1', width, counter)
                w.conv(f'{p}.conv2.weight', width, width, 3)
                w.bn(f'{p}.bn2', width, counter)
                w.conv(f'{p}.conv3.weight', out, width, 1)
                w.bn(f'{p}.bn3', out, counter)
            if b == 0 and (i > 1 or inp != out):
                w.conv(f'{p}.downsample.0.weight', out, inp, 1)
                w.bn(f'{p}.downsample.1', out, counter)
        channels = out
    w.state['fc.weight'] = torch.randn(1000, channels, generator=w.gen) * 0.01
    w.bias('fc.bias', 1000)
    return w.state


def timm_resnetv2(name: str, seed: int = 0) -> dict[str, Tensor]:
    """``timm.create_model('resnetv2_50').state_dict()`` (BatchNormAct2d, pre-activation
    bottlenecks, conv classifier head): names and shapes."""
    layers = RESNETV2_LAYERS[name]
    w = _Writer(seed)
    w.conv('stem.conv.weight', 64, 3, 7)
    channels = 64
    for s, (blocks, out) in enumerate(zip(layers, (256, 512, 1024, 2048), strict=True)):
        mid = out // 4
        for b in range(blocks):
            p = f'stages.{s}.blocks.{b}'
            inp = channels if b == 0 else out
            if b == 0:
                w.conv(f'{p}.downsample.conv.weight', out, inp, 1)
            w.bn(f'{p}.norm1', inp)
            w.conv(f'{p}.conv1.weight', mid, inp, 1)
            w.bn(f'{p}.norm2', mid)
            w.conv(f'{p}.conv2.weight', mid, mid, 3)
            w.bn(f'{p}.norm3', mid)
            w.conv(f'{p}.conv3.weight', out, mid, 1)
        channels = out
    w.bn('norm', channels)
    w.conv('head.fc.weight', 1000, channels, 1)
    w.bias('head.fc.bias', 1000)
    return w.state


def timm_to_encoder_key(key: str, num_stages: int) -> str:
    """Where a timm ``ResNetV2`` tensor lives in the package's pre-activation encoder."""
    parts = key.split('.')
    if key.startswith('stages.') and parts[2:5] == ['blocks', '0', 'norm1']:
        s = int(parts[1])
        rest = '.'.join(parts[5:])
        return f'stem.norm.{rest}' if s == 0 else f'stages.{s - 1}.norm.{rest}'
    if key.startswith('norm.'):
        return f'stages.{num_stages - 1}.{key}'
    return key


def erfnet_imagenet(seed: int = 0) -> dict[str, object]:
    """The ERFNet authors' ``erfnet_encoder_pretrained.pth.tar``: a training checkpoint whose
    ``state_dict`` holds the DataParallel-wrapped ImageNet classifier (``features.encoder``
    and ``classifier.linear``)."""
    w = _Writer(seed)

    def downsampler(p: str, inp: int, out: int) -> None:
        w.conv(f'{p}.conv.weight', out - inp, inp, 3)
        w.bias(f'{p}.conv.bias', out - inp)
        w.bn(f'{p}.bn', out)

    def nb1d(p: str, c: int) -> None:
        for i in (1, 2):
            w.conv(f'{p}.conv3x1_{i}.weight', c, c, 3, 1)
            w.bias(f'{p}.conv3x1_{i}.bias', c)
            w.conv(f'{p}.conv1x3_{i}.weight', c, c, 1, 3)
            w.bias(f'{p}.conv1x3_{i}.bias', c)
            w.bn(f'{p}.bn{i}', c)

    e = 'features.encoder'
    downsampler(f'{e}.initial_block', 3, 16)
    downsampler(f'{e}.layers.0', 16, 64)
    for i in range(1, 6):
        nb1d(f'{e}.layers.{i}', 64)
    downsampler(f'{e}.layers.6', 64, 128)
    for i in range(7, 15):
        nb1d(f'{e}.layers.{i}', 128)
    w.state['classifier.linear.weight'] = torch.randn(1000, 128, generator=w.gen) * 0.01
    w.bias('classifier.linear.bias', 1000)
    wrapped = {f'module.{k}': v for k, v in w.state.items()}
    return {'epoch': 90, 'arch': 'erfnet', 'state_dict': wrapped, 'best_prec1': 70.0}


def write(state: dict[str, object], path: Path, fmt: str) -> Path:
    """Save ``state`` as ``fmt``: 'pth' (torch.save) or 'safetensors'."""
    if fmt == 'safetensors':
        tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, Tensor)}
        save_file(tensors, str(path))
    else:
        torch.save(state, path)
    return path


def imagenet_file(encoder: str, seed: int = 0) -> tuple[dict[str, object], str, str]:
    """The file a user would give package encoder ``encoder``: its state (as the publisher
    saves it), the publisher's file name and the format to write it in (see :func:`write`).
    ``ValueError`` for an encoder no published ImageNet file fits (``resnet18_half``)."""
    if encoder in RESNET_LAYERS:
        return dict(torchvision_resnet(encoder, seed)), f'{encoder}.pth', 'pth'
    timm_name = 'resnetv2_' + encoder.removeprefix('preact_resnet')
    if encoder.startswith('preact_resnet') and timm_name in RESNETV2_LAYERS:
        return (
            dict(timm_resnetv2(timm_name, seed)),
            f'{timm_name}.a1h_in1k.safetensors',
            'safetensors',
        )
    if encoder == 'erfnet':
        return erfnet_imagenet(seed), 'erfnet_encoder_pretrained.pth.tar', 'pth'
    raise ValueError(f'no published ImageNet file fits encoder {encoder!r}')


def flat(state: dict[str, object], drop: Sequence[str] = ()) -> dict[str, Tensor]:
    """A plain tensor dict (unwrapped, without DDP prefixes), minus ``drop``."""
    inner = state.get('state_dict', state)
    assert isinstance(inner, dict)
    return {
        str(k).removeprefix('module.'): v
        for k, v in inner.items()
        if isinstance(v, Tensor) and k not in drop
    }
