"""Evaluation over a whole split: single scale, and multi-scale + flip, reported separately.

Protocol (doc/design.md §4.4): logits are resized bilinearly to the full label resolution before
the argmax, and one confusion matrix is accumulated over the split (summed over DDP ranks, each
evaluating its own shard). Multi-scale + flip averages the softmax over the input scales and
their horizontal mirrors. Inputs are resized on the device: colour bilinearly, depth encodings
with nearest neighbour (the encoded values are kept, as in the papers' test-time augmentation).
With a fixed network resolution the inputs are first resized to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from rgbd_seg_ros.inference.precision import autocast_dtype
from rgbd_seg_ros.training.dataset import SegDataset, loader_worker_init, shard_indices
from rgbd_seg_ros.training.distributed import DistContext
from rgbd_seg_ros.training.metrics import ConfusionMatrix, SegMetrics


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16/fp16); a no-op on CPU or for fp32."""
    dtype = autocast_dtype(precision)
    if device.type != 'cuda' or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast('cuda', dtype=dtype)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size) or x.shape[1] == 0:
        return x if x.shape[1] else x.new_zeros((*x.shape[:2], *size))
    if mode == 'nearest':
        return F.interpolate(x, size=size, mode='nearest-exact')
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    rgb: torch.Tensor,
    depth: torch.Tensor,
    out_size: tuple[int, int],
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    fixed_hw: tuple[int, int] | None = None,
    precision: str = 'fp32',
    channels_last: bool = False,
) -> torch.Tensor:
    """Scores [B,K,H,W] at ``out_size``: logits for one scale without flip, else averaged
    softmax probabilities."""
    base = fixed_hw or tuple(rgb.shape[-2:])
    single = len(scales) == 1 and not flip
    total = None
    for s in scales:
        size = (max(round(base[0] * s), 1), max(round(base[1] * s), 1))
        r = _resize(rgb, size, 'bilinear')
        d = _resize(depth, size, 'nearest')
        if channels_last:
            r = r.contiguous(memory_format=torch.channels_last)
            d = d.contiguous(memory_format=torch.channels_last)
        for mirrored in (False, True) if flip else (False,):
            ri, di = (r.flip(-1), d.flip(-1)) if mirrored else (r, d)
            with autocast(rgb.device, precision):
                out = model(ri, di)
            logits = out if isinstance(out, torch.Tensor) else out[0]
            logits = logits.float()
            if mirrored:
                logits = logits.flip(-1)
            logits = _resize(logits, out_size, 'bilinear')
            if single:
                return logits
            prob = logits.softmax(dim=1)
            total = prob if total is None else total + prob
    assert total is not None  # at least one scale
    return total


def evaluate(
    model: nn.Module,
    dataset: SegDataset,
    ctx: DistContext,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    batch_size: int = 1,
    num_workers: int = 0,
    fixed_hw: tuple[int, int] | None = None,
    precision: str = 'fp32',
    channels_last: bool = False,
    max_frames: int | None = None,
    progress: bool = False,
) -> SegMetrics:
    """Metrics of ``model`` (its eval mode is set and restored) on ``dataset``."""
    inner = getattr(model, 'module', None)  # DataParallel / DistributedDataParallel
    module = inner if isinstance(inner, nn.Module) else model
    was_training = module.training
    module.eval()
    n = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    subset = Subset(dataset, shard_indices(n, ctx.rank, ctx.world_size))
    loader = DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=ctx.device.type == 'cuda',
        worker_init_fn=loader_worker_init(),
        generator=torch.Generator(),
    )  # leaves the global RNG alone
    cm = ConfusionMatrix(dataset.num_classes, dataset.target_ignore, ctx.device)
    iterator: Iterable[dict[str, torch.Tensor]] = loader
    if progress and ctx.is_main:
        from tqdm import tqdm

        iterator = tqdm(loader, desc='eval', leave=False, dynamic_ncols=True)
    try:
        for batch in iterator:
            rgb = batch['rgb'].to(ctx.device, non_blocking=True)
            depth = batch['depth'].to(ctx.device, non_blocking=True)
            labels = batch['labels'].to(ctx.device, non_blocking=True)
            scores = predict_logits(
                module,
                rgb,
                depth,
                (labels.shape[-2], labels.shape[-1]),
                scales,
                flip,
                fixed_hw,
                precision,
                channels_last,
            )
            cm.update(scores.argmax(dim=1), labels)
    finally:
        module.train(was_training)
    cm.all_reduce()
    return cm.compute()
