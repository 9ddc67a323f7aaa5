"""The figures of the SSMA / AdapNet++ paper this implementation must reproduce
(doc/backends/ssma.md §2.6, §2.7).

Parameter counts follow the paper, which counted every TF variable: weights, BN scale/offset
and BN moving mean/variance. Models are built on the meta device (no memory, no init cost) and
the 384x768 shapes are checked with forward hooks on meta tensors.
"""

from __future__ import annotations

import pytest
import torch

from rgbd_seg_ros.backends.base import count_parameters
from rgbd_seg_ros.backends.easpp import EASPP
from rgbd_seg_ros.backends.registry import build_backend

NUM_CLASSES = 12  # Cityscapes-11 + void, as in the paper's counts


def _close(value: float, target: float, rel: float) -> bool:
    return abs(value - target) <= rel * target


def test_easpp_parameters() -> None:
    with torch.device('meta'):
        easpp = EASPP(2048, 256, 64, (3, 6, 12))
    weights = sum(p.numel() for n, p in easpp.named_parameters() if n.endswith('conv.weight'))
    total = count_parameters(easpp)
    print(f'eASPP: {weights:,} conv weights, {total:,} parameters (paper 2.04 M)')
    assert weights == 2_039_808  # doc/backends/ssma.md §2.3's recount
    assert _close(total, 2.04e6, 0.01)


def test_adapnetpp_parameters() -> None:
    with torch.device('meta'):
        model = build_backend('adapnetpp', NUM_CLASSES)
    total = count_parameters(model, with_bn_stats=True)
    print(
        f'AdapNet++ (preact ResNet-50, {NUM_CLASSES} classes): {total:,} with BN statistics, '
        f'{count_parameters(model):,} trainable (paper 30.20 M)'
    )
    assert _close(total, 30.20e6, 0.01)
    decoder = count_parameters(model.decoder) - count_parameters(model.decoder.aux_os4) * 2
    print(f'  decoder without aux heads: {decoder:,} (doc/backends/ssma.md §2.7: 4.58 M)')
    assert _close(decoder, 4.58e6, 0.01)


def test_ssma_parameters() -> None:
    with torch.device('meta'):
        model = build_backend('ssma', NUM_CLASSES, depth_channels=3)
    total = count_parameters(model, with_bn_stats=True)
    print(
        f'SSMA RGB-D (2x preact ResNet-50, {NUM_CLASSES} classes): {total:,} with BN '
        f'statistics, {count_parameters(model):,} trainable (paper 56.44 M)'
    )
    assert _close(total, 56.44e6, 0.015)
    assert model.ssma_latent.reduce.out_channels == 32  # 512 / 16
    assert model.ssma_skip8.reduce.out_channels == 8  # 48 / 6


# doc/backends/ssma.md §2.6, input B x 3 x 384 x 768 (C = classes), as (channels, height, width)
ADAPNETPP_SHAPES = {
    'stem': (64, 192, 384),
    'res2': (256, 96, 192),
    'res3': (512, 48, 96),
    'res4': (1024, 24, 48),
    'res5': (2048, 24, 48),
    'easpp_branch': (256, 24, 48),
    'easpp_concat': (1280, 24, 48),
    'easpp_out': (256, 24, 48),
    'skip_os8': (24, 48, 96),
    'skip_os4': (24, 96, 192),
    'deconv1': (256, 48, 96),
    'concat1': (280, 48, 96),
    'conv1': (256, 48, 96),
    'deconv2': (256, 96, 192),
    'concat2': (280, 96, 192),
    'conv2': (256, 96, 192),
    'classifier': (NUM_CLASSES, 96, 192),
    'logits': (NUM_CLASSES, 384, 768),
    'aux_os8': (NUM_CLASSES, 48, 96),
    'aux_os4': (NUM_CLASSES, 96, 192),
}


def _record_shapes(model: torch.nn.Module, expert: torch.nn.Module) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}

    def out_hook(key: str):
        def hook(_m, _inp, out):
            shapes[key] = tuple(out.shape[1:])

        return hook

    def in_hook(key: str):
        def hook(_m, inp):
            shapes[key] = tuple(inp[0].shape[1:])

        return hook

    enc = expert.encoder
    enc.stem.register_forward_hook(out_hook('stem'))
    for s in range(4):
        enc.stages[s].register_forward_hook(out_hook(f'res{s + 2}'))
    expert.easpp.branches[0].register_forward_hook(out_hook('easpp_branch'))
    expert.easpp.project.register_forward_pre_hook(in_hook('easpp_concat'))
    expert.easpp.register_forward_hook(out_hook('easpp_out'))
    expert.skip_os8.register_forward_hook(out_hook('skip_os8'))
    expert.skip_os4.register_forward_hook(out_hook('skip_os4'))
    dec = model.decoder
    dec.up1.register_forward_hook(out_hook('deconv1'))
    dec.conv1.register_forward_pre_hook(in_hook('concat1'))
    dec.conv1.register_forward_hook(out_hook('conv1'))
    dec.up2.register_forward_hook(out_hook('deconv2'))
    dec.conv2.register_forward_pre_hook(in_hook('concat2'))
    dec.conv2.register_forward_hook(out_hook('conv2'))
    dec.classifier.register_forward_hook(out_hook('classifier'))
    dec.up3.register_forward_hook(out_hook('logits'))
    dec.aux_os8.register_forward_hook(out_hook('aux_os8'))
    dec.aux_os4.register_forward_hook(out_hook('aux_os4'))
    return shapes


@pytest.mark.parametrize('name', ['adapnetpp', 'ssma'])
def test_tensor_shapes_384x768(name: str) -> None:
    with torch.device('meta'):
        model = build_backend(name, NUM_CLASSES)
        model.train()
        expert = model.expert if name == 'adapnetpp' else model.expert_rgb
        shapes = _record_shapes(model, expert)
        rgb = torch.empty(2, 3, 384, 768)
        depth = torch.empty(2, 1, 384, 768)
        out = model(rgb, depth)
    for key in ADAPNETPP_SHAPES:
        print(f'{name} {key:13s} {shapes.get(key)}')
    assert shapes == ADAPNETPP_SHAPES
    assert tuple(out.logits.shape) == (2, NUM_CLASSES, 384, 768)
    assert [tuple(a.shape[1:]) for a in out.aux] == [(NUM_CLASSES, 96, 192), (NUM_CLASSES, 48, 96)]
    assert out.aux_weights == (0.6, 0.5)  # doc/backends/ssma.md §2.5
