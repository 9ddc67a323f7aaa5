"""The training loop: stages, DDP, mixed precision, validation, checkpoints, exact resume.

Output folder (``config.output_dir``)::

    config.yaml                resolved configuration of the run
    metrics.json               final metrics (single scale and MS+flip) and the result path
    <stage>/last.safetensors   project checkpoint of the latest weights (every N steps)
    <stage>/best.safetensors   project checkpoint with the best validation mIoU
    <stage>/train_state.pt     optimiser, scheduler, step, RNG states ... (weights_only load)
    <stage>/log.csv, <stage>/curves.png, <stage>/done.json (stage finished)

A stage's model is built from its backend; it starts from the previous stage's last weights
(same backend and options, no ``init_from``), from ``init_from`` entries (other stages or
files, with key prefix maps: SSMA's fusion stage takes its experts from the two unimodal
stages), or from ``model.pretrained`` (first stage); a stage with none of these loads the
ImageNet files of ``model.encoder_weights`` into its encoders. ``freeze`` prefixes get no
gradients and stay in eval mode; ``frozen_bn`` prefixes keep their BN statistics but train.

The run's shared state is built once (:func:`rgbd_seg_ros.training.context.build_run_context`)
before the first stage; each stage gets it and its own plan, never the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rgbd_seg_ros.backends.checkpoint import (
    build_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from rgbd_seg_ros.core.atomic_files import remove_temporaries
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training import distributed as dd
from rgbd_seg_ros.training.config import TrainConfig, save_config
from rgbd_seg_ros.training.context import RunContext, build_run_context, plan_stage
from rgbd_seg_ros.training.evaluate import evaluate
from rgbd_seg_ros.training.events import ProgressFn, RunEvents, StopFn
from rgbd_seg_ros.training.model_init import check_encoder_weights_plan
from rgbd_seg_ros.training.stage import DONE_FILE, StageResult, StageRun


def run_training(
    config: TrainConfig,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    *,
    resume: bool = False,
) -> Path:
    """Train according to ``config``; returns the best (else last) checkpoint of the last stage.

    ``progress`` receives dicts (``event``, ``stage``, ``step``, ``total_steps``, ``loss``,
    ``lr``, ``val_miou``...) on rank 0. ``should_stop`` is polled every step; when it returns
    True the run saves its last checkpoint and training state and returns (a later
    ``resume=True`` continues exactly). Under ``torchrun`` it joins the process group.
    """
    config.validate()
    ctx = dd.setup(config.device)
    try:
        return Trainer(config, ctx, progress, should_stop, resume).run()
    finally:
        dd.teardown(ctx)


class Trainer:
    """One run of a recipe in one process (one DDP rank)."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: dd.DistContext,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        resume: bool = False,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.events = RunEvents(ctx.is_main, progress, should_stop)
        self.resume = resume
        self.out = Path(config.output_dir)
        self.model: nn.Module | None = None  # the last stage's (unwrapped) model

    def _prepare_output(self) -> None:
        problem = None
        if self.ctx.is_main and (self.out / 'config.yaml').exists() and not self.resume:
            problem = f'{self.out} already holds a run; resume it or choose another output_dir'
        problem = dd.broadcast_object(self.ctx, problem)  # every rank fails, none waits
        if problem:
            raise ConfigError(problem)
        if self.ctx.is_main:
            if self.resume:
                self._remove_temporaries()
            save_config(self.config, self.out / 'config.yaml')
        dd.barrier(self.ctx)

    def _remove_temporaries(self) -> None:
        """Temporaries of a run killed mid-write (checkpoints, training states, plots): no
        longer anybody's, unless their writer still runs."""
        folders = [self.out, *(self.out / stage.name for stage in self.config.stages)]
        removed = sum(remove_temporaries(folder) for folder in folders)
        if removed:
            self.events.note(f'removed {removed} temporary file(s) of an interrupted run')

    def run(self) -> Path:
        names = [s.name for s in self.config.stages]
        done = {n for n in names if self.resume and (self.out / n / DONE_FILE).is_file()}
        check_encoder_weights_plan(self.config, done)  # a wrong ImageNet file fails at once
        self._prepare_output()
        run = build_run_context(self.config, self.ctx, self.events, self.resume)
        result: StageResult | None = None
        for index in range(len(self.config.stages)):
            result = self._run_stage(run, index)
            if result.stopped:
                return result.path
        assert result is not None
        summary = {'result': str(result.path), **result.metrics}
        if run.data.val_set is not None and self.config.eval.multiscale_at_end:
            summary.update(final_multiscale(run, result.path))
        if self.ctx.is_main:
            (self.out / 'metrics.json').write_text(json.dumps(summary, indent=2) + '\n')
        self.events.emit({'event': 'done', 'result': str(result.path), **summary})
        return result.path

    def _run_stage(self, run: RunContext, index: int) -> StageResult:
        """A finished stage (``done.json``, on resume) is skipped; others run."""
        done = self.out / self.config.stages[index].name / DONE_FILE
        if self.resume and done.is_file():
            info = json.loads(done.read_text())
            return StageResult(Path(info['result']), False, info.get('metrics', {}))
        stage = StageRun(run, plan_stage(self.config, index, self.out))
        result = stage.execute()
        self.model = stage.parts.module
        return result


def final_multiscale(run: RunContext, path: Path) -> dict[str, Any]:
    """MS+flip evaluation of the result checkpoint (built from the file alone, as it will be
    deployed); its metrics are added to the file. Skipped when already there."""
    val_set = run.data.val_set
    assert val_set is not None
    meta, state = load_checkpoint(path, check_backend=False)
    if 'val_msflip_miou' in meta.metrics:
        return {k: v for k, v in meta.metrics.items() if k.startswith(('val_msflip_', 'msflip_'))}
    model, _ = build_from_checkpoint(path, device=run.dist.device)
    if run.channels_last:
        # Module.to takes memory_format at run time; torch's overloads leave it out.
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ev = run.config.eval
    ms = evaluate(
        model,
        val_set,
        run.dist,
        scales=ev.scales,
        flip=ev.flip,
        batch_size=ev.batch_size,
        num_workers=run.config.data.num_workers,
        fixed_hw=run.data.fixed_hw,
        precision=run.precision,
        channels_last=run.channels_last,
        max_frames=ev.max_frames,
        progress=run.config.progress_bar,
    )
    extra = ms.as_dict('val_msflip_')
    extra['msflip_scales'] = list(ev.scales)
    extra['msflip_flip'] = ev.flip
    if run.dist.is_main:
        meta.metrics = {**meta.metrics, **extra}
        save_checkpoint(path, state, meta)
    dd.barrier(run.dist)
    return extra
