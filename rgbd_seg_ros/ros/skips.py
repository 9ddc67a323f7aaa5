"""How the node reports a frame it refuses: counted by reason, warned about without flooding.

Every part that meets bad input (the subscription callbacks, the worker) calls one
``SkipReporter``; the reason is the counter's key in the node's metrics. The warning is
throttled per reason, each with its own clock: a throttle shared by every reason (rclpy's own
``throttle_duration_sec`` keys it by the line that logs) lets one bad stream at camera rate
hide every other problem for as long as it lasts. A warning after a quiet spell says how many
of that reason went unlogged meanwhile; the counters hold every one.

Besides skips, a frame that is processed but deserves a word (colour and depth from different
frames, a frame scaled down to the input bound) is *noted*: counted under its own name, warned
about with the same per-reason throttle, and not skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from rgbd_seg_ros.core.node_metrics import NodeMetrics

THROTTLE_S = 5.0


class WarnLog(Protocol):
    """An rclpy logger, or anything with its ``warning``."""

    def warning(self, message: str, **kwargs: Any) -> Any: ...


class InputReport(Protocol):
    """What the worker is given to report input it skips or processes with a note."""

    def __call__(self, reason: str, detail: str) -> None: ...

    def note(self, name: str, detail: str) -> None: ...


class PerKeyThrottle:
    """Allows one event per key every ``period_s``; counts the events it held back."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def due(self, key: str) -> int | None:
        """None while ``key`` is throttled; else how many were held back since its last one."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)


class SkipReporter:
    """``reporter(reason, detail)``: count ``skipped_<reason>`` and warn, throttled per reason."""

    def __init__(
        self,
        metrics: NodeMetrics,
        log: WarnLog,
        throttle: PerKeyThrottle | None = None,
    ) -> None:
        self._metrics = metrics
        self._log = log
        self._throttle = throttle or PerKeyThrottle(THROTTLE_S)

    def __call__(self, reason: str, detail: str) -> None:
        total = self._metrics.skip(reason)
        self._warn(reason, f'skipping frame ({reason}, {total} so far): {detail}')

    def note(self, name: str, detail: str) -> None:
        """Count ``name`` for a frame that is still processed, and warn, throttled per name."""
        total = self._metrics.count(name)
        self._warn(name, f'{name} ({total} so far): {detail}')

    def _warn(self, key: str, message: str) -> None:
        held = self._throttle.due(key)
        if held is None:
            return
        if held:
            message += f' [{held} more of this kind since the last warning]'
        self._log.warning(message)
