"""import-labels: annotated PNGs back into a dataset by frame id, with checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rgbd_seg_ros.cli.main import main
from rgbd_seg_ros.data import layout as L
from rgbd_seg_ros.data.labels_import import import_labels
from rgbd_seg_ros.errors import DatasetError

H, W = 48, 64
CLASSES = [
    L.ClassInfo(0, 'floor', (10, 20, 30)),
    L.ClassInfo(1, 'wall', (200, 0, 0)),
    L.ClassInfo(2, 'door', (0, 200, 0)),
]


def _dataset(root, classes=CLASSES, n=4):
    meta = L.DatasetMeta(classes=list(classes))
    with L.DatasetWriter(root, meta) as writer:
        for i in range(n):
            record = L.FrameRecord(f'rec_{i}', i, 'train', 'rec', 't', W, H, 50, 50, 32, 24)
            writer.write_frame(record, np.zeros((H, W, 3), np.uint8), np.zeros((H, W), np.uint16))


def _ids(seed):
    ids = np.random.default_rng(seed).integers(0, 3, (H, W), dtype=np.uint8)
    ids[0, 0] = 255
    return ids


def test_import_ids_and_palette(tmp_path):
    root, ann = tmp_path / 'ds', tmp_path / 'ann'
    ann.mkdir()
    _dataset(root)
    cv2.imwrite(str(ann / 'rec_0.png'), _ids(0))
    palette = np.zeros((256, 3), np.uint8)
    for c in CLASSES:
        palette[c.id] = c.color
    colour = palette[_ids(1)]
    colour[0, 0] = (0, 0, 0)  # black is not a class colour -> ignore with unknown='ignore'
    cv2.imwrite(str(ann / 'rec_1_label.png'), colour[:, :, ::-1])
    cv2.imwrite(str(ann / 'rec_2_label.png'), _ids(2))
    report = import_labels(root, ann, suffix='_label', unknown='ignore')
    assert report['imported'] == 3 and report['rejected'] == {}
    assert report['unknown_pixels_set_to_ignore'] == 1
    assert report['frames_without_labels'] == 1
    reader = L.DatasetReader(root)
    np.testing.assert_array_equal(reader.load('rec_0').labels, _ids(0))
    np.testing.assert_array_equal(reader.load('rec_1').labels, _ids(1))
    np.testing.assert_array_equal(reader.load('rec_2').labels, _ids(2))


def test_rejections_leave_dataset_untouched(tmp_path):
    root, ann = tmp_path / 'ds', tmp_path / 'ann'
    ann.mkdir()
    _dataset(root)
    cv2.imwrite(str(ann / 'rec_0.png'), np.zeros((H // 2, W), np.uint8))  # wrong size
    bad = _ids(3)
    bad[5, 5] = 7  # not a class
    cv2.imwrite(str(ann / 'rec_1.png'), bad)
    cv2.imwrite(str(ann / '.._.._evil.png'), _ids(0))  # not a frame id in the index
    (ann / 'rec_2.png').write_bytes(b'not a png')
    cv2.imwrite(str(ann / 'rec_3.png'), _ids(3))
    report = import_labels(root, ann)
    assert report['imported'] == 1
    assert report['rejected'] == {
        'size_mismatch': 1,
        'unknown_ids': 1,
        'no_such_frame': 1,
        'unreadable': 1,
    }
    assert any('unknown ids [7]' in p for p in report['problems'])
    assert sorted(p.name for p in (root / 'labels').iterdir()) == ['rec_3.png']
    assert not (tmp_path / 'evil.png').exists()
    # Existing labels are kept unless --overwrite.
    report = import_labels(root, ann)
    assert report['rejected']['already_labelled'] == 1


def test_classes_required_and_cli(tmp_path, capsys):
    root, ann = tmp_path / 'ds', tmp_path / 'ann'
    ann.mkdir()
    _dataset(root, classes=[])
    cv2.imwrite(str(ann / 'rec_0.png'), _ids(0))
    with pytest.raises(DatasetError, match='no classes'):
        import_labels(root, ann)
    classes = tmp_path / 'classes.yaml'
    classes.write_text('classes:\n- {id: 0, name: a}\n- {id: 1, name: b}\n- {id: 2, name: c}\n')
    assert main(['import-labels', str(root), str(ann), '--classes', str(classes)]) == 0
    assert '1 of 1 label file(s) imported' in capsys.readouterr().out
    assert L.DatasetReader(root).meta.class_names == ['a', 'b', 'c']
