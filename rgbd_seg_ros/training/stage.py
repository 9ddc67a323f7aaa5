"""One stage of a training run: train, validate, checkpoint, resume.

A stage gets the run's :class:`RunContext` and its own :class:`StagePlan`
(``rgbd_seg_ros.training.context``) and builds its trainable pieces from them
(``rgbd_seg_ros.training.stage_parts``); see :mod:`rgbd_seg_ros.training.trainer` for the
output layout and how stages chain.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from rgbd_seg_ros.backends.base import needs_intrinsics
from rgbd_seg_ros.training import checkpointing as ck
from rgbd_seg_ros.training import distributed as dd
from rgbd_seg_ros.training.context import RunContext, StagePlan
from rgbd_seg_ros.training.dataset import SegDataset, StreamBatchSampler, loader_worker_init
from rgbd_seg_ros.training.evaluate import autocast, evaluate
from rgbd_seg_ros.training.losses import DepthTargets
from rgbd_seg_ros.training.optim import set_bn_eval, set_frozen_eval
from rgbd_seg_ros.training.plots import CsvLog, plot_log
from rgbd_seg_ros.training.stage_parts import StageParts, build_stage_parts

DONE_FILE = 'done.json'


@dataclass
class StageResult:
    path: Path
    stopped: bool
    metrics: dict[str, Any]


@dataclass
class StageProgress:
    """Where a stage stands; saved in its training state and restored on resume."""

    step: int = 0
    best_miou: float = -math.inf
    best_metrics: dict[str, Any] = field(default_factory=dict)
    last_metrics: dict[str, Any] = field(default_factory=dict)


class StageRun:
    """The loop of one stage. Everything it uses exists once it is constructed."""

    def __init__(self, run: RunContext, plan: StagePlan) -> None:
        self.run = run
        self.plan = plan
        self.parts: StageParts = build_stage_parts(run, plan)
        self.progress = StageProgress()

    # -------------------------------------------------------------------------- helpers
    def _save_weights(self, name: str, metrics: dict[str, Any]) -> Path:
        return self.run.checkpoints.save(
            self.plan.dir / name,
            self.parts.module,
            self.plan.backend,
            self.plan.name,
            self.progress.step,
            metrics,
        )

    def _save_state(self) -> None:
        dist, parts, progress = self.run.dist, self.parts, self.progress
        rngs = dd.all_gather_object(dist, ck.rng_state())
        if not dist.is_main:
            return
        state = {
            'format': 1,
            'stage': self.plan.name,
            'step': progress.step,
            'model': parts.module.state_dict(),
            'optimizer': parts.optimizer.state_dict(),
            'scheduler': parts.scheduler.state_dict(),
            'scaler': parts.scaler.state_dict(),
            'best_miou': progress.best_miou,
            'best_metrics': progress.best_metrics,
            'rng': rngs,
        }
        ck.atomic_torch_save(state, self.plan.dir / ck.STATE_FILE)

    def _sync_buffers(self) -> None:
        """Rank 0's buffers (BN running statistics) on every rank."""
        if self.run.dist.distributed:
            import torch.distributed as dist

            for buf in self.parts.module.buffers():
                dist.broadcast(buf, 0)

    def _checkpoint(self) -> None:
        self._sync_buffers()
        self._save_weights(ck.LAST_FILE, self.progress.last_metrics)
        self._save_state()
        dd.barrier(self.run.dist)

    def _restore(self) -> bool:
        path = self.plan.dir / ck.STATE_FILE
        if not (self.run.resume and path.is_file()):
            return False
        parts, progress, rank = self.parts, self.progress, self.run.dist.rank
        state = ck.load_train_state(path)
        parts.module.load_state_dict(state['model'])
        parts.optimizer.load_state_dict(state['optimizer'])
        parts.scheduler.load_state_dict(state['scheduler'])
        parts.scaler.load_state_dict(state['scaler'])
        progress.step = int(state['step'])
        progress.best_miou = float(state['best_miou'])
        progress.best_metrics = dict(state['best_metrics'])
        rngs = state['rng']
        ck.set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
        return True

    def _validate(self, val_set: SegDataset) -> dict[str, Any]:
        self._sync_buffers()
        run = self.run
        ev = run.config.eval
        m = evaluate(
            self.parts.model,
            val_set,
            run.dist,
            batch_size=ev.batch_size,
            num_workers=run.config.data.num_workers,
            fixed_hw=run.data.fixed_hw,
            precision=run.precision,
            channels_last=run.channels_last,
            max_frames=ev.max_frames,
        )
        self._train_mode()
        return m.as_dict('val_')

    def _train_mode(self) -> None:
        self.parts.model.train()
        set_frozen_eval(self.parts.module, self.plan.freeze)
        set_bn_eval(self.parts.module, self.plan.frozen_bn)

    # -------------------------------------------------------------------------- main loop
    def execute(self) -> StageResult:
        run, plan, progress = self.run, self.plan, self.progress
        c, dist = run.config, run.dist
        if dist.is_main:
            plan.dir.mkdir(parents=True, exist_ok=True)
        resumed = self._restore()
        if not resumed:
            # ranks draw different augmentation and dropout from here on
            ck.seed_all(c.seed + 1000 * (plan.index + 1) + dist.rank)
        log = (
            CsvLog(plan.dir / 'log.csv', progress.step if resumed else None)
            if dist.is_main
            else None
        )
        train_set, val_set = run.data.train_set, run.data.val_set
        sampler = StreamBatchSampler(
            len(train_set),
            plan.stage.batch_size,
            c.seed,
            dist.rank,
            dist.world_size,
            start_step=progress.step,
        )
        loader = DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=c.data.num_workers,
            pin_memory=dist.device.type == 'cuda',
            worker_init_fn=loader_worker_init(),
            persistent_workers=False,
            generator=torch.Generator(),
        )
        bar = None
        if dist.is_main and c.progress_bar:
            from tqdm import tqdm

            bar = tqdm(
                total=plan.steps,
                initial=progress.step,
                desc=plan.name,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self._train_mode()
        stopped = False
        loss_sum, loss_n, images, tick = 0.0, 0, 0, time.perf_counter()
        batches = iter(loader)
        try:
            while progress.step < plan.steps:
                batch = next(batches)
                loss, parts = self._train_step(batch)
                progress.step += 1
                step = progress.step
                loss_sum += loss
                loss_n += 1
                images += batch['rgb'].shape[0] * dist.world_size
                last = step == plan.steps
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f'{loss:.4f}', lr=f'{self._lr():.2e}')
                row = None
                if step % c.log_every == 0 or last:
                    elapsed = time.perf_counter() - tick
                    mean_loss = dd.mean_scalar(dist, loss_sum / max(loss_n, 1))
                    row = {
                        'stage': plan.name,
                        'step': step,
                        'epoch': sampler.epoch_of(step),
                        'loss': mean_loss,
                        'lr': self._lr(),
                        'images_per_s': images / max(elapsed, 1e-9),
                    }
                    loss_sum, loss_n, images, tick = 0.0, 0, 0, time.perf_counter()
                ev_every = c.eval.every_steps
                if val_set is not None and (last or (ev_every and step % ev_every == 0)):
                    metrics = self._validate(val_set)
                    progress.last_metrics = metrics
                    row = row or {
                        'stage': plan.name,
                        'step': step,
                        'epoch': sampler.epoch_of(step),
                        'lr': self._lr(),
                    }
                    row.update(
                        {
                            k: metrics[k]
                            for k in ('val_miou', 'val_pixel_acc', 'val_mean_class_acc')
                        }
                    )
                    if metrics['val_miou'] > progress.best_miou:
                        progress.best_miou = metrics['val_miou']
                        progress.best_metrics = {**metrics, 'step': step}
                        self._save_weights(ck.BEST_FILE, progress.best_metrics)
                if row is not None:
                    if log is not None:
                        log.append(row)
                    self._emit_row(row, parts)
                stop = dd.any_flag(dist, run.events.stop_requested())
                if last or stop or (c.checkpoint_every and step % c.checkpoint_every == 0):
                    self._checkpoint()
                if stop and not last:
                    stopped = True
                    break
        finally:
            if bar is not None:
                bar.close()
            del batches
        if stopped:
            run.events.emit(
                {
                    'event': 'stopped',
                    'stage': plan.name,
                    'step': progress.step,
                    'total_steps': plan.steps,
                }
            )
            return StageResult(plan.dir / ck.LAST_FILE, True, {})
        return self._finish()

    def _finish(self) -> StageResult:
        plan, progress = self.plan, self.progress
        best = plan.dir / ck.BEST_FILE
        path = best if best.is_file() else plan.dir / ck.LAST_FILE
        metrics = progress.best_metrics or progress.last_metrics
        if self.run.dist.is_main:
            (plan.dir / DONE_FILE).write_text(
                json.dumps(
                    {'result': str(path), 'steps': progress.step, 'metrics': metrics}, indent=2
                )
                + '\n'
            )
            try:
                plot_log(
                    plan.dir / 'log.csv',
                    plan.dir / 'curves.png',
                    f'{self.run.config.recipe or "training"}: {plan.name}',
                )
            except (OSError, ValueError) as err:  # the plot is a by-product; the stage is done
                self.run.events.note(f'plot failed: {err}')
        dd.barrier(self.run.dist)
        return StageResult(path, False, metrics)

    def _lr(self) -> float:
        return max(g['lr'] for g in self.parts.optimizer.param_groups)

    def _emit_row(self, row: dict[str, Any], parts: dict[str, float]) -> None:
        info = {
            'event': 'step',
            'stage': self.plan.name,
            'stage_index': self.plan.index,
            'num_stages': len(self.run.config.stages),
            'total_steps': self.plan.steps,
            'val_miou': row.get('val_miou'),
            **parts,
            **row,
        }
        self.run.events.emit(info)

    def _train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict]:
        run, p = self.run, self.parts
        dev = run.dist.device
        fmt = torch.channels_last if run.channels_last else torch.contiguous_format
        rgb = batch['rgb'].to(dev, non_blocking=True).contiguous(memory_format=fmt)
        depth = batch['depth'].to(dev, non_blocking=True).contiguous(memory_format=fmt)
        labels = batch['labels'].to(dev, non_blocking=True)
        # K of the network input, for backends that bin on it, when the dataset provides it;
        # without it they use their configured focal length.
        K = (batch['K'].to(dev),) if 'K' in batch and needs_intrinsics(p.module) else ()
        with autocast(dev, run.precision):
            output = p.model(rgb, depth, *K)
        targets = depth_targets(batch, dev) if p.criterion.wants_depth_targets else None
        loss, parts = p.criterion(output, labels, targets)
        p.optimizer.zero_grad(set_to_none=True)
        p.scaler.scale(loss).backward()
        if self.plan.optim.grad_clip:
            p.scaler.unscale_(p.optimizer)
            nn.utils.clip_grad_norm_(
                [q for g in p.optimizer.param_groups for q in g['params']],
                self.plan.optim.grad_clip,
            )
        p.scaler.step(p.optimizer)
        p.scaler.update()
        p.scheduler.step()
        return float(loss.detach()), parts


def depth_targets(batch: dict[str, torch.Tensor], device: torch.device) -> DepthTargets:
    """The depth branch's targets from a batch of a dataset built with ``depth_targets``:
    metric depth at the labels' resolution and the focal length of each frame's K."""
    if 'depth_m' not in batch or 'K' not in batch:
        raise ValueError('the loss weighs depth but the batch carries no metric depth and K')
    return DepthTargets(
        batch['depth_m'].to(device, non_blocking=True), batch['K'][:, 0, 0].to(device)
    )
