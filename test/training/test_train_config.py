"""Training configuration: YAML recipes, dotted overrides, round trip, validation."""

from __future__ import annotations

import pytest

from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training.config import (
    TrainConfig,
    apply_override,
    load_config,
    read_config,
    recipe_dir,
    save_config,
    to_dict,
)


def test_every_shipped_recipe_loads():
    names = sorted(p.stem for p in recipe_dir().glob('*.yaml'))
    assert {'adapnetpp', 'ssma', 'finetune', 'tiny_cpu'} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.recipe == name and cfg.stages


def test_ssma_recipe_is_staged():
    cfg = load_config('ssma')
    assert [s.name for s in cfg.stages] == [
        'expert_rgb',
        'expert_depth',
        'fusion',
        'finetune_decoder',
    ]
    fusion = cfg.stages[2]
    assert cfg.stage_optim(fusion).encoder_lr == 1e-4 and cfg.stage_optim(fusion).lr == 1e-3
    assert [i.stage for i in fusion.init_from] == ['expert_rgb', 'expert_depth']
    assert cfg.stages[3].freeze == ['expert_rgb', 'expert_depth']
    assert cfg.stage_optim(cfg.stages[3]).lr == 1e-5
    assert cfg.stage_backend(cfg.stages[1]) == (
        'adapnetpp',
        {**cfg.model.options, 'modality': 'depth'},
    )


def test_rfbnet_recipes_follow_their_paper():
    """AdapNet++ base: SSMA's steps (150k/150k/100k/50k) with RFBNet's batches, the experts
    frozen in the fine-tune stage (learning rate 0); ERFNetEnc base: lr 5e-4, weight decay
    1e-4, 100k unimodal steps at batch 12, 25k multimodal at batch 9."""
    cfg = load_config('rfbnet')
    assert [(s.name, s.steps, s.batch_size) for s in cfg.stages] == [
        ('expert_rgb', 150000, 7),
        ('expert_depth', 150000, 7),
        ('fusion', 100000, 6),
        ('finetune', 50000, 12),
    ]
    assert cfg.stages[3].freeze == ['expert_rgb', 'expert_depth']
    assert cfg.stage_optim(cfg.stages[3]).lr == 1e-5 and cfg.optim.weight_decay == 5e-4
    assert all(i.strict for i in cfg.stages[2].init_from)
    erf = load_config('rfbnet_erfnet')
    assert [(s.name, s.steps, s.batch_size) for s in erf.stages] == [
        ('unimodal_rgb', 100000, 12),
        ('unimodal_depth', 100000, 12),
        ('fusion', 25000, 9),
    ]
    assert erf.optim.name == 'adam' and erf.optim.lr == 5e-4 and erf.optim.weight_decay == 1e-4
    assert erf.stage_backend(erf.stages[2]) == ('rfbnet', {'encoder': 'erfnet'})
    assert [i.map for i in erf.stages[2].init_from] == [
        {'encoder.': 'encoder_rgb.'},
        {'encoder.': 'encoder_depth.'},
    ]


@pytest.mark.parametrize(
    ('recipe', 'follows', 'aux_resize'),
    [
        ('adapnetpp', False, 'logits'),
        ('ssma', False, 'logits'),
        ('rfbnet', False, 'logits'),
        ('rfbnet_erfnet', False, None),
        ('nanet', False, 'logits'),
        ('depth_gating', True, 'logits'),
    ],
)
def test_paper_recipes_depth_scaling_and_aux_resize(recipe, follows, aux_resize):
    """Only depth-aware gating divides depth by the zoom; the papers' auxiliary losses are on
    logits upsampled to the labels; every paper recipe has a line for its ImageNet files."""
    cfg = load_config(recipe)
    assert cfg.augment.depth_follows_scale is follows
    if aux_resize is not None:
        assert cfg.loss.aux_resize == aux_resize
    assert 'rgb' in cfg.model.encoder_weights


def test_ssma_augmentation_has_skew_and_vignetting():
    for recipe in ('adapnetpp', 'ssma'):
        aug = load_config(recipe).augment
        assert aug.skew == [0.05, 0.10] and aug.vignetting == [210.0, 300.0]
        assert aug.rotation_deg == 13.0 and aug.scale == [0.5, 2.0]
    with pytest.raises(ConfigError, match=r'augment\.skew'):
        load_config('ssma', ['augment.skew=[0.2, 0.1]'])


def test_overrides_and_round_trip(tmp_path):
    cfg = load_config(
        'tiny_cpu',
        [
            'optim.lr=2.5e-4',
            'stages.0.steps=7',
            'augment.crop=[32, 48]',
            'data.root=/x/y',
            'model.options.encoder=resnet34',
            'eval.scales=[1.0]',
            'precision=bf16',
        ],
    )
    assert cfg.optim.lr == 2.5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.stages[0].steps == 7 and cfg.augment.crop == [32, 48]
    assert cfg.model.options['encoder'] == 'resnet34' and cfg.data.root == '/x/y'
    save_config(cfg, tmp_path / 'config.yaml')
    again = read_config(tmp_path / 'config.yaml')
    assert to_dict(again) == to_dict(cfg)
    # the saved file is a recipe too (resume reads it the same way)
    assert to_dict(load_config(tmp_path / 'config.yaml')) == to_dict(cfg)


def test_finetune_inherits_from_base():
    base = load_config('tiny_cpu')
    ft = load_config('finetune')
    assert ft.model.backend == base.model.backend
    assert ft.optim.name == 'adamw' and ft.recipe == 'finetune'
    assert [s.name for s in ft.stages] == ['finetune']


@pytest.mark.parametrize(
    'bad, fragment',
    [
        (['optim.lrr=1'], 'lrr'),
        (['precision=fp8'], 'precision'),
        (['stages.0.steps=many'], 'stages.0.steps'),
        (['stages.5.steps=1'], 'out of range'),
        (['optim.lr'], 'key=value'),
    ],
)
def test_bad_overrides_name_the_key(bad, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config('tiny_cpu', bad)


def test_init_from_must_name_earlier_stage():
    with pytest.raises(ConfigError, match='earlier stage'):
        load_config(None, ['stages=[{name: a, init_from: [{stage: b}]}, {name: b}]'])


def test_apply_override_creates_nested_keys():
    data = {}
    apply_override(data, 'model.options.width=8')
    apply_override(data, 'stages.0.name=x')
    assert data == {'model': {'options': {'width': 8}}, 'stages': [{'name': 'x'}]}
    assert isinstance(TrainConfig().stages[0].steps, int)
