"""Metrics from hand-computed confusion matrices."""

from __future__ import annotations

import math

import torch

from rgbd_seg_ros.training.metrics import (
    ConfusionMatrix,
    format_table,
    metrics_from_confusion,
    reindex_classes,
    strict_json,
)


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
    # class 2 absent from GT and prediction: NaN, not averaged; class 3 predicted only: IoU 0,
    # reported but not averaged either: mIoU is over the classes present in the ground truth
    # (its wrong pixels already cost class 0 a false negative: IoU 3/4).
    m = torch.tensor([[3, 0, 0, 1], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    r = metrics_from_confusion(m)
    assert math.isnan(r.iou[2])
    assert r.iou[3] == 0.0
    assert r.in_gt == [True, True, False, False]
    assert math.isclose(r.miou, (3 / 4 + 1) / 2)
    assert math.isclose(r.mean_class_acc, (3 / 4 + 1) / 2)  # over classes present in GT
    table = format_table({'single-scale': r}, ['a', 'b', 'c', 'd'])
    assert 'mIoU' in table and '-' in table.splitlines()[-2]
    assert table.splitlines()[-1].split()[-1] == '-'  # 'd' is not in the ground truth


def test_phantom_class_no_longer_drags_the_mean():
    # Labels 1..3 once gave a 4-output model whose class 0 scored IoU 0 and pulled the mean
    # down (93.9 -> 70.4 in the field); a class nobody labelled is not scored.
    m = torch.tensor([[0, 0, 0, 0], [0, 9, 1, 0], [0, 0, 10, 0], [0, 0, 1, 9]])
    r = metrics_from_confusion(m)
    assert math.isnan(r.iou[0]) and not r.in_gt[0]
    assert math.isclose(r.miou, (9 / 10 + 10 / 12 + 9 / 10) / 3)


def test_empty_split_is_not_scored():
    r = metrics_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert not r.scored and math.isnan(r.miou) and r.pixels == 0
    assert strict_json(r.as_dict()) == {
        'miou': None,
        'pixel_acc': None,
        'mean_class_acc': None,
        'iou': [None, None, None],
        'pixels': 0,
        'classes_in_gt': 0,
    }


def test_reindex_classes_follows_label_ids():
    r = metrics_from_confusion(torch.tensor([[2, 0, 0], [0, 1, 1], [0, 0, 0]]))
    # outputs carry label ids 5, 7, 9; the dataset lists 7, 5 and 3
    out = reindex_classes(r, [5, 7, 9], [7, 5, 3])
    assert out.iou[:2] == [r.iou[1], r.iou[0]] and math.isnan(out.iou[2])
    assert out.in_gt == [True, True, False] and out.miou == r.miou


def test_perfect_prediction():
    cm = ConfusionMatrix(4)
    t = torch.randint(0, 4, (2, 5, 6))
    cm.update(t.clone(), t)
    r = cm.compute()
    assert r.miou == 1.0 and r.pixel_acc == 1.0
