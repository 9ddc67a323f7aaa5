"""Losses: ignore index, auxiliary weights and resizing, OHEM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rgbd_seg_ros.backends.base import SegOutput
from rgbd_seg_ros.training.losses import SegLoss, ohem_cross_entropy, resize_labels


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
