"""ModelSlot on its own: a logger and a callback in, real engines loaded from real checkpoints."""

from __future__ import annotations

import json
import threading
import time

import pytest
from checkpoint_corpus import good_checkpoint, malformed
from inference.tiny_backend import write_checkpoint
from rclpy.logging import get_logger

from rgbd_seg_ros.paths import default_model
from rgbd_seg_ros.ros.model_slot import (
    MODEL_PARAMS,
    ModelSlot,
    classes_message,
    describe,
    load_engine,
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
        f'_test_depth_bins (3 classes) from {tiny_checkpoint} on cpu fp32 (onnxruntime)'
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


# --- refusals, the loader thread, reload --------------------------------------------------------


def gated_loader(gate: threading.Event, started: threading.Event):
    """The real loader, held at a gate first: a load that takes as long as the test wants."""

    def load(path, params, warm_size):
        started.set()
        gate.wait()
        return load_engine(path, params, warm_size)

    return load


def test_every_malformed_checkpoint_is_refused_and_the_old_model_keeps_serving(
    model_params, tmp_path
):
    good = good_checkpoint(tmp_path / 'good.safetensors')
    (tmp_path / 'bad').mkdir()
    cases = malformed(tmp_path / 'bad', good)
    slot, loaded = make_slot()
    assert slot.swap(model_params) is None
    serving = slot.engine
    for case, path in cases.items():
        reason = slot.swap({**model_params, 'checkpoint': str(path)})
        assert reason is not None and reason.startswith(f'refused checkpoint {path}'), case
        assert slot.engine is serving and not slot.loading, case
    assert slot.generation == 1 and loaded == [serving]
    assert slot.served_params['checkpoint'] == model_params['checkpoint']
    assert not (tmp_path / 'bad' / 'payload_ran').exists()


def test_any_exception_of_the_loader_is_a_refusal(model_params):
    def explode(path, params, warm_size):
        raise KeyError('something nobody expected')

    slot = ModelSlot(get_logger('test_model_slot'), load=explode)
    reason = slot.swap(model_params)
    assert reason == (
        f"refused checkpoint {model_params['checkpoint']}: KeyError: 'something nobody expected'"
    )
    assert slot.engine is None and not slot.loading


def test_a_load_past_the_timeout_is_abandoned_and_blocks_no_one(model_params, tiny_checkpoint):
    gate, started = threading.Event(), threading.Event()
    slot = ModelSlot(
        get_logger('test_model_slot'), load=gated_loader(gate, started), timeout_s=0.2
    )
    reason = slot.swap(model_params)
    assert reason is not None and 'not loaded within 0.2 s' in reason
    assert started.is_set() and not gate.is_set() and slot.loading
    # While the abandoned load still runs, another is refused at once, not queued.
    reason = slot.swap(model_params)
    assert reason is not None and 'is still running' in reason
    assert slot.reload() == 'nothing to reload: no model has been loaded'
    gate.set()
    wait_until(lambda: not slot.loading)
    assert slot.engine is None and slot.generation == 0  # its result was dropped
    slot = ModelSlot(get_logger('test_model_slot'), load=gated_loader(gate, threading.Event()))
    assert slot.swap(model_params) is None and slot.engine.source == str(tiny_checkpoint)


def test_close_ends_the_wait_for_a_load_that_never_ends(model_params):
    gate, started = threading.Event(), threading.Event()
    slot = ModelSlot(get_logger('test_model_slot'), load=gated_loader(gate, started))
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(slot.swap(model_params)))
    waiter.start()
    assert started.wait(30)
    slot.close()
    waiter.join(30)
    assert not waiter.is_alive() and not gate.is_set()  # returned while the load still runs
    assert answers[0] is not None and 'shutting down' in answers[0]
    assert 'shutting down' in slot.swap(model_params)
    gate.set()  # let the daemon thread end; its engine is dropped
    wait_until(lambda: not slot.loading)
    assert slot.engine is None


def test_reload_loads_what_the_last_successful_swap_loaded(model_params, tmp_path):
    gate, started = threading.Event(), threading.Event()
    gate.set()
    slot = ModelSlot(get_logger('test_model_slot'), load=gated_loader(gate, started))
    first = model_params['checkpoint']
    assert slot.swap(model_params) is None
    # A failed set does not become what reload loads.
    reason = slot.swap({**model_params, 'checkpoint': str(tmp_path / 'missing.safetensors')})
    assert reason is not None
    assert slot.reload() is None and slot.engine.source == first and slot.generation == 2
    # A set in flight is not reloaded either: reload is refused until it ends, then reloads it.
    other = tmp_path / 'other.safetensors'
    write_checkpoint(other, num_classes=4)
    gate.clear()
    started.clear()
    answers = []
    setter = threading.Thread(
        target=lambda: answers.append(slot.swap({**model_params, 'checkpoint': str(other)}))
    )
    setter.start()
    assert started.wait(30)
    reason = slot.reload()
    assert reason is not None and 'is still running' in reason
    assert slot.engine.source == first
    gate.set()
    setter.join(60)
    assert answers == [None] and slot.engine.source == str(other)
    assert slot.reload() is None and slot.engine.source == str(other)
    assert slot.served_params['checkpoint'] == str(other) and slot.generation == 4


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'condition not reached'
        time.sleep(0.01)


def test_a_fixed_input_size_beyond_the_bounds_is_refused(model_params):
    slot, _ = make_slot()
    reason = slot.swap(
        {**model_params, 'resolution_policy': 'fixed', 'input_height': 3000, 'input_width': 4000}
    )
    assert reason is not None and 'fixed input size 3000x4000' in reason
    assert slot.engine is None
