"""/diagnostics for the segmentation node: rates, pairing, drops, latency, model, memory."""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

if TYPE_CHECKING:
    from rgbd_seg_ros.ros.segmentation_node import SegmentationNode


class DiagnosticsPublisher:
    """Publishes one DiagnosticStatus per period; WARN while frames are being skipped."""

    def __init__(self, node: SegmentationNode, period_s: float) -> None:
        self._node = node
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._last_skips = 0
        node.create_timer(period_s, self._publish, callback_group=MutuallyExclusiveCallbackGroup())

    def values(self) -> dict[str, str]:
        """Every reported figure as strings (the DiagnosticStatus key/value form)."""
        node = self._node
        now = time.monotonic()
        values: dict[str, str] = {}
        for name, meter in node.rates.items():
            values[f'rate_{name}_hz'] = f'{meter.rate(now):.2f}'
        pairs = node.pairer.counters()
        received_rgb = pairs.get('received_rgb', 0)
        values['pairing_ratio'] = (
            f'{pairs.get("paired", 0) / received_rgb:.3f}' if received_rgb else '0.000'
        )
        counts = {**pairs, **node.counters.snapshot()}
        values.update({k: str(v) for k, v in sorted(counts.items())})
        values['frames_out'] = str(node.worker.processed)
        for key, value in node.latency.percentiles_ms().items():
            values[f'latency_{key}_ms'] = f'{value:.1f}'
        for name, window in (
            ('model_time', node.model_time),
            ('overhead', node.overhead),
            ('work_overhead', node.work_overhead),
            ('labels_overhead', node.labels_overhead),
            ('pickup_age', node.pickup_age),
            ('prepare_time', node.prepare_time),
            ('cloud_time', node.cloud_time),
        ):
            for key, value in window.percentiles_ms().items():
                values[f'{name}_{key}_ms'] = f'{value:.1f}'
        values['model'] = node.models.describe()
        values['cpu_threads'] = str(node.cpu_threads)
        values.update(_memory(node))
        return values

    def _publish(self) -> None:
        node = self._node
        values = self.values()
        skips = sum(v for k, v in node.counters.snapshot().items() if k.startswith('skipped_'))
        status = DiagnosticStatus(
            name=f'{node.get_name()}: pipeline', hardware_id=values.get('device', 'cpu')
        )
        if node.models.engine is None:
            status.level, status.message = DiagnosticStatus.WARN, 'no model loaded'
        elif skips > self._last_skips:
            status.level = DiagnosticStatus.WARN
            status.message = f'{skips - self._last_skips} bad frame(s) skipped'
        else:
            status.level, status.message = DiagnosticStatus.OK, 'running'
        self._last_skips = skips
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = node.get_clock().now().to_msg()
        array.status = [status]
        self._pub.publish(array)


def _memory(node: SegmentationNode) -> dict[str, str]:
    out = {'host_max_rss_mb': f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}'}
    engine = node.models.engine
    if engine is not None:
        out['device'] = str(engine.device)
        if engine.device.type == 'cuda':
            import torch

            out['cuda_allocated_mb'] = f'{torch.cuda.memory_allocated(engine.device) / 2**20:.0f}'
            out['cuda_max_allocated_mb'] = (
                f'{torch.cuda.max_memory_allocated(engine.device) / 2**20:.0f}'
            )
    return out
