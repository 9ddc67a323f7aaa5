"""/diagnostics for the segmentation node: rates, pairing, drops, latency, model, memory.

``PipelineDiagnostics`` turns what it is given (the node's metrics, the pairer's counts, the
current engine, the CPU thread count, the camera frame, whether anybody wants an output) into
one DiagnosticStatus; the node owns the publisher and the timer. The level comes from
``core.node_health.assess``; this module only gathers its snapshot and formats the verdict.
The status is named after the node's fully qualified name and its hardware_id names the device
and the camera frame, so two nodes on one robot (``/cam1``, ``/cam2``) never read the same.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from rgbd_seg_ros.core.node_health import HealthLimits, HealthSnapshot, assess
from rgbd_seg_ros.core.node_metrics import NodeMetrics
from rgbd_seg_ros.ros.model_slot import describe

if TYPE_CHECKING:
    from rgbd_seg_ros.inference.engine import Engine


class PipelineDiagnostics:
    """One DiagnosticStatus per call, its level judged by the health rules."""

    def __init__(
        self,
        name: str,
        metrics: NodeMetrics,
        pairing: Callable[[], Mapping[str, int]],
        engine: Callable[[], Engine | None],
        cpu_threads: Callable[[], int],
        *,
        camera_frame: Callable[[], str] = lambda: '',
        outputs_wanted: Callable[[], bool] = lambda: True,
        limits: HealthLimits | None = None,
        inputs: Sequence[str] = ('rgb', 'depth', 'info'),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._metrics = metrics
        self._pairing = pairing
        self._engine = engine
        self._cpu_threads = cpu_threads
        self._camera_frame = camera_frame
        self._outputs_wanted = outputs_wanted
        self._limits = limits or HealthLimits()
        self._inputs = tuple(inputs)
        self._clock = clock
        self._started = clock()
        self._last_skips = 0

    def configure(self, limits: HealthLimits) -> None:
        """Judge with ``limits`` from the next status on (parameter changes)."""
        self._limits = limits

    def values(self) -> dict[str, str]:
        """Every reported figure as strings (the DiagnosticStatus key/value form)."""
        return self._values(self._engine(), self._clock())

    def _values(self, engine: Engine | None, now: float) -> dict[str, str]:
        values = self._metrics.key_values(self._pairing(), now_s=now)
        values['model'] = describe(engine)
        values['cpu_threads'] = str(self._cpu_threads())
        values.update(_memory(engine))
        return values

    def status(self) -> DiagnosticStatus:
        """The current status; skips count against the level once, in the period they
        happened."""
        engine = self._engine()
        now = self._clock()
        values = self._values(engine, now)
        skips = self._metrics.skipped_total()
        new_skips, self._last_skips = skips - self._last_skips, skips
        optional = ('depth',) if engine is not None and engine.runs_without_depth else ()
        snapshot = HealthSnapshot(
            now_s=now,
            started_s=self._started,
            inputs={
                name: self._metrics.stream(name, now)
                for name in self._inputs
                if name not in optional
            },
            optional_inputs={
                name: self._metrics.stream(name, now) for name in self._inputs if name in optional
            },
            paired=self._metrics.stream('paired', now),
            out=self._metrics.stream('out', now),
            new_skips=new_skips,
            model_loaded=engine is not None,
            outputs_wanted=self._outputs_wanted(),
        )
        health = assess(snapshot, self._limits)
        values.update(health.values)
        frame = self._camera_frame() or 'unknown'
        status = DiagnosticStatus(
            name=self._name,
            hardware_id=f'device={values.get("device", "none")} frame={frame}',
            level=bytes([int(health.level)]),
            message=health.message,
        )
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def array(self, stamp: Time) -> DiagnosticArray:
        """The /diagnostics message stamped ``stamp``."""
        array = DiagnosticArray()
        array.header.stamp = stamp
        array.status = [self.status()]
        return array


def health_limits(params: Mapping[str, Any]) -> HealthLimits:
    """The node's ``health.*`` parameters as the health rules' limits."""
    return HealthLimits(
        stale_after_s=float(params['health.stale_after']),
        min_input_hz=float(params['health.min_input_rate']),
        min_pairing_ratio=float(params['health.min_pairing_ratio']),
        min_output_ratio=float(params['health.min_output_ratio']),
    )


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
