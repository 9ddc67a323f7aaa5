"""``esanet_add`` beyond the registry-wide suite: stage-wise encoder and its size vs SSMA."""

from __future__ import annotations

import pytest
import torch
import yaml

from rgbd_seg_ros.backends.base import count_parameters
from rgbd_seg_ros.backends.defaults import defaults_yaml
from rgbd_seg_ros.backends.encoders import build_encoder
from rgbd_seg_ros.backends.registry import build_backend, make_config
from rgbd_seg_ros.backends.two_stream_add import encoder_stage


@pytest.mark.parametrize('name', ['resnet18', 'preact_resnet50'])
def test_stagewise_encoder_matches_forward(name: str) -> None:
    encoder = build_encoder(name, output_stride=16).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = encoder(x)
        y, got = x, []
        for index in range(5):
            y = encoder_stage(encoder, index, y)
            got.append(y)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_fewer_parameters_than_ssma() -> None:
    baseline = build_backend('esanet_add', num_classes=20, encoder='resnet18')
    ssma = build_backend('ssma', num_classes=20, encoder='resnet18')
    assert count_parameters(baseline) < count_parameters(ssma)


def test_config_defaults() -> None:
    config = make_config('esanet_add', **yaml.safe_load(defaults_yaml('esanet_add')))
    assert config.encoder == 'resnet34' and config.aux_weights == (0.5, 0.5)
