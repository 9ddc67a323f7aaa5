"""Optimisers, parameter groups and learning-rate schedules of the recipes.

Parameter groups: encoder parameters (module-name prefixes declared by the backend as
``encoder_prefixes``, or listed in the configuration) get ``encoder_lr``; the rest (decoder,
fusion, heads) get ``lr``. Norm weights and biases can be exempt from weight decay. Frozen
parameters (``requires_grad=False``) are left out.

Schedules are multiplicative factors of each group's base lr, per optimiser step: a linear
warm-up from ``warmup_start`` to 1 over ``warmup_steps``, then ``poly`` ``(1 - t)^power``,
``cosine`` or ``constant``, floored at ``min_lr_ratio``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rgbd_seg_ros.training.config import OptimConfig, ScheduleConfig


def encoder_prefixes(model: nn.Module, configured: Sequence[str] = ()) -> tuple[str, ...]:
    """Configured prefixes, else the backend's ``encoder_prefixes``, else the top-level
    children named ``encoder``/``expert`` (optionally ``_<suffix>``: ``expert_rgb``,
    ``encoder_depth``), else every outermost sub-module named ``encoder``."""
    if configured:
        return tuple(configured)
    declared = getattr(model, 'encoder_prefixes', None)
    if declared:
        return tuple(declared)
    top = tuple(
        name for name, _ in model.named_children() if name.split('_')[0] in ('encoder', 'expert')
    )
    if top:
        return top
    found: list[str] = []
    for name, _ in model.named_modules():
        if name.split('.')[-1] == 'encoder' and not matches(name, found):
            found.append(name)
    return tuple(found)


def matches(name: str, prefixes: Sequence[str]) -> bool:
    """Whether parameter/module ``name`` lies under one of the dotted ``prefixes``."""
    for prefix in prefixes:
        p = prefix.rstrip('.')
        if name == p or name.startswith(p + '.'):
            return True
    return False


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith('.bias')


def param_groups(model: nn.Module, cfg: OptimConfig, enc_prefixes: Sequence[str]) -> list[dict]:
    """Groups keyed by (encoder or not, weight decay or not); empty groups are dropped."""
    enc_lr = cfg.lr if cfg.encoder_lr is None else cfg.encoder_lr
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_enc = matches(name, enc_prefixes)
        no_wd = cfg.no_decay_norm_bias and _no_decay(name, param)
        buckets.setdefault((is_enc, no_wd), []).append(param)
    groups = []
    for (is_enc, no_wd), params in sorted(buckets.items()):
        lr = enc_lr if is_enc else cfg.lr
        if lr == 0:
            for p in params:  # lr 0 means frozen: no grads, no optimiser state
                p.requires_grad_(False)
            continue
        groups.append(
            {
                'params': params,
                'lr': lr,
                'weight_decay': 0.0 if no_wd else cfg.weight_decay,
                'name': f'{"encoder" if is_enc else "decoder"}{"_no_wd" if no_wd else ""}',
            }
        )
    return groups


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, enc_prefixes: Sequence[str]
) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, enc_prefixes)
    if not groups:
        raise ValueError('no trainable parameters (everything frozen or lr 0)')
    if cfg.name == 'sgd':
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    beta1, beta2 = cfg.betas
    if cfg.name == 'adam':
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(beta1, beta2), eps=cfg.eps)
    if cfg.name == 'adamw':
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(beta1, beta2), eps=cfg.eps)
    raise ValueError(f'unknown optimiser {cfg.name!r}')


def lr_factor(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Factor of the base lr at optimiser step ``step`` (0-based) of ``total_steps``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / cfg.warmup_steps
    if cfg.name == 'constant':
        factor = 1.0
    else:
        span = max(total_steps - cfg.warmup_steps, 1)
        t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
        if cfg.name == 'poly':
            factor = (1.0 - t) ** cfg.power
        elif cfg.name == 'cosine':
            factor = 0.5 * (1.0 + math.cos(math.pi * t))
        else:
            raise ValueError(f'unknown schedule {cfg.name!r}')
    return max(factor, cfg.min_lr_ratio)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, cfg: ScheduleConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg)
    )


def freeze(model: nn.Module, prefixes: Sequence[str]) -> int:
    """No gradients for parameters under ``prefixes``; returns how many tensors were frozen."""
    count = 0
    for name, param in model.named_parameters():
        if matches(name, prefixes):
            param.requires_grad_(False)
            count += 1
    return count


def set_bn_eval(model: nn.Module, prefixes: Sequence[str]) -> None:
    """BatchNorm layers under ``prefixes`` in eval mode (running statistics fixed, affine
    parameters still trained). Call after every ``model.train()``."""
    if not prefixes:
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and matches(name, prefixes):
            module.eval()


def set_frozen_eval(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Put modules under ``prefixes`` in eval mode (BN statistics stop drifting). Call after
    every ``model.train()``."""
    if not prefixes:
        return
    for name, module in model.named_modules():
        if name and matches(name, prefixes):
            module.eval()
