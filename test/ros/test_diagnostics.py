"""PipelineDiagnostics from real parts: metrics, a pairer, a model slot with a tiny model."""

from __future__ import annotations

import re

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.logging import get_logger

from rgbd_seg_ros.core.node_metrics import NodeMetrics
from rgbd_seg_ros.core.pairing import ApproxTimePairer
from rgbd_seg_ros.ros.diagnostics import PipelineDiagnostics
from rgbd_seg_ros.ros.model_slot import ModelSlot


def make_diagnostics(threads: list[int] | None = None):
    metrics = NodeMetrics()
    pairer = ApproxTimePairer(slop_ns=10_000_000, queue_size=5)
    slot = ModelSlot(get_logger('test_diagnostics'))
    threads = threads if threads is not None else [3]
    diagnostics = PipelineDiagnostics(
        'segmentation_node: pipeline',
        metrics,
        pairer.counters,
        lambda: slot.engine,
        lambda: threads[0],
    )
    return diagnostics, metrics, pairer, slot


def test_values_are_the_metrics_plus_model_threads_and_memory(model_params):
    diagnostics, metrics, pairer, slot = make_diagnostics()
    for stamp in (1_000_000_000, 1_033_000_000):
        for stream in ('rgb', 'depth', 'info'):
            pairer.add(stream, stamp, None)
    metrics.skip('bad_colour')
    values = diagnostics.values()
    assert values['model'] == 'no model loaded'
    assert 'device' not in values
    assert slot.swap(model_params) is None
    values = diagnostics.values()
    expected = metrics.key_values(pairer.counters())
    for key, value in expected.items():
        if not key.startswith('rate_'):  # rates move with the clock
            assert values[key] == value, key
    assert list(values)[: len(expected)] == list(expected)
    assert list(values)[len(expected) :] == ['model', 'cpu_threads', 'host_max_rss_mb', 'device']
    assert values['paired'] == '2' and values['pairing_ratio'] == '1.000'
    assert values['skipped_bad_colour'] == '1'
    assert values['model'] == slot.describe()
    assert values['cpu_threads'] == '3'
    assert values['device'] == 'cpu'
    assert re.fullmatch(r'\d+', values['host_max_rss_mb'])


def test_level_warns_without_a_model_and_for_new_skips_only(model_params):
    threads = [2]
    diagnostics, metrics, _, slot = make_diagnostics(threads)
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.WARN and status.message == 'no model loaded'
    assert status.name == 'segmentation_node: pipeline' and status.hardware_id == 'cpu'
    assert slot.swap(model_params) is None
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.OK and status.message == 'running'
    metrics.skip('bad_depth')
    metrics.skip('no_valid_depth')
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.WARN
    assert status.message == '2 bad frame(s) skipped'
    assert diagnostics.status().level == DiagnosticStatus.OK
    threads[0] = 5
    values = {kv.key: kv.value for kv in diagnostics.status().values}
    assert values['cpu_threads'] == '5'
    assert values['skipped_bad_depth'] == '1'


def test_the_array_carries_one_stamped_status(model_params):
    diagnostics, _, _, slot = make_diagnostics()
    assert slot.swap(model_params) is None
    array = diagnostics.array(Time(sec=12, nanosec=34))
    assert (array.header.stamp.sec, array.header.stamp.nanosec) == (12, 34)
    assert len(array.status) == 1
    assert array.status[0].name == 'segmentation_node: pipeline'
    assert array.status[0].hardware_id == 'cpu'
