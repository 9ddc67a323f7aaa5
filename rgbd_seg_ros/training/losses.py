"""Segmentation losses: cross-entropy with the ignore index, auxiliary heads, optional OHEM.

``SegLoss`` takes what a backend returns in training mode (``SegOutput(logits, aux,
aux_weights)`` or plain logits) and the labels. Auxiliary logits live at their own resolution;
by default the labels are resized to them with nearest neighbour (``aux_resize='labels'``),
alternatively the aux logits are upsampled bilinearly to the label size (``'logits'``, the
AdapNet++ formulation). The total is ``L_main + sum_i w_i * L_aux_i``; the weights are the
backend's ``aux_weights`` unless the configuration gives its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_labels(labels: Tensor, size: tuple[int, ...]) -> Tensor:
    """Nearest-neighbour resize of integer labels [B,H,W] to ``size`` (pixel-centre aligned)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=size, mode='nearest-exact')
    return resized[:, 0].to(labels.dtype)


def ohem_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int,
    thresh: float,
    min_kept: int,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Online hard example mining (ANN/TorchCV style): average the per-pixel CE over pixels
    whose true-class probability is below ``thresh``, keeping at least ``min_kept`` of the
    hardest valid pixels."""
    pixel_loss = F.cross_entropy(
        logits,
        labels,
        weight=weight,
        ignore_index=ignore_index,
        reduction='none',
        label_smoothing=label_smoothing,
    ).reshape(-1)
    valid = (labels != ignore_index).reshape(-1)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0.0
    with torch.no_grad():
        prob = F.softmax(logits.float(), dim=1)
        safe = labels.clone()
        safe[safe == ignore_index] = 0
        true_prob = prob.gather(1, safe[:, None]).reshape(-1)
        true_prob[~valid] = float('inf')
        keep_n = min(max(min_kept, 1), n_valid)
        kth = (
            torch.kthvalue(true_prob, keep_n).values
            if keep_n < true_prob.numel()
            else true_prob.max()
        )
        threshold = torch.maximum(kth, torch.tensor(thresh, device=kth.device))
        keep = valid & (true_prob <= threshold)
    return pixel_loss[keep].mean()


class SegLoss(nn.Module):
    """Main + auxiliary cross-entropy; returns (total, {name: value}) for logging."""

    class_weights: Tensor | None  # a buffer, registered in __init__

    def __init__(
        self,
        ignore_index: int = 255,
        class_weights: Tensor | None = None,
        aux: bool = True,
        aux_weights: Sequence[float] | None = None,
        aux_resize: str = 'labels',
        ohem: bool = False,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100000,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if aux_resize not in ('labels', 'logits'):
            raise ValueError(f"aux_resize must be 'labels' or 'logits', got {aux_resize!r}")
        self.ignore_index = ignore_index
        self.register_buffer('class_weights', class_weights, persistent=False)
        self.aux = aux
        self.aux_weights = tuple(aux_weights) if aux_weights is not None else None
        self.aux_resize = aux_resize
        self.ohem = ohem
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.label_smoothing = label_smoothing

    def ce(self, logits: Tensor, labels: Tensor, use_ohem: bool = False) -> Tensor:
        logits = logits.float()
        weight = self.class_weights
        if use_ohem:
            return ohem_cross_entropy(
                logits,
                labels,
                self.ignore_index,
                self.ohem_thresh,
                self.ohem_min_kept,
                weight,
                self.label_smoothing,
            )
        if not bool((labels != self.ignore_index).any()):
            return logits.sum() * 0.0  # CE's mean over zero pixels would be NaN
        return F.cross_entropy(
            logits,
            labels,
            weight=weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )

    def forward(self, output: object, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        logits, aux, weights = _unpack(output)
        main = self.ce(logits, labels, self.ohem)
        total = main
        parts = {'loss_main': float(main.detach())}
        if self.aux and aux:
            weights = self.aux_weights if self.aux_weights is not None else weights
            if len(weights) < len(aux):
                raise ValueError(f'{len(aux)} auxiliary outputs but {len(weights)} weights')
            for i, (aux_logits, w) in enumerate(zip(aux, weights, strict=False)):
                if w == 0:
                    continue
                if self.aux_resize == 'labels':
                    term = self.ce(aux_logits, resize_labels(labels, aux_logits.shape[-2:]))
                else:
                    up = F.interpolate(
                        aux_logits.float(),
                        size=labels.shape[-2:],
                        mode='bilinear',
                        align_corners=False,
                    )
                    term = self.ce(up, labels)
                total = total + w * term
                parts[f'loss_aux{i}'] = float(term.detach())
        return total, parts


def _unpack(output: object) -> tuple[Tensor, tuple[Tensor, ...], tuple[float, ...]]:
    if isinstance(output, Tensor):
        return output, (), ()
    logits = output.logits  # type: ignore[attr-defined]  # a SegOutput-like training output
    aux = tuple(getattr(output, 'aux', ()) or ())
    weights = tuple(getattr(output, 'aux_weights', ()) or ())
    return logits, aux, weights
