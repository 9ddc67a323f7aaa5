"""Segmentation metrics from one confusion matrix accumulated over a whole split.

The matrix is accumulated on the device with ``torch.bincount`` (rows: ground truth, columns:
prediction); pixels whose label is the ignore index (or outside ``[0, K)``) are skipped. Under
DDP the matrices of all ranks are summed before the metrics are read.

Conventions (documented in the report):

* IoU_c = TP / (TP + FP + FN). A class absent from both the ground truth and the prediction has
  an undefined IoU (0/0); it is reported as NaN and **excluded from the mean** (mIoU is the mean
  over classes with a non-empty union). A class predicted but absent from the GT has IoU 0.
* Pixel accuracy = sum TP / number of labelled pixels.
* Mean class accuracy = mean over classes present in the GT of TP / GT pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class ConfusionMatrix:
    """A K x K int64 confusion matrix on a device."""

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: str | torch.device = 'cpu'
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` are integer tensors of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f'prediction {tuple(pred.shape)} vs target {tuple(target.shape)}')
        k = self.num_classes
        target = target.to(self.matrix.device, torch.int64).reshape(-1)
        pred = pred.to(self.matrix.device, torch.int64).reshape(-1)
        valid = (target >= 0) & (target < k) & (target != self.ignore_index)
        index = target[valid] * k + pred[valid].clamp_(0, k - 1)
        self.matrix += torch.bincount(index, minlength=k * k).reshape(k, k)

    def reset(self) -> None:
        self.matrix.zero_()

    def all_reduce(self) -> None:
        """Sum over DDP ranks (no-op without an initialised process group)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def compute(self) -> SegMetrics:
        return metrics_from_confusion(self.matrix)


@dataclass
class SegMetrics:
    """Metrics of one evaluation."""

    miou: float
    pixel_acc: float
    mean_class_acc: float
    iou: list[float]  # per class; NaN where the class is absent from GT and prediction
    class_acc: list[float]  # per class; NaN where the class is absent from GT
    pixels: int

    def as_dict(self, prefix: str = '') -> dict[str, float | list[float | None] | int]:
        return {
            f'{prefix}miou': self.miou,
            f'{prefix}pixel_acc': self.pixel_acc,
            f'{prefix}mean_class_acc': self.mean_class_acc,
            f'{prefix}iou': [None if math.isnan(v) else v for v in self.iou],
            f'{prefix}pixels': self.pixels,
        }


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else float('nan')


def metrics_from_confusion(matrix: torch.Tensor) -> SegMetrics:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU of a confusion matrix."""
    m = matrix.to(torch.float64)
    tp = torch.diagonal(m)
    gt = m.sum(dim=1)
    pred = m.sum(dim=0)
    union = gt + pred - tp
    nan = torch.full_like(tp, float('nan'))
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    class_acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    total = float(m.sum())
    return SegMetrics(
        miou=_nanmean(iou),
        pixel_acc=float(tp.sum()) / total if total else float('nan'),
        mean_class_acc=_nanmean(class_acc),
        iou=iou.tolist(),
        class_acc=class_acc.tolist(),
        pixels=int(total),
    )


def format_table(metrics: dict[str, SegMetrics], class_names: list[str]) -> str:
    """A text table: summary rows per evaluation mode, then per-class IoU columns."""
    modes = list(metrics)
    lines = [f'{"":24s}' + ''.join(f'{mode:>14s}' for mode in modes)]
    for label, attr in (
        ('mIoU', 'miou'),
        ('pixel accuracy', 'pixel_acc'),
        ('mean class accuracy', 'mean_class_acc'),
    ):
        lines.append(
            f'{label:24s}' + ''.join(f'{100 * getattr(metrics[m], attr):14.2f}' for m in modes)
        )
    lines.append('per-class IoU (%; "-" = absent from GT and prediction, not averaged)')
    for c, name in enumerate(class_names):
        cells = ''
        for mode in modes:
            value = metrics[mode].iou[c] if c < len(metrics[mode].iou) else float('nan')
            cells += f'{"-":>14s}' if math.isnan(value) else f'{100 * value:14.2f}'
        lines.append(f'  {c:3d} {name[:18]:18s}' + cells)
    return '\n'.join(lines)
