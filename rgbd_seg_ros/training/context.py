"""What the stages of a training run work with, built once before the first stage.

:class:`RunContext` holds what every stage of the run shares (configuration, process group
and device, datasets, precision, checkpoint writer, progress sink); :class:`StagePlan` holds
what one stage does, resolved from the configuration (its backend and options, optimiser,
schedule, loss, frozen prefixes). A stage gets both and nothing else, so nothing it reads
appears only after some other method ran.

Per-stage behaviour belongs in the plan and in the builders that read it
(``rgbd_seg_ros.training.stage_parts``): frozen parameter groups are ``plan.freeze`` and
``plan.frozen_bn``; a stage's criterion (extra losses included) comes from ``plan.loss``;
where its weights come from is decided by ``rgbd_seg_ros.training.model_init``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rgbd_seg_ros.core.depth import depth_channels
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training.checkpointing import CheckpointWriter
from rgbd_seg_ros.training.config import (
    LossConfig,
    OptimConfig,
    ScheduleConfig,
    StageConfig,
    TrainConfig,
)
from rgbd_seg_ros.training.distributed import DistContext
from rgbd_seg_ros.training.events import RunEvents
from rgbd_seg_ros.training.run_data import RunData, load_run_data


@dataclass(frozen=True)
class RunContext:
    """Everything the stages of one run (in this process, i.e. one DDP rank) share."""

    config: TrainConfig
    dist: DistContext  # rank, world size, device
    data: RunData  # splits, ignore index, class weights, fixed input size
    out_dir: Path  # config.output_dir; a stage writes under <out_dir>/<stage name>
    resume: bool  # continue stages from their training state where there is one
    precision: str  # effective: config.precision on CUDA, 'fp32' elsewhere
    channels_last: bool  # effective: config.channels_last on CUDA only
    checkpoints: CheckpointWriter
    events: RunEvents  # progress events, notes, stop requests


def build_run_context(
    config: TrainConfig, dist: DistContext, events: RunEvents, resume: bool
) -> RunContext:
    """Open the datasets and settle the run-wide settings."""
    data = load_run_data(config, dist, events.note)
    cuda = dist.device.type == 'cuda'
    return RunContext(
        config=config,
        dist=dist,
        data=data,
        out_dir=Path(config.output_dir),
        resume=resume,
        precision=config.precision if cuda else 'fp32',
        channels_last=config.channels_last and cuda,
        checkpoints=CheckpointWriter(config, data.meta, dist),
        events=events,
    )


@dataclass(frozen=True)
class StagePlan:
    """One stage of the recipe with the run's defaults merged in."""

    index: int  # position in config.stages
    stage: StageConfig  # as written: name, steps, batch size, freeze, init_from ...
    run_dir: Path  # the run's output folder (earlier stages' weights are under it)
    backend: str
    options: dict[str, Any]  # backend options, depth_channels matching data.depth_encoding
    optim: OptimConfig
    schedule: ScheduleConfig
    loss: LossConfig

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def dir(self) -> Path:
        """This stage's folder: checkpoints, training state, log, plot."""
        return self.run_dir / self.stage.name

    @property
    def steps(self) -> int:
        return self.stage.steps

    @property
    def freeze(self) -> list[str]:
        """Prefixes without gradients, kept in eval mode."""
        return self.stage.freeze

    @property
    def frozen_bn(self) -> list[str]:
        """Prefixes whose BatchNorm statistics stay fixed while their parameters train."""
        return self.stage.frozen_bn


def plan_stage(config: TrainConfig, index: int, out_dir: Path) -> StagePlan:
    """The plan of ``config.stages[index]``; ``ConfigError`` when its backend's depth
    channels contradict the data's depth encoding."""
    stage = config.stages[index]
    optim = config.stage_optim(stage)
    schedule = config.stage_schedule(stage)
    loss = config.stage_loss(stage)
    backend, options = config.stage_backend(stage)
    want = depth_channels(config.data.depth_encoding)
    if want == 0:
        want = options.get('depth_channels', 1)
    if options.setdefault('depth_channels', want) != want:
        raise ConfigError(
            f'stage {stage.name}: backend option depth_channels={options["depth_channels"]} '
            f'but data.depth_encoding {config.data.depth_encoding!r} gives {want}'
        )
    return StagePlan(
        index=index,
        stage=stage,
        run_dir=out_dir,
        backend=backend,
        options=options,
        optim=optim,
        schedule=schedule,
        loss=loss,
    )
