"""Segmentation losses: cross-entropy with the ignore index, auxiliary heads, optional OHEM.

``SegLoss`` takes what a backend returns in training mode (``SegOutput(logits, aux,
aux_weights)`` or plain logits) and the labels. Auxiliary logits live at their own resolution;
by default the labels are resized to them with nearest neighbour (``aux_resize='labels'``),
alternatively the aux logits are upsampled bilinearly to the label size (``'logits'``, the
AdapNet++ formulation). The total is ``L_main + sum_i w_i * L_aux_i``; the weights are the
backend's ``aux_weights`` unless the configuration gives its own.

A backend with a depth branch (``SegOutput.depth``, depth-aware gating) can also be supervised
with the sensor's depth, as in Kong & Fowlkes' objective (their Eq. 1): at every prediction
step ``l``, ``lambda_c * L_depthCls^l + lambda_r * L_depthReg^l``, the 5-way cross-entropy of the
depth bins and the masked squared log-depth error, both at the label resolution
(``depth_bin_weight``, ``depth_reg_weight``; 0 leaves the branch to the segmentation loss alone,
the paper's "attention" variant). The targets are :class:`DepthTargets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.base import DepthPredictions
from rgbd_seg_ros.backends.depth_gating import depth_bin_loss, log_depth_loss


class DepthTargets(NamedTuple):
    """The sensor's depth as the target of a depth branch, at the labels' resolution."""

    depth_m: Tensor  # [B, 1, H, W] metres, 0 = invalid
    focal: Tensor  # [B] focal length (pixels) that goes with these depths: bins are on f/Z


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
        depth_bin_weight: float = 0.0,
        depth_reg_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if depth_bin_weight < 0 or depth_reg_weight < 0:
            raise ValueError('depth loss weights must be >= 0')
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
        self.depth_bin_weight = depth_bin_weight
        self.depth_reg_weight = depth_reg_weight

    @property
    def wants_depth_targets(self) -> bool:
        """Whether :meth:`forward` needs :class:`DepthTargets` (a depth term has weight)."""
        return self.depth_bin_weight > 0 or self.depth_reg_weight > 0

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

    def forward(
        self, output: object, labels: Tensor, depth_targets: DepthTargets | None = None
    ) -> tuple[Tensor, dict[str, float]]:
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
        if self.wants_depth_targets:
            total = total + self._depth_terms(output, depth_targets, parts)
        return total, parts

    def _depth_terms(
        self, output: object, targets: DepthTargets | None, parts: dict[str, float]
    ) -> Tensor:
        """Sum over prediction steps of the weighted depth-bin and log-depth losses."""
        predictions = getattr(output, 'depth', None)
        if not isinstance(predictions, DepthPredictions):
            raise ValueError('depth loss weights are set but the model predicts no depth')
        if targets is None:
            raise ValueError('depth loss weights are set but no depth targets were given')
        total = targets.depth_m.new_zeros(())
        steps = zip(predictions.bin_logits, predictions.log_depth, strict=True)
        for i, (bin_logits, log_depth) in enumerate(steps):
            if self.depth_bin_weight > 0:
                term = depth_bin_loss(
                    bin_logits.float(), targets.depth_m, targets.focal, predictions.bin_edges_fz
                )
                total = total + self.depth_bin_weight * term
                parts[f'loss_depth_bins{i}'] = float(term.detach())
            if self.depth_reg_weight > 0:
                term = log_depth_loss(log_depth.float(), targets.depth_m)
                total = total + self.depth_reg_weight * term
                parts[f'loss_log_depth{i}'] = float(term.detach())
        return total


def _unpack(output: object) -> tuple[Tensor, tuple[Tensor, ...], tuple[float, ...]]:
    if isinstance(output, Tensor):
        return output, (), ()
    logits = output.logits  # type: ignore[attr-defined]  # a SegOutput-like training output
    aux = tuple(getattr(output, 'aux', ()) or ())
    weights = tuple(getattr(output, 'aux_weights', ()) or ())
    return logits, aux, weights
