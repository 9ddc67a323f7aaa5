"""Metrics from hand-computed confusion matrices."""

from __future__ import annotations

import math

import torch

from rgbd_seg_ros.training.metrics import ConfusionMatrix, format_table, metrics_from_confusion


def test_confusion_matrix_counts_and_ignores():
    cm = ConfusionMatrix(3, ignore_index=255)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 7]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    cm.update(pred, target)
    # rows = GT, cols = prediction; the 255 pixel and the out-of-range id 7 are skipped
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert torch.equal(cm.matrix, expected)
    cm.update(pred, target)
    assert torch.equal(cm.matrix, 2 * expected)


def test_metrics_hand_computed():
    m = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    r = metrics_from_confusion(m)
    # IoU: c0 1/(2+2-1)=1/3, c1 2/(2+3-2)=2/3, c2 1/(2+1-1)=1/2
    assert r.iou == [1 / 3, 2 / 3, 1 / 2]
    assert math.isclose(r.miou, (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert math.isclose(r.pixel_acc, 4 / 6)
    assert math.isclose(r.mean_class_acc, (1 / 2 + 1 + 1 / 2) / 3)
    assert r.pixels == 6


def test_absent_classes_excluded_from_mean():
    # class 2 absent from GT and prediction: NaN, not averaged; class 3 predicted only: IoU 0
    m = torch.tensor([[3, 0, 0, 1], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    r = metrics_from_confusion(m)
    assert math.isnan(r.iou[2])
    assert r.iou[3] == 0.0
    assert math.isclose(r.miou, (3 / 4 + 1 + 0) / 3)
    assert math.isclose(r.mean_class_acc, (3 / 4 + 1) / 2)  # over classes present in GT
    table = format_table({'single-scale': r}, ['a', 'b', 'c', 'd'])
    assert 'mIoU' in table and '-' in table.splitlines()[-2]


def test_perfect_prediction():
    cm = ConfusionMatrix(4)
    t = torch.randint(0, 4, (2, 5, 6))
    cm.update(t.clone(), t)
    r = cm.compute()
    assert r.miou == 1.0 and r.pixel_acc == 1.0
