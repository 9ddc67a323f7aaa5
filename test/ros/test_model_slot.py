"""ModelSlot on its own: a logger and a callback in, real engines loaded from real checkpoints."""

from __future__ import annotations

import json

import pytest
from rclpy.logging import get_logger

from rgbd_seg_ros.paths import default_model
from rgbd_seg_ros.ros.model_slot import (
    MODEL_PARAMS,
    ModelSlot,
    classes_message,
    describe,
)
from rgbd_seg_ros.ros.node_params import BY_NAME


def make_slot():
    loaded = []
    return ModelSlot(get_logger('test_model_slot'), on_loaded=loaded.append), loaded


def test_a_good_checkpoint_becomes_current_and_is_announced(model_params, tiny_checkpoint):
    slot, loaded = make_slot()
    assert slot.engine is None and slot.describe() == 'no model loaded'
    assert slot.swap(model_params) is None
    engine = slot.engine
    assert engine is not None and loaded == [engine]
    assert slot.generation == 1
    assert slot.describe() == describe(engine)
    assert slot.describe() == (
        f'_test_depth_bins (3 classes) from {tiny_checkpoint} on cpu fp32 (torch)'
    )
    doc = json.loads(classes_message(engine).data)
    assert doc['backend'] == '_test_depth_bins'
    assert doc['checkpoint'] == str(tiny_checkpoint)
    assert doc['ignore_index'] == engine.meta.ignore_index
    assert [c['name'] for c in doc['classes']] == ['class_0', 'class_1', 'class_2']
    assert [c['id'] for c in doc['classes']] == [0, 1, 2]
    assert all(len(c['color']) == 3 for c in doc['classes'])
    assert [tuple(c['color']) for c in doc['classes']] == [
        tuple(int(v) for v in row) for row in engine.meta.palette
    ]


def test_a_corrupt_checkpoint_is_refused_and_the_old_model_keeps_serving(
    model_params, tiny_checkpoint, tmp_path
):
    slot, loaded = make_slot()
    assert slot.swap(model_params) is None
    serving = slot.engine
    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(tiny_checkpoint.read_bytes()[:100])
    reason = slot.swap({**model_params, 'checkpoint': str(corrupt)})
    assert reason is not None and reason.startswith('refused checkpoint')
    assert 'corrupt.safetensors' in reason
    assert slot.engine is serving and slot.generation == 1 and loaded == [serving]


def test_the_last_frame_size_is_kept_and_the_next_model_warms_up_at_it(model_params):
    slot, _ = make_slot()
    assert slot.last_size is None
    slot.frame_seen(48, 64)
    assert slot.last_size == (48, 64)
    assert slot.swap({**model_params, 'resolution_policy': 'fixed'}) is None  # warmed at 48x64
    assert slot.engine.resolution_policy == 'fixed'
    assert slot.generation == 1


def test_an_explicit_bad_checkpoint_at_start_is_fatal(model_params, tmp_path):
    slot, loaded = make_slot()
    missing = tmp_path / 'missing.safetensors'
    with pytest.raises(RuntimeError, match=r'missing\.safetensors'):
        slot.load_initial({**model_params, 'checkpoint': str(missing)})
    assert slot.engine is None and loaded == []


@pytest.mark.skipif(default_model() is None, reason='no embedded default model')
def test_no_checkpoint_loads_the_embedded_default(model_params):
    slot, loaded = make_slot()
    slot.load_initial({**model_params, 'checkpoint': ''})
    assert slot.engine is not None and loaded == [slot.engine]
    assert slot.engine.source == str(default_model())


def test_model_params_are_node_parameters():
    assert set(BY_NAME) >= MODEL_PARAMS
