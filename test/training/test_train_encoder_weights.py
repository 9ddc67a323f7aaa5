"""Recipes start their encoders from local ImageNet files (``model.encoder_weights``): the
stages that start from scratch load them, stages with other sources keep theirs, a wrong file
fails before the first stage, and the run reports what it initialised and what it froze."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import train_fixtures as tf

from rgbd_seg_ros.errors import CheckpointError, ConfigError
from rgbd_seg_ros.tools import synthetic_weights as wf
from rgbd_seg_ros.training.config import load_config
from rgbd_seg_ros.training.context import plan_stage
from rgbd_seg_ros.training.model_init import (
    build_stage_model,
    check_encoder_weights_plan,
    takes_encoder_weights,
)
from rgbd_seg_ros.training.trainer import run_training

SLIM_SSMA = (
    '{encoder: resnet18, multiscale: none, easpp_channels: 16, easpp_bottleneck: 8, '
    'decoder_channels: 16, skip_channels: 8, dropout: 0.0}'
)


@pytest.fixture(scope='module')
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('imagenet')
    return {
        'r18': wf.write(wf.torchvision_resnet('resnet18', 1), root / 'resnet18.pth', 'pth'),
        'r18b': wf.write(
            wf.torchvision_resnet('resnet18', 2), root / 'resnet18b.safetensors', 'safetensors'
        ),
        'r34': wf.write(wf.torchvision_resnet('resnet34', 3), root / 'resnet34.pth', 'pth'),
    }


def _ssma_recipe(tmp_path: Path, rgb: Path, depth: Path, *extra: str) -> list[str]:
    return [
        f'model.options={SLIM_SSMA}',
        f'model.encoder_weights={{rgb: {rgb}, depth: {depth}}}',
        f'output_dir={tmp_path / "run"}',
        *extra,
    ]


def test_paper_recipe_stages_that_take_encoder_weights(files: dict[str, Path], tmp_path: Path):
    cfg = load_config('ssma', _ssma_recipe(tmp_path, files['r18'], files['r18b']))
    # the unimodal experts start from scratch; fusion takes them (init_from), the fine-tune
    # stage continues the fusion stage
    assert [takes_encoder_weights(cfg, i) for i in range(4)] == [True, True, False, False]
    check_encoder_weights_plan(cfg)  # both files fit their stage's encoder
    wrong = load_config('ssma', _ssma_recipe(tmp_path, files['r18'], files['r34']))
    with pytest.raises(CheckpointError) as info:
        check_encoder_weights_plan(wrong)
    message = str(info.value)
    assert 'stage expert_depth, model.encoder_weights.depth' in message
    assert 'layer1.2.conv1.weight' in message and "torchvision's ResNet" in message
    # a resumed run whose depth stage is done will not read that file again
    check_encoder_weights_plan(wrong, finished={'expert_depth'})


def test_a_file_no_stage_reads_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    recipe = _ssma_recipe(
        tmp_path,
        files['r18'],
        files['r18b'],
        'model.pretrained=models/default.safetensors',
        'stages=[{name: only, steps: 1}]',
    )
    cfg = load_config('ssma', recipe)
    with pytest.raises(ConfigError, match='no stage starts a depth, rgb encoder'):
        check_encoder_weights_plan(cfg)
    with pytest.raises(ConfigError, match=r'model\.encoder_weights\.hha: unknown stream'):
        load_config('ssma', ['model.encoder_weights={hha: x.pth}'])


def test_stage_model_holds_the_files_weights(files: dict[str, Path], tmp_path: Path) -> None:
    """The seam the trainer uses: rgb tensors as in the file, the 1-channel depth stem the mean
    of the RGB filters, everything else of the encoders from the file too."""
    cfg = load_config(
        'ssma',
        _ssma_recipe(
            tmp_path,
            files['r18'],
            files['r18b'],
            'data.depth_encoding=metric',
            'stages=[{name: fused, steps: 1}]',
        ),
    )
    notes: list[str] = []
    model = build_stage_model(cfg, plan_stage(cfg, 0, tmp_path), 4, notes.append)
    rgb = wf.torchvision_resnet('resnet18', 1)
    depth = wf.torchvision_resnet('resnet18', 2)
    enc_rgb = model.expert_rgb.encoder.state_dict()
    enc_depth = model.expert_depth.encoder.state_dict()
    for key, value in enc_rgb.items():
        torch.testing.assert_close(value, rgb[key].to(value.dtype), msg=key)
    for key, value in enc_depth.items():
        want = depth[key].mean(1, keepdim=True) if key == 'conv1.weight' else depth[key]
        torch.testing.assert_close(value, want.to(value.dtype), msg=key)
    text = '\n'.join(notes)
    print(text)
    assert f'rgb encoder initialised from {files["r18"]} (torchvision layout' in text
    assert 'depth encoder initialised from' in text
    assert 'first convolution mean over its 3 input channels' in text
    assert 'classifier keys unused: fc.weight, fc.bias' in text


@pytest.mark.slow
def test_run_reports_initialised_and_frozen_parameters(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A two-stage run from ImageNet files: the first stage loads them, the second continues it
    with the experts frozen; stderr says so with parameter counts."""
    root = tf.write_dataset(tmp_path / 'ds', n_train=4, n_val=2)
    overrides = tf.tiny_overrides(
        root,
        tmp_path / 'run',
        **{
            'model.backend': 'ssma',
            'model.options': SLIM_SSMA,
            'model.encoder_weights': f'{{rgb: {files["r18"]}}}',
            'stages': '[{name: a, steps: 1, batch_size: 2}, '
            '{name: b, steps: 1, batch_size: 2, freeze: [expert_rgb, expert_depth]}]',
        },
    )
    run_training(load_config('tiny_cpu', overrides))
    err = capsys.readouterr().err
    assert f'a: rgb encoder initialised from {files["r18"]}' in err
    assert 'a: depth encoder: random initialisation' in err
    assert 'b: rgb encoder' not in err  # b continues a
    pattern = r'\[train\] (\w+): ([\d,]+) parameters: ([\d,]+) trained, ([\d,]+) frozen'
    counts = {
        m.group(1): [int(m.group(i).replace(',', '')) for i in (2, 3, 4)]
        for m in re.finditer(pattern, err)
    }
    total, trained, frozen = counts['a']
    assert frozen == 0 and trained == total
    total, trained, frozen = counts['b']
    assert frozen > trained > 0 and trained + frozen == total
    assert '(freeze expert_rgb, expert_depth)' in err
