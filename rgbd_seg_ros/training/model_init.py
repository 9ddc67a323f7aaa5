"""A stage's network: built from its backend and initialised the way the recipe says.

The weights start from, in this order of precedence: the stage's ``init_from`` entries (earlier
stages or checkpoint files, with key prefix maps), the previous stage's last weights (same
backend and options), or ``model.pretrained`` (first stage only). Building reseeds the RNGs
with the run's seed, so every rank and every resume starts from identical weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rgbd_seg_ros.backends.checkpoint import load_checkpoint
from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training import checkpointing as ck
from rgbd_seg_ros.training.config import TrainConfig
from rgbd_seg_ros.training.context import StagePlan


def build_stage_model(
    config: TrainConfig, plan: StagePlan, num_classes: int, note: Callable[[str], None]
) -> nn.Module:
    """The stage's network on the CPU, initialised; ``note`` hears where weights came from."""
    ck.seed_all(config.seed)  # identical initial weights on every rank and on resume
    model = build_backend(plan.backend, num_classes=num_classes, **plan.options)
    for path, loaded, skipped in initialise(model, config, plan):
        note(f'{plan.name}: initialised from {path} ({loaded} tensors, {skipped} skipped)')
    return model


def weights_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a project checkpoint, whatever backend wrote it."""
    _, state = load_checkpoint(path, check_backend=False)
    return state


def initialise(
    model: nn.Module, config: TrainConfig, plan: StagePlan
) -> list[tuple[str, int | str, int]]:
    """Load the stage's initial weights into ``model``; one (source, loaded, skipped) per
    source. ``ConfigError`` when an ``init_from`` entry matches nothing (or, strict, not all)."""
    stage, out_dir = plan.stage, plan.run_dir
    reports: list[tuple[str, int | str, int]] = []
    if stage.init_from:
        for init in stage.init_from:
            if init.checkpoint:
                path = Path(init.checkpoint)
            else:
                assert init.stage is not None  # TrainConfig.validate: one of stage, checkpoint
                path = out_dir / init.stage / ck.LAST_FILE
            state = ck.remap_state(weights_file(path), init.map)
            report = ck.load_partial(model, state, strict=False)
            if not report['loaded']:
                raise ConfigError(f'stage {stage.name}: init_from {path} matched no weights')
            if init.strict and report['skipped']:
                raise ConfigError(
                    f'stage {stage.name}: init_from {path}: keys without a '
                    f'match {report["skipped"][:5]}'
                )
            reports.append((str(path), len(report['loaded']), len(report['skipped'])))
    elif plan.index > 0 and stage.continue_previous:
        prev = config.stages[plan.index - 1]
        if config.stage_backend(prev) == config.stage_backend(stage):
            path = out_dir / prev.name / ck.LAST_FILE
            ck.load_partial(model, weights_file(path), strict=True)
            reports.append((str(path), 'all', 0))
    elif plan.index == 0 and config.model.pretrained:
        path = Path(config.model.pretrained)
        report = ck.load_partial(model, weights_file(path), strict=config.model.pretrained_strict)
        reports.append((str(path), len(report['loaded']), len(report['skipped'])))
    return reports
