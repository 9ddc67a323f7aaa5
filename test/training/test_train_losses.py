"""Losses: ignore index, auxiliary weights and resizing, OHEM, depth supervision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rgbd_seg_ros.backends.base import DepthPredictions, SegOutput
from rgbd_seg_ros.backends.depth_gating import (
    NYU_BIN_EDGES_M,
    NYU_KINECT_FOCAL_PX,
    depth_bin_loss,
    fz_edges,
    log_depth_loss,
)
from rgbd_seg_ros.training.losses import (
    DepthTargets,
    SegLoss,
    ohem_cross_entropy,
    resize_labels,
)

EDGES = fz_edges(NYU_BIN_EDGES_M, NYU_KINECT_FOCAL_PX)


def test_ignore_index_pixels_do_not_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    loss_fn = SegLoss(ignore_index=255, aux=False)
    base, _ = loss_fn(logits, labels)
    # changing the logits of ignored pixels leaves the loss unchanged
    labels2 = labels.clone()
    labels2[:, 0] = 255
    other = logits.clone()
    other[:, :, 0] += 100.0
    a, _ = loss_fn(logits, labels2)
    b, _ = loss_fn(other, labels2)
    assert torch.allclose(a, b)
    valid = labels2 != 255
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], labels2[valid])
    assert torch.allclose(a, manual)
    assert not torch.allclose(a, base)


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss, _ = SegLoss(ignore_index=255)(logits, torch.full((1, 4, 4), 255))
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_aux_weights_and_label_downsampling():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    aux1 = torch.randn(2, 3, 4, 4)
    aux2 = torch.randn(2, 3, 2, 2)
    labels = torch.randint(0, 3, (2, 8, 8))
    out = SegOutput(logits, (aux1, aux2), (0.6, 0.5))
    total, parts = SegLoss(aux=True)(out, labels)
    main = F.cross_entropy(logits, labels)
    l1 = F.cross_entropy(aux1, resize_labels(labels, (4, 4)))
    l2 = F.cross_entropy(aux2, resize_labels(labels, (2, 2)))
    assert torch.allclose(total, main + 0.6 * l1 + 0.5 * l2)
    assert set(parts) == {'loss_main', 'loss_aux0', 'loss_aux1'}
    # configured weights override the backend's; aux off gives the main loss only
    total2, _ = SegLoss(aux=True, aux_weights=[1.0, 0.0])(out, labels)
    assert torch.allclose(total2, main + l1)
    total3, _ = SegLoss(aux=False)(out, labels)
    assert torch.allclose(total3, main)


def test_aux_upsampled_logits_mode():
    logits = torch.randn(1, 3, 8, 8)
    aux = torch.randn(1, 3, 4, 4)
    labels = torch.randint(0, 3, (1, 8, 8))
    total, _ = SegLoss(aux_resize='logits')(SegOutput(logits, (aux,), (0.4,)), labels)
    up = F.interpolate(aux, size=(8, 8), mode='bilinear', align_corners=False)
    expected = F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(up, labels)
    assert torch.allclose(total, expected)


def test_resize_labels_nearest_keeps_ids():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]])
    small = resize_labels(labels, (2, 2))
    assert small.tolist() == [[[0, 1], [2, 255]]]


def test_ohem_keeps_hard_pixels():
    # two easy pixels (p(true) ~ 1), two hard ones
    logits = torch.tensor([[[[10.0, 10.0, -10.0, 0.0]], [[-10.0, -10.0, 10.0, 0.0]]]])
    labels = torch.tensor([[[0, 0, 0, 1]]])
    loss = ohem_cross_entropy(logits, labels, 255, thresh=0.7, min_kept=1)
    per_pixel = F.cross_entropy(logits, labels, reduction='none').reshape(-1)
    assert torch.allclose(loss, per_pixel[2:].mean())
    # min_kept larger than the hard set keeps the next hardest too
    loss_all = ohem_cross_entropy(logits, labels, 255, thresh=0.0, min_kept=4)
    assert torch.allclose(loss_all, per_pixel.mean())


def test_bad_aux_resize_rejected():
    with pytest.raises(ValueError):
        SegLoss(aux_resize='nope')


def _depth_output(steps: int = 2) -> tuple[SegOutput, DepthTargets]:
    """A training output with a depth branch of ``steps`` steps, and matching targets."""
    gen = torch.Generator().manual_seed(4)
    depth = torch.rand(2, 1, 16, 24, generator=gen) * 5.0
    depth[0, 0, :4] = 0.0  # holes
    predictions = DepthPredictions(
        tuple(torch.randn(2, 5, 2, 3, generator=gen, requires_grad=True) for _ in range(steps)),
        tuple(torch.randn(2, 1, 2, 3, generator=gen, requires_grad=True) for _ in range(steps)),
        EDGES,
    )
    logits = torch.randn(2, 3, 16, 24, generator=gen, requires_grad=True)
    out = SegOutput(logits, (), (), predictions)
    return out, DepthTargets(depth, torch.full((2,), NYU_KINECT_FOCAL_PX))


def test_depth_terms_follow_the_objective_per_step():
    """Kong & Fowlkes' Eq. 1: lambda_c * bins CE + lambda_r * log-depth error at every step."""
    out, targets = _depth_output(steps=3)
    labels = torch.randint(0, 3, (2, 16, 24))
    plain, plain_parts = SegLoss(aux=False)(out, labels)
    assert not SegLoss().wants_depth_targets
    assert not any(k.startswith('loss_depth') or k.startswith('loss_log') for k in plain_parts)
    loss_fn = SegLoss(aux=False, depth_bin_weight=0.01, depth_reg_weight=0.001)
    assert loss_fn.wants_depth_targets
    total, parts = loss_fn(out, labels, targets)
    expected = plain
    assert out.depth is not None
    for i, (b, d) in enumerate(zip(out.depth.bin_logits, out.depth.log_depth, strict=True)):
        cls = depth_bin_loss(b, targets.depth_m, targets.focal, EDGES)
        reg = log_depth_loss(d, targets.depth_m)
        assert parts[f'loss_depth_bins{i}'] == pytest.approx(float(cls.detach()))
        assert parts[f'loss_log_depth{i}'] == pytest.approx(float(reg.detach()))
        expected = expected + 0.01 * cls + 0.001 * reg
    assert torch.allclose(total, expected)
    total.backward()
    assert all(b.grad is not None for b in out.depth.bin_logits)
    # one weight alone: only its term
    _, only_bins = SegLoss(aux=False, depth_bin_weight=1.0)(out, labels, targets)
    assert 'loss_depth_bins0' in only_bins and 'loss_log_depth0' not in only_bins


def test_depth_terms_need_predictions_and_targets():
    out, targets = _depth_output()
    labels = torch.randint(0, 3, (2, 16, 24))
    loss_fn = SegLoss(depth_bin_weight=0.01)
    with pytest.raises(ValueError, match='no depth targets'):
        loss_fn(out, labels)
    with pytest.raises(ValueError, match='predicts no depth'):
        loss_fn(out.logits, labels, targets)
    with pytest.raises(ValueError, match='>= 0'):
        SegLoss(depth_reg_weight=-1.0)
