"""PipelineDiagnostics from real parts: metrics, a pairer, a model slot with a tiny model."""

from __future__ import annotations

import re

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.logging import get_logger

from rgbd_seg_ros.core.node_health import HealthLimits
from rgbd_seg_ros.core.node_metrics import NodeMetrics
from rgbd_seg_ros.core.pairing import ApproxTimePairer
from rgbd_seg_ros.ros.diagnostics import PipelineDiagnostics, health_limits
from rgbd_seg_ros.ros.model_slot import ModelSlot
from rgbd_seg_ros.ros.node_params import PARAMS


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_diagnostics(threads: list[int] | None = None, clock: FakeClock | None = None):
    metrics = NodeMetrics()
    pairer = ApproxTimePairer(slop_ns=10_000_000, queue_size=5)
    slot = ModelSlot(get_logger('test_diagnostics'))
    threads = threads if threads is not None else [3]
    diagnostics = PipelineDiagnostics(
        '/segmentation_node: pipeline',
        metrics,
        pairer.counters,
        lambda: slot.engine,
        lambda: threads[0],
        camera_frame=lambda: 'camera_color_optical_frame',
        outputs_wanted=lambda: False,
        clock=clock or FakeClock(),
    )
    return diagnostics, metrics, pairer, slot


def feed_inputs(metrics: NodeMetrics, clock: FakeClock, seconds: float = 1.0) -> None:
    """30 Hz on every input and on the pairs, the clock moving with them."""
    for _ in range(round(seconds * 30)):
        clock.now += 1 / 30
        for stream in ('rgb', 'depth', 'info', 'paired'):
            metrics.arrived(stream, clock.now)


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
    status_keys = [kv.key for kv in diagnostics.status().values]
    health_keys = ['silent_rgb_s', 'silent_depth_s', 'silent_info_s']
    assert status_keys == [*values, *health_keys]  # the health rules' figures come last
    assert values['paired'] == '2' and values['pairing_ratio'] == '1.000'
    assert values['skipped_bad_colour'] == '1'
    assert values['model'] == slot.describe()
    assert values['cpu_threads'] == '3'
    assert values['device'] == 'cpu'
    assert re.fullmatch(r'\d+', values['host_max_rss_mb'])


def test_level_warns_without_a_model_and_for_new_skips_only(model_params):
    threads = [2]
    clock = FakeClock()
    diagnostics, metrics, _, slot = make_diagnostics(threads, clock)
    feed_inputs(metrics, clock)
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.WARN and status.message == 'no model loaded'
    assert status.name == '/segmentation_node: pipeline'
    assert status.hardware_id == 'device=none frame=camera_color_optical_frame'
    assert slot.swap(model_params) is None
    feed_inputs(metrics, clock)
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.OK and status.message == 'running'
    assert status.hardware_id == 'device=cpu frame=camera_color_optical_frame'
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


def test_level_follows_the_health_rules_and_their_limits(model_params):
    clock = FakeClock()
    diagnostics, metrics, _, slot = make_diagnostics(clock=clock)
    assert slot.swap(model_params) is None
    clock.now += 3.5  # nothing arrived since the diagnostics started
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.ERROR
    assert 'no colour for 3.5 s (none since start)' in status.message
    assert 'no camera_info for 3.5 s' in status.message
    feed_inputs(metrics, clock)
    assert diagnostics.status().level == DiagnosticStatus.OK
    clock.now += 2.0
    assert diagnostics.status().level == DiagnosticStatus.OK
    diagnostics.configure(HealthLimits(stale_after_s=1.0))
    status = diagnostics.status()
    assert status.level == DiagnosticStatus.ERROR
    assert status.message.startswith('no colour for 2.0 s')
    values = {kv.key: kv.value for kv in status.values}
    assert values['silent_depth_s'] == '2.0'


def test_the_array_carries_one_stamped_status(model_params):
    diagnostics, _, _, slot = make_diagnostics()
    assert slot.swap(model_params) is None
    array = diagnostics.array(Time(sec=12, nanosec=34))
    assert (array.header.stamp.sec, array.header.stamp.nanosec) == (12, 34)
    assert len(array.status) == 1
    assert array.status[0].name == '/segmentation_node: pipeline'
    assert array.status[0].hardware_id == 'device=cpu frame=camera_color_optical_frame'


def test_health_parameters_default_to_the_rules_defaults():
    defaults = {spec.name: spec.default for spec in PARAMS}
    assert health_limits(defaults) == HealthLimits()
    changed = health_limits({**defaults, 'health.stale_after': 8, 'health.min_input_rate': 0})
    assert changed == HealthLimits(stale_after_s=8.0, min_input_hz=0.0)
