"""The trainable pieces of one stage (network, optimiser, schedule, grad scaler, criterion),
built together before its first step.

The order of construction is part of exact resume: building the network reseeds the RNGs,
and nothing after it draws from them before the stage restores or seeds its own state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training.context import RunContext, StagePlan
from rgbd_seg_ros.training.losses import SegLoss
from rgbd_seg_ros.training.model_init import build_stage_model
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
    module = build_stage_model(c, plan, run.data.num_classes, run.events.note)
    if plan.freeze and freeze(module, plan.freeze) == 0:
        raise ConfigError(f'stage {plan.name}: freeze {plan.freeze} matched no parameter')
    module.to(dist.device)
    if run.channels_last:
        # Module.to takes memory_format at run time; torch's overloads leave it out.
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = build_optimizer(
        module, plan.optim, encoder_prefixes(module, c.model.encoder_prefixes)
    )
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


def build_criterion(run: RunContext, plan: StagePlan) -> SegLoss:
    """The stage's loss on the run's device: segmentation cross-entropy (with the dataset's
    ignore index and class weights), auxiliary heads and OHEM as ``plan.loss`` says."""
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
    ).to(run.dist.device)
