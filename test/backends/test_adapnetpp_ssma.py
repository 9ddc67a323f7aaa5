"""AdapNet++ and SSMA specifics: modalities, staged training, configurable variants,
defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from backend_testing import make_inputs

from rgbd_seg_ros.backends.base import SegOutput
from rgbd_seg_ros.backends.defaults import defaults_yaml
from rgbd_seg_ros.backends.registry import build_backend, make_config
from rgbd_seg_ros.errors import CheckpointError, ConfigError

SMALL = {
    'encoder': 'resnet18',
    'easpp_channels': 32,
    'easpp_bottleneck': 8,
    'decoder_channels': 32,
}


@pytest.mark.parametrize('name', ['adapnetpp', 'ssma'])
def test_yaml_defaults_match_the_dataclass(name: str) -> None:
    config = make_config(name, **yaml.safe_load(defaults_yaml(name)))
    assert config == make_config(name)
    assert config.encoder == 'preact_resnet50'
    assert config.aux_weights == (0.6, 0.5)


def test_unknown_or_bad_options_are_rejected() -> None:
    with pytest.raises(ConfigError, match='no option'):
        make_config('ssma', eta=3)
    with pytest.raises(ConfigError, match='modality'):
        build_backend('adapnetpp', 3, modality='thermal', **SMALL)
    with pytest.raises(ConfigError, match='ssma_gating'):
        make_config('ssma', ssma_gating='max')


def test_unimodal_modalities_read_one_input() -> None:
    rgb, depth = make_inputs(1, 40, 52, 3)
    rgb_model = build_backend('adapnetpp', 3, **SMALL).eval()
    depth_model = build_backend('adapnetpp', 3, modality='depth', depth_channels=3, **SMALL)
    depth_model.eval()
    with torch.no_grad():
        a = rgb_model(rgb, depth)
        torch.testing.assert_close(a, rgb_model(rgb, None))
        torch.testing.assert_close(a, rgb_model(rgb, depth * 0 + 5))
        b = depth_model(rgb, depth)
        torch.testing.assert_close(b, depth_model(None, depth))
    assert depth_model.expert.encoder.conv1.in_channels == 3
    with pytest.raises(ValueError, match='depth must be'):
        depth_model(rgb, depth[:, :1])


def test_ssma_rejects_mismatched_inputs() -> None:
    model = build_backend('ssma', 3, **SMALL).eval()
    rgb, depth = make_inputs(1, 40, 52, 1)
    with pytest.raises(ValueError, match='depth must be'):
        model(rgb, torch.zeros(1, 3, 40, 52))
    with pytest.raises(ValueError, match='sizes differ'):
        model(rgb, depth[..., :-1])


def test_staged_training_initialises_experts_from_unimodal_models(tmp_path: Path) -> None:
    torch.manual_seed(1)
    rgb_net = build_backend('adapnetpp', 3, **SMALL)
    depth_net = build_backend('adapnetpp', 3, modality='depth', **SMALL)
    fused = build_backend('ssma', 3, **SMALL)
    decoder_before = {k: v.clone() for k, v in fused.decoder.state_dict().items()}
    report = fused.init_experts_from_unimodal(rgb_net, depth_net.state_dict())
    assert not any(report.values())
    for expert, source in ((fused.expert_rgb, rgb_net), (fused.expert_depth, depth_net)):
        for key, value in expert.state_dict().items():
            torch.testing.assert_close(value, source.expert.state_dict()[key])
    for key, value in fused.decoder.state_dict().items():
        torch.testing.assert_close(value, decoder_before[key])
    # from checkpoints on disk
    from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, save_checkpoint
    from rgbd_seg_ros.backends.registry import config_to_dict

    paths = []
    for name, net in (('rgb', rgb_net), ('depth', depth_net)):
        meta = CheckpointMeta(
            backend='adapnetpp', config=config_to_dict(net.config), class_names=['a', 'b', 'c']
        )
        paths.append(tmp_path / f'{name}.safetensors')
        save_checkpoint(paths[-1], net, meta)
    again = build_backend('ssma', 3, **SMALL)
    again.init_experts_from_unimodal(*paths)
    torch.testing.assert_close(
        again.expert_depth.encoder.conv1.weight, depth_net.expert.encoder.conv1.weight
    )
    # wrong source: different encoder
    other = build_backend('adapnetpp', 3, **{**SMALL, 'encoder': 'resnet34'})
    with pytest.raises(CheckpointError, match='rgb expert'):
        build_backend('ssma', 3, **SMALL).init_experts_from_unimodal(other, depth_net)


def test_parameter_groups_and_stage3_freezing() -> None:
    model = build_backend('ssma', 3, **SMALL)
    experts = {id(p) for p in model.expert_parameters()}
    fusion = {id(p) for p in model.fusion_parameters()}
    assert not experts & fusion
    assert experts | fusion == {id(p) for p in model.parameters()}
    model.freeze_experts()
    model.train()
    assert not model.expert_rgb.training and not model.expert_depth.training
    assert model.decoder.training
    assert not any(p.requires_grad for p in model.expert_parameters())
    rgb, depth = make_inputs(2, 33, 41, 1)
    stats = model.expert_rgb.encoder.bn1.running_mean.clone()
    out = model(rgb, depth)
    out.logits.mean().backward()
    torch.testing.assert_close(model.expert_rgb.encoder.bn1.running_mean, stats)
    model.freeze_experts(False)
    model.train()
    assert model.expert_rgb.training


@pytest.mark.parametrize(
    'options',
    [
        {'ssma_gating': 'softmax'},
        {'ssma_skip_bn': False, 'ssma_latent_kernel': 3},
        {'skip_attention': False},
        {'attention_activation': 'sigmoid'},
        {'classifier_bn_relu': False, 'aux_loss': False},
        {'pooled_norm': False, 'multiscale': 'code', 'output_stride': 8},
        {'output_stride': 32, 'multiscale': 'none'},
    ],
)
def test_ssma_variants_train_and_infer(options: dict) -> None:
    model = build_backend('ssma', 3, **SMALL, **options)
    batch = 1 if not options.get('pooled_norm', True) else 2
    rgb, depth = make_inputs(batch, 37, 45, 1)
    out = model.train()(rgb, depth)
    assert isinstance(out, SegOutput)
    assert len(out.aux) == (0 if options.get('aux_loss') is False else 2)
    (out.logits.mean() + sum(a.mean() for a in out.aux)).backward()
    with torch.no_grad():
        assert model.eval()(rgb, depth).shape == (batch, 3, 37, 45)


def test_ssma_gates() -> None:
    from rgbd_seg_ros.backends.blocks import SSMABlock

    a, b = torch.randn(2, 24, 9, 11), torch.randn(2, 24, 9, 11)
    sig = SSMABlock(24, 6).eval()
    s = sig.gates(a, b)
    assert s.shape == (2, 48, 9, 11) and s.min() >= 0 and s.max() <= 1
    assert sig.reduce.out_channels == 8
    soft = SSMABlock(24, 6, gating='softmax').eval()
    s = soft.gates(a, b)
    torch.testing.assert_close(s[:, :24] + s[:, 24:], torch.ones(2, 24, 9, 11))
    assert sig(a, b).shape == (2, 24, 9, 11)
