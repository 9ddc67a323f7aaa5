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
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training import checkpointing as ck
from rgbd_seg_ros.training import distributed as dd
from rgbd_seg_ros.training.config import StageConfig, TrainConfig, save_config, to_dict
from rgbd_seg_ros.training.dataset import (
    SegDataset,
    StreamBatchSampler,
    class_frequencies,
    median_frequency_weights,
    worker_init,
)
from rgbd_seg_ros.training.evaluate import autocast, evaluate
from rgbd_seg_ros.training.losses import SegLoss
from rgbd_seg_ros.training.metrics import SegMetrics
from rgbd_seg_ros.training.optim import (
    build_optimizer,
    build_scheduler,
    encoder_prefixes,
    freeze,
    set_bn_eval,
    set_frozen_eval,
)
from rgbd_seg_ros.training.plots import CsvLog, plot_log

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]

DONE_FILE = 'done.json'


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


@dataclass
class StageResult:
    path: Path
    stopped: bool
    metrics: dict[str, Any]


class Trainer:
    """One run of a recipe in one process (one DDP rank)."""

    def __init__(
        self, config: TrainConfig, ctx: dd.DistContext, progress: ProgressFn | None = None,
        should_stop: StopFn | None = None, resume: bool = False,
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
        if self.ctx.is_main:
            if (self.out / 'config.yaml').exists() and not self.resume:
                raise ConfigError(
                    f'{self.out} already holds a run; resume it or choose another output_dir'
                )
            save_config(self.config, self.out / 'config.yaml')
        dd.barrier(self.ctx)

    def _datasets(self) -> None:
        c = self.config
        if not c.data.root:
            raise ConfigError('data.root: the dataset folder is required')
        res = c.data.resolution or {'policy': 'native'}
        self.fixed_hw = (int(res['height']), int(res['width'])) \
            if res.get('policy') == 'fixed' else None
        common = {
            'depth_encoding': c.data.depth_encoding,
            'depth_params': c.data.depth_params,
            'rgb_mean': tuple(c.data.rgb_mean),
            'rgb_std': tuple(c.data.rgb_std),
            'seed': c.seed,
        }
        self.train_set = SegDataset(
            c.data.root, c.data.train_split, augment=c.augment,
            out_hw=self.fixed_hw if c.augment.crop is None else None,
            max_frames=c.data.max_frames, **common,
        )
        self.val_set = None
        try:
            self.val_set = SegDataset(c.data.root, c.data.val_split, augment=None,
                                      max_frames=c.data.max_frames, **common)
        except Exception as err:
            if self.ctx.is_main:
                print(f'[train] no validation ({err}); keeping the last weights', file=sys.stderr)
        self.meta = self.train_set.meta
        self.num_classes = self.train_set.num_classes
        self.ignore_index = self.train_set.ignore_index if c.loss.ignore_index is None \
            else c.loss.ignore_index
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
                path = Path(init.checkpoint) if init.checkpoint else \
                    self.out / init.stage / ck.LAST_FILE
                state = ck.remap_state(self._load_weights_file(path), init.map)
                report = ck.load_partial(model, state, strict=False)
                if not report['loaded']:
                    raise ConfigError(f'stage {stage.name}: init_from {path} matched no weights')
                if init.strict and report['skipped']:
                    raise ConfigError(f'stage {stage.name}: init_from {path}: keys without a '
                                      f'match {report["skipped"][:5]}')
                reports.append((str(path), len(report['loaded']), len(report['skipped'])))
        elif index > 0 and stage.continue_previous:
            prev = self.config.stages[index - 1]
            if self.config.stage_backend(prev) == self.config.stage_backend(stage):
                path = self.out / prev.name / ck.LAST_FILE
                ck.load_partial(model, self._load_weights_file(path), strict=True)
                reports.append((str(path), 'all', 0))
        elif index == 0 and self.config.model.pretrained:
            path = Path(self.config.model.pretrained)
            report = ck.load_partial(model, self._load_weights_file(path),
                                     strict=self.config.model.pretrained_strict)
            reports.append((str(path), len(report['loaded']), len(report['skipped'])))
        if self.ctx.is_main:
            for path, loaded, skipped in reports:
                print(f'[train] {stage.name}: initialised from {path} ({loaded} tensors, '
                      f'{skipped} skipped)', file=sys.stderr)

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
            return {k: v for k, v in meta.metrics.items() if k.startswith(('val_msflip_',
                                                                          'msflip_'))}
        model, _ = build_from_checkpoint(path, device=self.ctx.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        ev = self.config.eval
        ms = evaluate(model, self.val_set, self.ctx, scales=ev.scales, flip=ev.flip,
                      batch_size=ev.batch_size, num_workers=self.config.data.num_workers,
                      fixed_hw=self.fixed_hw, precision=self.precision,
                      channels_last=self.channels_last, max_frames=ev.max_frames,
                      progress=self.config.progress_bar)
        extra = _metric_dict(ms, 'val_msflip_')
        extra['msflip_scales'] = list(ev.scales)
        extra['msflip_flip'] = ev.flip
        if self.ctx.is_main:
            meta.metrics = {**meta.metrics, **extra}
            save_checkpoint(path, state, meta)
        dd.barrier(self.ctx)
        return extra


def _metric_dict(m: SegMetrics, prefix: str) -> dict[str, Any]:
    return m.as_dict(prefix)


class StageRun:
    """The loop of one stage."""

    def __init__(self, trainer: Trainer, index: int, stage: StageConfig, sdir: Path) -> None:
        self.t = trainer
        self.c = trainer.config
        self.ctx = trainer.ctx
        self.index = index
        self.stage = stage
        self.sdir = sdir
        self.optim_cfg = self.c.stage_optim(stage)
        self.sched_cfg = self.c.stage_schedule(stage)
        self.loss_cfg = self.c.stage_loss(stage)

    # -------------------------------------------------------------------------- helpers
    def _checkpoint_meta(self, metrics: dict[str, Any]) -> Any:
        from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec
        from rgbd_seg_ros.backends.registry import config_to_dict

        meta = self.t.meta
        d = self.c.data
        return CheckpointMeta(
            backend=self.backend,
            config=config_to_dict(self.module.config),
            class_names=[n or f'class_{i}' for i, n in enumerate(meta.class_names)],
            palette=[tuple(int(v) for v in row) for row in meta.palette],
            ignore_index=int(meta.ignore_index),
            input_spec=InputSpec(tuple(d.rgb_mean), tuple(d.rgb_std), d.depth_encoding,
                                 dict(d.depth_params), dict(d.resolution)),
            provenance={
                'recipe': self.c.recipe,
                'stage': self.stage.name,
                'step': self.step,
                'dataset': str(Path(d.root).resolve()),
                'dataset_provenance': meta.provenance,
                'git_commit': ck.git_commit(),
                'torch': torch.__version__,
                'world_size': self.ctx.world_size,
                'created_unix': time.time(),
                'train_config': to_dict(self.c),
            },
            metrics=metrics,
        )

    def _save_weights(self, name: str, metrics: dict[str, Any]) -> Path:
        from rgbd_seg_ros.backends.checkpoint import save_checkpoint

        path = self.sdir / name
        if self.ctx.is_main:
            save_checkpoint(path, self.module, self._checkpoint_meta(metrics))
        return path

    def _save_state(self) -> None:
        rngs = dd.all_gather_object(self.ctx, ck.rng_state())
        if not self.ctx.is_main:
            return
        state = {
            'format': 1,
            'stage': self.stage.name,
            'step': self.step,
            'model': self.module.state_dict(),
            'optimizer': self.optimizer.state_dict(),
            'scheduler': self.scheduler.state_dict(),
            'scaler': self.scaler.state_dict(),
            'best_miou': self.best_miou,
            'best_metrics': self.best_metrics,
            'rng': rngs,
        }
        ck.atomic_torch_save(state, self.sdir / ck.STATE_FILE)

    def _sync_buffers(self) -> None:
        """Rank 0's buffers (BN running statistics) on every rank."""
        if self.ctx.distributed:
            import torch.distributed as dist

            for buf in self.module.buffers():
                dist.broadcast(buf, 0)

    def _checkpoint(self) -> None:
        self._sync_buffers()
        self._save_weights(ck.LAST_FILE, self.last_metrics)
        self._save_state()
        dd.barrier(self.ctx)

    def _restore(self) -> bool:
        path = self.sdir / ck.STATE_FILE
        if not (self.t.resume and path.is_file()):
            return False
        state = ck.load_train_state(path)
        self.module.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.scaler.load_state_dict(state['scaler'])
        self.step = int(state['step'])
        self.best_miou = float(state['best_miou'])
        self.best_metrics = dict(state['best_metrics'])
        rngs = state['rng']
        ck.set_rng_state(rngs[self.ctx.rank] if self.ctx.rank < len(rngs) else rngs[0])
        return True

    def _validate(self) -> dict[str, Any]:
        self._sync_buffers()
        ev = self.c.eval
        m = evaluate(self.model, self.t.val_set, self.ctx, batch_size=ev.batch_size,
                     num_workers=self.c.data.num_workers, fixed_hw=self.t.fixed_hw,
                     precision=self.t.precision, channels_last=self.t.channels_last,
                     max_frames=ev.max_frames)
        self._train_mode()
        return _metric_dict(m, 'val_')

    def _train_mode(self) -> None:
        self.model.train()
        set_frozen_eval(self.module, self.stage.freeze)
        set_bn_eval(self.module, self.stage.frozen_bn)

    # -------------------------------------------------------------------------- main loop
    def execute(self) -> StageResult:
        t, c, ctx, stage = self.t, self.c, self.ctx, self.stage
        module, self.backend = t._build_model(self.index, stage)
        if stage.freeze and freeze(module, stage.freeze) == 0:
            raise ConfigError(f'stage {stage.name}: freeze {stage.freeze} matched no parameter')
        module.to(ctx.device)
        if t.channels_last:
            module.to(memory_format=torch.channels_last)
        self.module = module
        enc = encoder_prefixes(module, c.model.encoder_prefixes)
        self.optimizer = build_optimizer(module, self.optim_cfg, enc)
        self.scheduler = build_scheduler(self.optimizer, stage.steps, self.sched_cfg)
        self.scaler = torch.amp.GradScaler('cuda', enabled=t.precision == 'fp16')
        self.model = module
        if ctx.distributed:
            if c.sync_bn and ctx.device.type == 'cuda':
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == 'cuda' else None,
                find_unused_parameters=True,
            )
        loss_fn = SegLoss(
            ignore_index=t.ignore_index,
            class_weights=t.class_weights,
            aux=self.loss_cfg.aux, aux_weights=self.loss_cfg.aux_weights,
            aux_resize=self.loss_cfg.aux_resize, ohem=self.loss_cfg.ohem,
            ohem_thresh=self.loss_cfg.ohem_thresh, ohem_min_kept=self.loss_cfg.ohem_min_kept,
            label_smoothing=self.loss_cfg.label_smoothing,
        ).to(ctx.device)
        self.step = 0
        self.best_miou = -math.inf
        self.best_metrics: dict[str, Any] = {}
        self.last_metrics: dict[str, Any] = {}
        if ctx.is_main:
            self.sdir.mkdir(parents=True, exist_ok=True)
        resumed = self._restore()
        if not resumed:
            self._seed_rank()
        log = CsvLog(self.sdir / 'log.csv', self.step if resumed else None) \
            if ctx.is_main else None
        sampler = StreamBatchSampler(len(t.train_set), stage.batch_size, c.seed, ctx.rank,
                                     ctx.world_size, start_step=self.step)
        loader = DataLoader(
            t.train_set, batch_sampler=sampler, num_workers=c.data.num_workers,
            pin_memory=ctx.device.type == 'cuda', worker_init_fn=worker_init,
            persistent_workers=False, generator=torch.Generator(),
        )
        bar = None
        if ctx.is_main and c.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=stage.steps, initial=self.step, desc=stage.name, file=sys.stderr,
                       dynamic_ncols=True)
        self._train_mode()
        stopped = False
        loss_sum, loss_n, images, tick = 0.0, 0, 0, time.perf_counter()
        batches = iter(loader)
        try:
            while self.step < stage.steps:
                batch = next(batches)
                loss, parts = self._train_step(batch, loss_fn)
                self.step += 1
                loss_sum += loss
                loss_n += 1
                images += batch['rgb'].shape[0] * ctx.world_size
                last = self.step == stage.steps
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f'{loss:.4f}', lr=f'{self._lr():.2e}')
                row = None
                if self.step % c.log_every == 0 or last:
                    elapsed = time.perf_counter() - tick
                    mean_loss = dd.mean_scalar(ctx, loss_sum / max(loss_n, 1))
                    row = {'stage': stage.name, 'step': self.step,
                           'epoch': sampler.epoch_of(self.step), 'loss': mean_loss,
                           'lr': self._lr(), 'images_per_s': images / max(elapsed, 1e-9)}
                    loss_sum, loss_n, images, tick = 0.0, 0, 0, time.perf_counter()
                ev_every = c.eval.every_steps
                if t.val_set is not None and (last or (ev_every and self.step % ev_every == 0)):
                    metrics = self._validate()
                    self.last_metrics = metrics
                    row = row or {'stage': stage.name, 'step': self.step,
                                  'epoch': sampler.epoch_of(self.step), 'lr': self._lr()}
                    row.update({k: metrics[k] for k in
                                ('val_miou', 'val_pixel_acc', 'val_mean_class_acc')})
                    if metrics['val_miou'] > self.best_miou:
                        self.best_miou = metrics['val_miou']
                        self.best_metrics = {**metrics, 'step': self.step}
                        self._save_weights(ck.BEST_FILE, self.best_metrics)
                if row is not None:
                    if log is not None:
                        log.append(row)
                    self._emit_row(row, parts)
                stop = dd.any_flag(ctx, bool(self.t.should_stop and self.t.should_stop()))
                if last or stop or (c.checkpoint_every and self.step % c.checkpoint_every == 0):
                    self._checkpoint()
                if stop and not last:
                    stopped = True
                    break
        finally:
            if bar is not None:
                bar.close()
            del batches
        t.model = module
        if stopped:
            t._emit({'event': 'stopped', 'stage': stage.name, 'step': self.step,
                     'total_steps': stage.steps})
            return StageResult(self.sdir / ck.LAST_FILE, True, {})
        return self._finish()

    def _finish(self) -> StageResult:
        best = self.sdir / ck.BEST_FILE
        path = best if best.is_file() else self.sdir / ck.LAST_FILE
        metrics = self.best_metrics or self.last_metrics
        if self.ctx.is_main:
            (self.sdir / DONE_FILE).write_text(json.dumps(
                {'result': str(path), 'steps': self.step, 'metrics': metrics}, indent=2) + '\n')
            try:
                plot_log(self.sdir / 'log.csv', self.sdir / 'curves.png',
                         f'{self.c.recipe or "training"}: {self.stage.name}')
            except Exception as err:
                print(f'[train] plot failed: {err}', file=sys.stderr)
        dd.barrier(self.ctx)
        return StageResult(path, False, metrics)

    def _seed_rank(self) -> None:
        self.t._seed(1000 * (self.index + 1) + self.ctx.rank)

    def _lr(self) -> float:
        return max(g['lr'] for g in self.optimizer.param_groups)

    def _emit_row(self, row: dict[str, Any], parts: dict[str, float]) -> None:
        info = {'event': 'step', 'stage': self.stage.name, 'stage_index': self.index,
                'num_stages': len(self.c.stages), 'total_steps': self.stage.steps,
                'val_miou': row.get('val_miou'), **parts, **row}
        self.t._emit(info)

    def _train_step(self, batch: dict[str, torch.Tensor], loss_fn: SegLoss) -> tuple[float, dict]:
        dev = self.ctx.device
        fmt = torch.channels_last if self.t.channels_last else torch.contiguous_format
        rgb = batch['rgb'].to(dev, non_blocking=True).contiguous(memory_format=fmt)
        depth = batch['depth'].to(dev, non_blocking=True).contiguous(memory_format=fmt)
        labels = batch['labels'].to(dev, non_blocking=True)
        with autocast(dev, self.t.precision):
            output = self.model(rgb, depth)
        loss, parts = loss_fn(output, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.optim_cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g['params']],
                self.optim_cfg.grad_clip,
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach()), parts
