"""Classes are bookkept from the data: one output per class, label ids kept end to end.

Labels with ids 1..4 (no class 0) train a four-output network whose checkpoint carries the
ids; the engine publishes those ids, the metrics score only classes in the ground truth, and
nothing is ever called ``class_0``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import train_fixtures as tf

from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from rgbd_seg_ros.core.label_space import output_lut, target_ignore, to_outputs
from rgbd_seg_ros.data.layout import DatasetMeta, DatasetReader
from rgbd_seg_ros.errors import CheckpointError, DatasetError
from rgbd_seg_ros.inference.engine import Engine
from rgbd_seg_ros.training.config import load_config
from rgbd_seg_ros.training.dataset import SegDataset
from rgbd_seg_ros.training.pipeline_eval import LabelIdConfusion, evaluate_engine
from rgbd_seg_ros.training.trainer import run_training


def test_output_lut_is_dense_in_id_order():
    lut = output_lut([7, 2, 40], fill=255)
    assert lut[[7, 2, 40]].tolist() == [0, 1, 2]
    assert lut[[0, 1, 3, 255, 65535]].tolist() == [255] * 5
    labels = np.array([[2, 7], [40, 9]], np.uint16)
    assert to_outputs(labels, lut, 255).tolist() == [[1, 0], [2, 255]]
    # ints outside a label image's range are no class either
    assert to_outputs(np.array([-1, 70000, 40]), lut, 255).tolist() == [255, 255, 2]


def test_target_ignore_never_collides_with_an_output():
    assert target_ignore(255, 4) == 255
    assert target_ignore(0, 3) == 3  # ids 1..3 with 0 = unlabelled: outputs 0..2, ignore 3
    assert target_ignore(2, 3) == 3


@pytest.fixture(scope='module')
def shifted(tmp_path_factory):
    """Ids 1..4 (wall, near_box, far_box, disc), unlabelled 255."""
    return tf.write_dataset(tmp_path_factory.mktemp('ids') / 'ds', n_train=8, n_val=4, first_id=1)


def test_dataset_maps_ids_to_dense_outputs(shifted):
    ds = SegDataset(shifted, 'train', depth_encoding='metric')
    assert ds.class_ids == [1, 2, 3, 4] and ds.num_classes == 4
    raw = ds.reader.load(ds.records[0].frame_id).labels
    item = ds[0]['labels'].numpy()
    expected = np.where(raw == 255, 255, raw.astype(np.int64) - 1)
    np.testing.assert_array_equal(item, expected)


def test_ignore_id_zero_with_classes_above_it(tmp_path):
    """0 = unlabelled, classes 1..4: output 0 is class 1, unlabelled pixels become 4."""
    root = tf.write_dataset(tmp_path / 'ds', n_train=2, n_val=1, first_id=1, ignore_index=0)
    ds = SegDataset(root, 'train', depth_encoding='metric')
    assert ds.target_ignore == 4
    raw = ds.reader.load(ds.records[0].frame_id).labels
    labels = ds[0]['labels'].numpy()
    assert (raw == 0).any()
    np.testing.assert_array_equal(labels[raw == 0], 4)
    np.testing.assert_array_equal(labels[raw == 1], 0)


def test_dataset_without_classes_is_a_clear_error(shifted, tmp_path):
    import shutil

    root = tmp_path / 'ds'
    shutil.copytree(shifted, root)
    meta = DatasetMeta.load(root / 'dataset.yaml')
    meta.classes = []
    meta.save(root / 'dataset.yaml')
    with pytest.raises(DatasetError, match='lists no classes'):
        SegDataset(root, 'train', depth_encoding='metric')


@pytest.fixture(scope='module')
def trained(shifted, tmp_path_factory):
    out = tmp_path_factory.mktemp('ids_run') / 'run'
    cfg = load_config('tiny_cpu', tf.tiny_overrides(shifted, out, steps=8))
    return run_training(cfg)


def test_training_has_one_output_per_class_and_keeps_the_ids(trained):
    meta, state = load_checkpoint(trained, check_backend=False)
    assert meta.num_classes == 4 and state['classifier.weight'].shape[0] == 4
    assert meta.label_ids == [1, 2, 3, 4] and meta.class_ids == [1, 2, 3, 4]
    assert meta.class_names == tf.CLASS_NAMES and 'class_0' not in meta.class_names
    assert meta.palette == [tuple(c) for c in tf.COLOURS]
    # validation scored the dataset's four classes, not a phantom fifth
    assert meta.metrics['val_classes_in_gt'] == 4
    assert len(meta.metrics['val_iou']) == 4


def test_engine_publishes_the_dataset_ids(trained, shifted):
    engine = Engine.from_checkpoint(trained, device='cpu')
    reader = DatasetReader(shifted)
    record = reader.frames('val')[0]
    sample = reader.load(record.frame_id)
    pred = engine.predict(
        sample.rgb, sample.depth_mm, record.K, outputs=('labels', 'color', 'points')
    )
    assert pred.labels.dtype == np.uint8
    assert set(np.unique(pred.labels).tolist()) <= {1, 2, 3, 4}
    # colours come from the class of each id (output order), the cloud carries the ids
    palette = {1 + i: c for i, c in enumerate(tf.COLOURS)}
    for label_id in np.unique(pred.labels).tolist():
        pixels = pred.color[pred.labels == label_id]
        assert (pixels == palette[label_id]).all()
    assert set(np.unique(pred.points['label']).tolist()) <= {1, 2, 3, 4}


def test_node_pipeline_scores_in_the_id_space(trained, shifted):
    engine = Engine.from_checkpoint(trained, device='cpu')
    reader = DatasetReader(shifted)
    records = [r for r in reader.frames('val')]
    metrics = evaluate_engine(engine, reader, records)
    assert metrics.scored and len(metrics.iou) == 4 and 0.0 <= metrics.miou <= 1.0
    # the same by hand: predict each frame, count per id
    confusion = LabelIdConfusion([1, 2, 3, 4])
    for record in records:
        sample = reader.load(record.frame_id)
        labels = engine.predict(sample.rgb, sample.depth_mm, record.K).labels
        confusion.update(labels, sample.labels)
    assert confusion.compute().miou == metrics.miou


def test_label_id_confusion_by_hand():
    confusion = LabelIdConfusion([1, 2, 3])
    truth = np.array([[1, 1, 2, 2], [3, 255, 0, 3]], np.uint8)
    # id 9 is no class ("other"), the 255 and 0 pixels are no class in the truth: skipped
    pred = np.array([[1, 9, 2, 2], [1, 2, 3, 3]], np.uint8)
    confusion.update(pred, truth)
    m = confusion.compute()
    # rows (truth) 1: [1 hit, 1 other]; 2: [2 hits]; 3: [1 as class 1, 1 hit]
    assert confusion.matrix.tolist() == [
        [1, 0, 0, 1],
        [0, 2, 0, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 0],
    ]
    assert m.iou == [1 / 3, 1.0, 1 / 2] and m.in_gt == [True, True, True]
    assert math.isclose(m.miou, (1 / 3 + 1 + 1 / 2) / 3)
    assert m.pixels == 6 and math.isclose(m.pixel_acc, 4 / 6)


def _meta(**kw) -> CheckpointMeta:
    return CheckpointMeta(backend=tf.TINY, config={}, class_names=['a', 'b', 'c'], **kw)


def test_checkpoint_class_ids_round_trip_and_identity_left_out(tmp_path):
    model = tf.TinyNet(3, tf.TinyConfig())
    save_checkpoint(tmp_path / 'ids.safetensors', model, _meta(class_ids=[1, 5, 9]))
    meta, _ = load_checkpoint(tmp_path / 'ids.safetensors')
    assert meta.label_ids == [1, 5, 9]
    save_checkpoint(tmp_path / 'plain.safetensors', model, _meta(class_ids=[0, 1, 2]))
    meta, _ = load_checkpoint(tmp_path / 'plain.safetensors')
    assert meta.class_ids == [] and meta.label_ids == [0, 1, 2]
    assert 'class_ids' not in meta.to_dict()  # readers of the first checkpoints still read it


@pytest.mark.parametrize(
    'ids, fragment',
    [
        ([1, 2], 'one id per class'),
        ([1, 1, 2], 'distinct'),
        ([1, 2, 255], 'ignore index'),
        ([1, 2, 70000], 'distinct ids in 0..65535'),
    ],
)
def test_bad_class_ids_are_refused(tmp_path, ids, fragment):
    with pytest.raises(CheckpointError, match=fragment):
        save_checkpoint(
            tmp_path / 'x.safetensors', tf.TinyNet(3, tf.TinyConfig()), _meta(class_ids=ids)
        )


def test_engine_labels_become_uint16_above_255(tmp_path):
    model = tf.TinyNet(2, tf.TinyConfig())
    torch.nn.init.zeros_(model.classifier.weight)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0]))  # always the second output
    meta = CheckpointMeta(
        backend=tf.TINY,
        config={'depth_channels': 1},
        class_names=['low', 'high'],
        class_ids=[3, 300],
        ignore_index=65535,
    )
    save_checkpoint(tmp_path / 'wide.safetensors', model, meta)
    engine = Engine.from_checkpoint(tmp_path / 'wide.safetensors', device='cpu')
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    labels = engine.predict(np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32), K)
    assert labels.labels.dtype == np.uint16 and (labels.labels == 300).all()
