"""/diagnostics for the segmentation node: rates, pairing, drops, latency, model, memory.

``PipelineDiagnostics`` turns what it is given (the node's metrics, the pairer's counts, the
current engine, the CPU thread count) into one DiagnosticStatus; the node owns the publisher
and the timer. The level is decided in ``_level`` alone, where health rules can grow.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from rgbd_seg_ros.core.node_metrics import NodeMetrics
from rgbd_seg_ros.ros.model_slot import describe

if TYPE_CHECKING:
    from rgbd_seg_ros.inference.engine import Engine


class PipelineDiagnostics:
    """One DiagnosticStatus per call; WARN while frames are being skipped or no model runs."""

    def __init__(
        self,
        name: str,
        metrics: NodeMetrics,
        pairing: Callable[[], Mapping[str, int]],
        engine: Callable[[], Engine | None],
        cpu_threads: Callable[[], int],
    ) -> None:
        self._name = name
        self._metrics = metrics
        self._pairing = pairing
        self._engine = engine
        self._cpu_threads = cpu_threads
        self._last_skips = 0

    def values(self) -> dict[str, str]:
        """Every reported figure as strings (the DiagnosticStatus key/value form)."""
        return self._values(self._engine())

    def _values(self, engine: Engine | None) -> dict[str, str]:
        values = self._metrics.key_values(self._pairing())
        values['model'] = describe(engine)
        values['cpu_threads'] = str(self._cpu_threads())
        values.update(_memory(engine))
        return values

    def status(self) -> DiagnosticStatus:
        """The current status; skips are reported once, in the period they happened."""
        engine = self._engine()
        values = self._values(engine)
        status = DiagnosticStatus(name=self._name, hardware_id=values.get('device', 'cpu'))
        status.level, status.message = self._level(engine)
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def array(self, stamp: Time) -> DiagnosticArray:
        """The /diagnostics message stamped ``stamp``."""
        array = DiagnosticArray()
        array.header.stamp = stamp
        array.status = [self.status()]
        return array

    def _level(self, engine: Engine | None) -> tuple[bytes, str]:
        skips = self._metrics.skipped_total()
        new_skips, self._last_skips = skips - self._last_skips, skips
        if engine is None:
            return DiagnosticStatus.WARN, 'no model loaded'
        if new_skips > 0:
            return DiagnosticStatus.WARN, f'{new_skips} bad frame(s) skipped'
        return DiagnosticStatus.OK, 'running'


def _memory(engine: Engine | None) -> dict[str, str]:
    out = {'host_max_rss_mb': f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}'}
    if engine is not None:
        out['device'] = str(engine.device)
        if engine.device.type == 'cuda':
            import torch

            out['cuda_allocated_mb'] = f'{torch.cuda.memory_allocated(engine.device) / 2**20:.0f}'
            out['cuda_max_allocated_mb'] = (
                f'{torch.cuda.max_memory_allocated(engine.device) / 2**20:.0f}'
            )
    return out
