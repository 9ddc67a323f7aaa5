"""How the node reports a frame it refuses: counted by reason, warned about without flooding.

Every part that meets bad input (the subscription callbacks, the worker) calls one
``SkipReporter``; the reason is the counter's key in the node's metrics, so a throttle per
reason or a health rule can be added here without touching the callers.
"""

from __future__ import annotations

from typing import Any, Protocol

from rgbd_seg_ros.core.node_metrics import NodeMetrics

THROTTLE_S = 5.0


class WarnLog(Protocol):
    """An rclpy logger (its ``warning`` takes ``throttle_duration_sec``)."""

    def warning(self, message: str, **kwargs: Any) -> Any: ...


class SkipReporter:
    """``reporter(reason, detail)``: count ``skipped_<reason>`` and warn, throttled."""

    def __init__(self, metrics: NodeMetrics, log: WarnLog) -> None:
        self._metrics = metrics
        self._log = log

    def __call__(self, reason: str, detail: str) -> None:
        total = self._metrics.skip(reason)
        self._log.warning(
            f'skipping frame ({reason}, {total} so far): {detail}',
            throttle_duration_sec=THROTTLE_S,
        )
