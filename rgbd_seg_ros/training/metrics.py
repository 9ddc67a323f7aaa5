"""Segmentation metrics from one confusion matrix accumulated over a whole split.

The matrix is accumulated on the device with ``torch.bincount`` (rows: ground truth, columns:
prediction); pixels whose label is the ignore index (or outside ``[0, K)``) are skipped. Under
DDP the matrices of all ranks are summed before the metrics are read.

Conventions (doc/design.md §4.4):

* IoU_c = TP / (TP + FP + FN). A class absent from both the ground truth and the prediction has
  an undefined IoU (0/0), reported as NaN; a class predicted but absent from the GT has IoU 0.
* **mIoU is the mean over the classes present in the ground truth of the split**: a class the
  split does not contain is not scored (its wrong predictions still cost the classes whose
  pixels they took, as false negatives).
* Pixel accuracy = sum TP / number of labelled pixels.
* Mean class accuracy = mean over classes present in the GT of TP / GT pixels.

A split without a single labelled pixel has no metrics: every figure is NaN, and
:attr:`SegMetrics.scored` is False so callers can refuse to report it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    in_gt: list[bool] = field(default_factory=list)  # per class: present in the ground truth

    @property
    def scored(self) -> bool:
        """True when the split had labelled pixels of at least one class."""
        return any(self.in_gt) and not math.isnan(self.miou)

    def as_dict(self, prefix: str = '') -> dict[str, float | list[float | None] | int]:
        """The figures by name (per-class NaN as None; see :func:`strict_json` for the rest)."""
        return {
            f'{prefix}miou': self.miou,
            f'{prefix}pixel_acc': self.pixel_acc,
            f'{prefix}mean_class_acc': self.mean_class_acc,
            f'{prefix}iou': [finite_or_none(v) for v in self.iou],
            f'{prefix}pixels': self.pixels,
            f'{prefix}classes_in_gt': sum(self.in_gt),
        }


def finite_or_none(value: float) -> float | None:
    """``value``, or None for NaN/inf (JSON has no NaN)."""
    return value if math.isfinite(value) else None


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, for strict JSON output."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


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
        miou=_nanmean(iou[gt > 0]),
        pixel_acc=float(tp.sum()) / total if total else float('nan'),
        mean_class_acc=_nanmean(class_acc),
        iou=iou.tolist(),
        class_acc=class_acc.tolist(),
        pixels=int(total),
        in_gt=(gt > 0).tolist(),
    )


def reindex_classes(
    metrics: SegMetrics, from_ids: Sequence[int], to_ids: Sequence[int]
) -> SegMetrics:
    """``metrics`` of outputs with label ids ``from_ids``, per class in ``to_ids`` order (an
    id ``from_ids`` lacks reads as absent). The summary figures do not change: classes outside
    ``to_ids`` must be absent from the ground truth for them to mean the same."""
    where = {label_id: i for i, label_id in enumerate(from_ids)}
    nan = float('nan')

    def pick(values: Sequence[Any], default: Any) -> list[Any]:
        return [values[where[i]] if i in where else default for i in to_ids]

    return SegMetrics(
        miou=metrics.miou,
        pixel_acc=metrics.pixel_acc,
        mean_class_acc=metrics.mean_class_acc,
        iou=pick(metrics.iou, nan),
        class_acc=pick(metrics.class_acc, nan),
        pixels=metrics.pixels,
        in_gt=pick(metrics.in_gt, False),
    )


def format_table(
    metrics: dict[str, SegMetrics],
    class_names: list[str],
    class_ids: Sequence[int] | None = None,
) -> str:
    """A text table: summary rows per evaluation mode, then per-class IoU columns (rows
    labelled with ``class_ids``, the dataset's label ids; default 0..K-1)."""
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
    lines.append(
        'per-class IoU (%); mIoU averages the classes present in the ground truth; '
        '"-" = not in the ground truth (not scored)'
    )
    ids = list(range(len(class_names))) if class_ids is None else list(class_ids)
    for c, name in enumerate(class_names):
        cells = ''
        for mode in modes:
            m = metrics[mode]
            present = c < len(m.in_gt) and m.in_gt[c]
            value = m.iou[c] if c < len(m.iou) else float('nan')
            cells += f'{100 * value:14.2f}' if present else f'{"-":>14s}'
        lines.append(f'  {ids[c]:3d} {name[:18]:18s}' + cells)
    return '\n'.join(lines)
