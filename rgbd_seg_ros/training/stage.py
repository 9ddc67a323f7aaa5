"""One stage of a training run: build, initialise, train, validate, checkpoint, resume.

See :mod:`rgbd_seg_ros.training.trainer` for the output layout and how stages chain.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from rgbd_seg_ros.backends.base import needs_intrinsics
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.training import checkpointing as ck
from rgbd_seg_ros.training import distributed as dd
from rgbd_seg_ros.training.config import StageConfig, to_dict
from rgbd_seg_ros.training.dataset import StreamBatchSampler, worker_init
from rgbd_seg_ros.training.evaluate import autocast, evaluate
from rgbd_seg_ros.training.losses import SegLoss
from rgbd_seg_ros.training.optim import (
    build_optimizer,
    build_scheduler,
    encoder_prefixes,
    freeze,
    set_bn_eval,
    set_frozen_eval,
)
from rgbd_seg_ros.training.plots import CsvLog, plot_log

if TYPE_CHECKING:
    from rgbd_seg_ros.training.trainer import Trainer

DONE_FILE = 'done.json'


@dataclass
class StageResult:
    path: Path
    stopped: bool
    metrics: dict[str, Any]


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
            input_spec=InputSpec(
                tuple(d.rgb_mean),
                tuple(d.rgb_std),
                d.depth_encoding,
                dict(d.depth_params),
                dict(d.resolution),
            ),
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
        m = evaluate(
            self.model,
            self.t.val_set,
            self.ctx,
            batch_size=ev.batch_size,
            num_workers=self.c.data.num_workers,
            fixed_hw=self.t.fixed_hw,
            precision=self.t.precision,
            channels_last=self.t.channels_last,
            max_frames=ev.max_frames,
        )
        self._train_mode()
        return m.as_dict('val_')

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
                self.model,
                device_ids=[ctx.device.index] if ctx.device.type == 'cuda' else None,
                find_unused_parameters=True,
            )
        loss_fn = SegLoss(
            ignore_index=t.ignore_index,
            class_weights=t.class_weights,
            aux=self.loss_cfg.aux,
            aux_weights=self.loss_cfg.aux_weights,
            aux_resize=self.loss_cfg.aux_resize,
            ohem=self.loss_cfg.ohem,
            ohem_thresh=self.loss_cfg.ohem_thresh,
            ohem_min_kept=self.loss_cfg.ohem_min_kept,
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
        log = (
            CsvLog(self.sdir / 'log.csv', self.step if resumed else None) if ctx.is_main else None
        )
        sampler = StreamBatchSampler(
            len(t.train_set),
            stage.batch_size,
            c.seed,
            ctx.rank,
            ctx.world_size,
            start_step=self.step,
        )
        loader = DataLoader(
            t.train_set,
            batch_sampler=sampler,
            num_workers=c.data.num_workers,
            pin_memory=ctx.device.type == 'cuda',
            worker_init_fn=worker_init,
            persistent_workers=False,
            generator=torch.Generator(),
        )
        bar = None
        if ctx.is_main and c.progress_bar:
            from tqdm import tqdm

            bar = tqdm(
                total=stage.steps,
                initial=self.step,
                desc=stage.name,
                file=sys.stderr,
                dynamic_ncols=True,
            )
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
                    row = {
                        'stage': stage.name,
                        'step': self.step,
                        'epoch': sampler.epoch_of(self.step),
                        'loss': mean_loss,
                        'lr': self._lr(),
                        'images_per_s': images / max(elapsed, 1e-9),
                    }
                    loss_sum, loss_n, images, tick = 0.0, 0, 0, time.perf_counter()
                ev_every = c.eval.every_steps
                if t.val_set is not None and (last or (ev_every and self.step % ev_every == 0)):
                    metrics = self._validate()
                    self.last_metrics = metrics
                    row = row or {
                        'stage': stage.name,
                        'step': self.step,
                        'epoch': sampler.epoch_of(self.step),
                        'lr': self._lr(),
                    }
                    row.update(
                        {
                            k: metrics[k]
                            for k in ('val_miou', 'val_pixel_acc', 'val_mean_class_acc')
                        }
                    )
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
            t._emit(
                {
                    'event': 'stopped',
                    'stage': stage.name,
                    'step': self.step,
                    'total_steps': stage.steps,
                }
            )
            return StageResult(self.sdir / ck.LAST_FILE, True, {})
        return self._finish()

    def _finish(self) -> StageResult:
        best = self.sdir / ck.BEST_FILE
        path = best if best.is_file() else self.sdir / ck.LAST_FILE
        metrics = self.best_metrics or self.last_metrics
        if self.ctx.is_main:
            (self.sdir / DONE_FILE).write_text(
                json.dumps({'result': str(path), 'steps': self.step, 'metrics': metrics}, indent=2)
                + '\n'
            )
            try:
                plot_log(
                    self.sdir / 'log.csv',
                    self.sdir / 'curves.png',
                    f'{self.c.recipe or "training"}: {self.stage.name}',
                )
            except Exception as err:
                print(f'[train] plot failed: {err}', file=sys.stderr)
        dd.barrier(self.ctx)
        return StageResult(path, False, metrics)

    def _seed_rank(self) -> None:
        self.t._seed(1000 * (self.index + 1) + self.ctx.rank)

    def _lr(self) -> float:
        return max(g['lr'] for g in self.optimizer.param_groups)

    def _emit_row(self, row: dict[str, Any], parts: dict[str, float]) -> None:
        info = {
            'event': 'step',
            'stage': self.stage.name,
            'stage_index': self.index,
            'num_stages': len(self.c.stages),
            'total_steps': self.stage.steps,
            'val_miou': row.get('val_miou'),
            **parts,
            **row,
        }
        self.t._emit(info)

    def _train_step(self, batch: dict[str, torch.Tensor], loss_fn: SegLoss) -> tuple[float, dict]:
        dev = self.ctx.device
        fmt = torch.channels_last if self.t.channels_last else torch.contiguous_format
        rgb = batch['rgb'].to(dev, non_blocking=True).contiguous(memory_format=fmt)
        depth = batch['depth'].to(dev, non_blocking=True).contiguous(memory_format=fmt)
        labels = batch['labels'].to(dev, non_blocking=True)
        # K of the network input, for backends that bin on it, when the dataset provides it;
        # without it they use their configured focal length.
        K = (batch['K'].to(dev),) if 'K' in batch and needs_intrinsics(self.module) else ()
        with autocast(dev, self.t.precision):
            output = self.model(rgb, depth, *K)
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
