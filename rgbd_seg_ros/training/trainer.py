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
stages), or from ``model.pretrained`` (first stage). ``freeze`` prefixes get no gradients and
stay in eval mode; ``frozen_bn`` prefixes keep their BN statistics but train.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training import checkpointing as ck
from rgbd_seg_ros.training import distributed as dd
from rgbd_seg_ros.training.config import StageConfig, TrainConfig, save_config
from rgbd_seg_ros.training.dataset import (
    SegDataset,
    class_frequencies,
    median_frequency_weights,
)
from rgbd_seg_ros.training.evaluate import evaluate
from rgbd_seg_ros.training.stage import DONE_FILE, StageResult, StageRun

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


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
        self.progress = progress
        self.should_stop = should_stop
        self.resume = resume
        self.out = Path(config.output_dir)
        self.model: nn.Module | None = None  # the last stage's (unwrapped) model
        self.precision = config.precision if ctx.device.type == 'cuda' else 'fp32'
        self.channels_last = config.channels_last and ctx.device.type == 'cuda'

    # ------------------------------------------------------------------------------ set-up
    def _prepare_output(self) -> None:
        problem = None
        if self.ctx.is_main and (self.out / 'config.yaml').exists() and not self.resume:
            problem = f'{self.out} already holds a run; resume it or choose another output_dir'
        problem = dd.broadcast_object(self.ctx, problem)  # every rank fails, none waits
        if problem:
            raise ConfigError(problem)
        if self.ctx.is_main:
            save_config(self.config, self.out / 'config.yaml')
        dd.barrier(self.ctx)

    def _datasets(self) -> None:
        c = self.config
        if not c.data.root:
            raise ConfigError('data.root: the dataset folder is required')
        res = c.data.resolution or {'policy': 'native'}
        self.fixed_hw = (
            (int(res['height']), int(res['width'])) if res.get('policy') == 'fixed' else None
        )
        common = {
            'depth_encoding': c.data.depth_encoding,
            'depth_params': c.data.depth_params,
            'rgb_mean': tuple(c.data.rgb_mean),
            'rgb_std': tuple(c.data.rgb_std),
            'seed': c.seed,
        }
        self.train_set = SegDataset(
            c.data.root,
            c.data.train_split,
            augment=c.augment,
            out_hw=self.fixed_hw if c.augment.crop is None else None,
            max_frames=c.data.max_frames,
            **common,
        )
        self.val_set = None
        try:
            self.val_set = SegDataset(
                c.data.root, c.data.val_split, augment=None, max_frames=c.data.max_frames, **common
            )
        except Exception as err:
            if self.ctx.is_main:
                print(f'[train] no validation ({err}); keeping the last weights', file=sys.stderr)
        self.meta = self.train_set.meta
        self.num_classes = self.train_set.num_classes
        self.ignore_index = (
            self.train_set.ignore_index if c.loss.ignore_index is None else c.loss.ignore_index
        )
        self.class_weights = None
        if c.data.class_weighting == 'median_frequency':
            weights = None
            if self.ctx.is_main:
                weights = median_frequency_weights(*class_frequencies(self.train_set)).tolist()
            weights = dd.broadcast_object(self.ctx, weights)
            self.class_weights = torch.tensor(weights, dtype=torch.float32)

    def _seed(self, offset: int = 0) -> None:
        seed = self.config.seed + offset
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    # ------------------------------------------------------------------------------ public
    def run(self) -> Path:
        self._prepare_output()
        self._datasets()
        result: StageResult | None = None
        for index, stage in enumerate(self.config.stages):
            result = self._run_stage(index, stage)
            if result.stopped:
                return result.path
        assert result is not None
        summary = {'result': str(result.path), **result.metrics}
        if self.val_set is not None and self.config.eval.multiscale_at_end:
            summary.update(self._final_multiscale(result.path))
        if self.ctx.is_main:
            (self.out / 'metrics.json').write_text(json.dumps(summary, indent=2) + '\n')
        self._emit({'event': 'done', 'result': str(result.path), **summary})
        return result.path

    # ------------------------------------------------------------------------------ model
    def _build_model(self, index: int, stage: StageConfig) -> tuple[nn.Module, str]:
        from rgbd_seg_ros.backends.registry import build_backend
        from rgbd_seg_ros.core.depth import depth_channels

        backend, options = self.config.stage_backend(stage)
        want = depth_channels(self.config.data.depth_encoding)
        if want == 0:
            want = options.get('depth_channels', 1)
        if options.setdefault('depth_channels', want) != want:
            raise ConfigError(
                f'stage {stage.name}: backend option depth_channels={options["depth_channels"]} '
                f'but data.depth_encoding {self.config.data.depth_encoding!r} gives {want}'
            )
        self._seed()  # identical initial weights on every rank and on resume
        model = build_backend(backend, num_classes=self.num_classes, **options)
        self._initialise(model, index, stage)
        return model, backend

    def _load_weights_file(self, path: Path) -> dict[str, torch.Tensor]:
        from rgbd_seg_ros.backends.checkpoint import load_checkpoint

        _, state = load_checkpoint(path, check_backend=False)
        return state

    def _initialise(self, model: nn.Module, index: int, stage: StageConfig) -> None:
        reports = []
        if stage.init_from:
            for init in stage.init_from:
                path = (
                    Path(init.checkpoint)
                    if init.checkpoint
                    else self.out / init.stage / ck.LAST_FILE
                )
                state = ck.remap_state(self._load_weights_file(path), init.map)
                report = ck.load_partial(model, state, strict=False)
                if not report['loaded']:
                    raise ConfigError(f'stage {stage.name}: init_from {path} matched no weights')
                if init.strict and report['skipped']:
                    raise ConfigError(
                        f'stage {stage.name}: init_from {path}: keys without a '
                        f'match {report["skipped"][:5]}'
                    )
                reports.append((str(path), len(report['loaded']), len(report['skipped'])))
        elif index > 0 and stage.continue_previous:
            prev = self.config.stages[index - 1]
            if self.config.stage_backend(prev) == self.config.stage_backend(stage):
                path = self.out / prev.name / ck.LAST_FILE
                ck.load_partial(model, self._load_weights_file(path), strict=True)
                reports.append((str(path), 'all', 0))
        elif index == 0 and self.config.model.pretrained:
            path = Path(self.config.model.pretrained)
            report = ck.load_partial(
                model, self._load_weights_file(path), strict=self.config.model.pretrained_strict
            )
            reports.append((str(path), len(report['loaded']), len(report['skipped'])))
        if self.ctx.is_main:
            for path, loaded, skipped in reports:
                print(
                    f'[train] {stage.name}: initialised from {path} ({loaded} tensors, '
                    f'{skipped} skipped)',
                    file=sys.stderr,
                )

    # ------------------------------------------------------------------------------ stage
    def _run_stage(self, index: int, stage: StageConfig) -> StageResult:
        sdir = self.out / stage.name
        done = sdir / DONE_FILE
        if self.resume and done.is_file():
            info = json.loads(done.read_text())
            return StageResult(Path(info['result']), False, info.get('metrics', {}))
        run = StageRun(self, index, stage, sdir)
        return run.execute()

    def _emit(self, info: dict[str, Any]) -> None:
        if self.progress is not None and self.ctx.is_main:
            self.progress(info)

    def _final_multiscale(self, path: Path) -> dict[str, Any]:
        """MS+flip evaluation of the result checkpoint (built from the file alone, as it will
        be deployed); its metrics are added to the file. Skipped when already there."""
        from rgbd_seg_ros.backends.checkpoint import (
            build_from_checkpoint,
            load_checkpoint,
            save_checkpoint,
        )

        assert self.val_set is not None
        meta, state = load_checkpoint(path, check_backend=False)
        if 'val_msflip_miou' in meta.metrics:
            return {
                k: v for k, v in meta.metrics.items() if k.startswith(('val_msflip_', 'msflip_'))
            }
        model, _ = build_from_checkpoint(path, device=self.ctx.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        ev = self.config.eval
        ms = evaluate(
            model,
            self.val_set,
            self.ctx,
            scales=ev.scales,
            flip=ev.flip,
            batch_size=ev.batch_size,
            num_workers=self.config.data.num_workers,
            fixed_hw=self.fixed_hw,
            precision=self.precision,
            channels_last=self.channels_last,
            max_frames=ev.max_frames,
            progress=self.config.progress_bar,
        )
        extra = ms.as_dict('val_msflip_')
        extra['msflip_scales'] = list(ev.scales)
        extra['msflip_flip'] = ev.flip
        if self.ctx.is_main:
            meta.metrics = {**meta.metrics, **extra}
            save_checkpoint(path, state, meta)
        dd.barrier(self.ctx)
        return extra
