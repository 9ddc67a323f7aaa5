"""The trainable pieces of one stage (network, optimiser, schedule, grad scaler, criterion),
built together before its first step.

The order of construction is part of exact resume: building the network reseeds the RNGs,
and nothing after it draws from them before the stage restores or seeds its own state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from rgbd_seg_ros.backends.base import SegBackend
from rgbd_seg_ros.backends.pretrained import LoadReport
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training.context import RunContext, StagePlan
from rgbd_seg_ros.training.losses import SegLoss
from rgbd_seg_ros.training.model_init import build_stage_network
from rgbd_seg_ros.training.optim import build_optimizer, build_scheduler, encoder_prefixes, freeze


@dataclass(frozen=True)
class StageParts:
    """What a stage's steps update and call."""

    module: nn.Module  # the network itself: what checkpoints hold
    model: nn.Module  # what a step calls: ``module``, or its DDP (and SyncBatchNorm) wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: SegLoss


def build_stage_parts(run: RunContext, plan: StagePlan) -> StageParts:
    """Build, initialise and freeze the network, then everything that trains it."""
    c, dist = run.config, run.dist
    module, loaded = build_stage_network(c, plan, run.data.num_classes, run.events.note)
    check_depth_supervision(module, plan)
    if plan.freeze and freeze(module, plan.freeze) == 0:
        raise ConfigError(f'stage {plan.name}: freeze {plan.freeze} matched no parameter')
    module.to(dist.device)
    if run.channels_last:
        # Module.to takes memory_format at run time; torch's overloads leave it out.
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = build_optimizer(
        module, plan.optim, encoder_prefixes(module, c.model.encoder_prefixes)
    )
    counts = count_parameters(module)
    run.events.note(f'{plan.name}: {parameter_summary(counts, plan)}')
    run.events.emit(stage_start_event(plan, len(c.stages), counts, loaded))
    scheduler = build_scheduler(optimizer, plan.steps, plan.schedule)
    scaler = torch.amp.GradScaler('cuda', enabled=run.precision == 'fp16')
    return StageParts(
        module=module,
        model=_wrap(module, run),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        criterion=build_criterion(run, plan),
    )


@dataclass(frozen=True)
class ParameterCounts:
    """A stage's parameters once frozen: ``frozen`` ones have no gradient (``freeze`` prefixes
    and groups at learning rate 0), the ``trained`` rest do."""

    total: int
    trained: int
    frozen: int


def count_parameters(module: nn.Module) -> ParameterCounts:
    """Parameter values of ``module``, by whether they get gradients."""
    total = sum(p.numel() for p in module.parameters())
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return ParameterCounts(total=total, trained=total - frozen, frozen=frozen)


def stage_start_event(
    plan: StagePlan, num_stages: int, counts: ParameterCounts, loaded: dict[str, LoadReport]
) -> dict[str, Any]:
    """The progress event of a stage about to take its first step: what it trains, what it
    holds frozen and what each encoder stream loaded from its ImageNet file, in numbers a
    caller can check (the run's log says the same in words)."""
    return {
        'event': 'stage_start',
        'stage': plan.name,
        'stage_index': plan.index,
        'num_stages': num_stages,
        'total_steps': plan.steps,
        'parameters': counts.total,
        'trained_parameters': counts.trained,
        'frozen_parameters': counts.frozen,
        'freeze': list(plan.freeze),
        'frozen_bn': list(plan.frozen_bn),
        'encoder_weights': {
            name: {**asdict(report), 'ignored': list(report.ignored)}
            for name, report in loaded.items()
        },
    }


def parameter_summary(counts: ParameterCounts, plan: StagePlan) -> str:
    """How many parameters the stage trains and how many it holds fixed, for the run's log."""
    total, frozen = counts.total, counts.frozen
    text = f'{total:,} parameters: {total - frozen:,} trained, {frozen:,} frozen'
    if plan.freeze:
        text += f' (freeze {", ".join(plan.freeze)})'
    if plan.frozen_bn:
        text += f'; BatchNorm statistics fixed under {", ".join(plan.frozen_bn)}'
    return text


def _wrap(module: nn.Module, run: RunContext) -> nn.Module:
    """DDP around the network when the job has several ranks (SyncBatchNorm on GPUs)."""
    dist = run.dist
    if not dist.distributed:
        return module
    model = module
    if run.config.sync_bn and dist.device.type == 'cuda':
        model = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[dist.device.index] if dist.device.type == 'cuda' else None,
        find_unused_parameters=True,
    )


def check_depth_supervision(module: nn.Module, plan: StagePlan) -> None:
    """``ConfigError`` before the first step when the stage weighs depth losses but its
    network has no depth branch to supervise."""
    loss = plan.loss
    if loss.depth_bin_weight <= 0 and loss.depth_reg_weight <= 0:
        return
    if not (isinstance(module, SegBackend) and module.predicts_depth()):
        raise ConfigError(
            f'stage {plan.name}: loss.depth_bin_weight/depth_reg_weight are set but backend '
            f'{plan.backend!r} with these options predicts no depth'
        )


def build_criterion(run: RunContext, plan: StagePlan) -> SegLoss:
    """The stage's loss on the run's device: segmentation cross-entropy (with the dataset's
    ignore index and class weights), auxiliary heads, OHEM and depth supervision as
    ``plan.loss`` says."""
    loss = plan.loss
    return SegLoss(
        ignore_index=run.data.ignore_index,
        class_weights=run.data.class_weights,
        aux=loss.aux,
        aux_weights=loss.aux_weights,
        aux_resize=loss.aux_resize,
        ohem=loss.ohem,
        ohem_thresh=loss.ohem_thresh,
        ohem_min_kept=loss.ohem_min_kept,
        label_smoothing=loss.label_smoothing,
        depth_bin_weight=loss.depth_bin_weight,
        depth_reg_weight=loss.depth_reg_weight,
    ).to(run.dist.device)
