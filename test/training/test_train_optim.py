"""Parameter groups, encoder detection, schedules, freezing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rgbd_seg_ros.training.config import OptimConfig, ScheduleConfig
from rgbd_seg_ros.training.optim import (
    build_optimizer,
    build_scheduler,
    encoder_prefixes,
    freeze,
    lr_factor,
    set_bn_eval,
    set_frozen_eval,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expert_rgb = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.expert_depth = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        self.decoder = nn.Conv2d(4, 2, 1)


def test_encoder_prefixes_detection():
    net = Net()
    assert encoder_prefixes(net) == ('expert_rgb', 'expert_depth')
    assert encoder_prefixes(net, ['decoder']) == ('decoder',)
    net.encoder_prefixes = ('expert_rgb',)
    assert encoder_prefixes(net) == ('expert_rgb',)
    nested = nn.Module()
    nested.body = nn.Module()
    nested.body.encoder = nn.Conv2d(1, 1, 1)
    assert encoder_prefixes(nested) == ('body.encoder',)


@pytest.mark.parametrize(
    'name, cls',
    [('sgd', torch.optim.SGD), ('adam', torch.optim.Adam), ('adamw', torch.optim.AdamW)],
)
def test_groups_have_encoder_and_decoder_lrs(name, cls):
    net = Net()
    cfg = OptimConfig(name=name, lr=1e-3, encoder_lr=1e-4, weight_decay=1e-4)
    opt = build_optimizer(net, cfg, encoder_prefixes(net))
    assert isinstance(opt, cls)
    by_name = {g['name']: g for g in opt.param_groups}
    assert by_name['encoder']['lr'] == 1e-4 and by_name['decoder']['lr'] == 1e-3
    assert by_name['encoder_no_wd']['weight_decay'] == 0.0  # BN weights and biases
    assert by_name['encoder']['weight_decay'] == 1e-4
    n_params = sum(len(g['params']) for g in opt.param_groups)
    assert n_params == len(list(net.parameters()))


def test_zero_encoder_lr_freezes_it():
    net = Net()
    opt = build_optimizer(net, OptimConfig(lr=1e-3, encoder_lr=0.0), encoder_prefixes(net))
    assert {g['name'].split('_')[0] for g in opt.param_groups} == {'decoder'}
    assert not any(p.requires_grad for p in net.expert_rgb.parameters())


def test_freeze_and_eval_mode():
    net = Net()
    assert freeze(net, ['expert_rgb']) == 4  # conv weight, bias; BN weight, bias
    net.train()
    set_frozen_eval(net, ['expert_rgb'])
    assert not net.expert_rgb[1].training and net.expert_depth[1].training


def test_frozen_bn_keeps_statistics_but_trains():
    net = Net()
    net.train()
    set_bn_eval(net, ['expert_depth'])
    bn = net.expert_depth[1]
    assert not bn.training and bn.weight.requires_grad and net.expert_rgb[1].training


def test_poly_with_warmup():
    cfg = ScheduleConfig(name='poly', power=0.9, warmup_steps=10, warmup_start=0.1)
    assert lr_factor(0, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(5, 110, cfg) == pytest.approx(0.55)
    assert lr_factor(10, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.5**0.9)
    assert lr_factor(110, 110, cfg) == 0.0
    floor = ScheduleConfig(name='poly', min_lr_ratio=0.01)
    assert lr_factor(100, 100, floor) == 0.01
    cos = ScheduleConfig(name='cosine')
    assert lr_factor(50, 100, cos) == pytest.approx(0.5)
    assert lr_factor(3, 100, ScheduleConfig(name='constant')) == 1.0
    assert math.isclose(lr_factor(0, 100, ScheduleConfig()), 1.0)


def test_scheduler_scales_each_group():
    net = Net()
    opt = build_optimizer(
        net, OptimConfig(name='sgd', lr=1.0, encoder_lr=0.1), encoder_prefixes(net)
    )
    sched = build_scheduler(opt, 4, ScheduleConfig(name='poly', power=1.0))
    for _ in range(2):
        opt.step()
        sched.step()
    lrs = {g['name']: g['lr'] for g in opt.param_groups}
    assert lrs['decoder'] == pytest.approx(0.5) and lrs['encoder'] == pytest.approx(0.05)
