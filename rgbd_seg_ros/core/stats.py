"""Rolling statistics for the node's diagnostics: rates, latency percentiles, counters.

Kept free of ROS so the arithmetic can be tested directly; the node only formats the numbers.
All classes are thread-safe because subscription callbacks and the worker update them
concurrently.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np


class RateMeter:
    """Event rate (Hz) over a sliding window of the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now_s: float) -> None:
        """Record one event at time ``now_s`` (monotonic seconds)."""
        with self._lock:
            self._times.append(now_s)
            self._expire(now_s)

    def rate(self, now_s: float) -> float:
        """Events per second in the window ending at ``now_s``."""
        with self._lock:
            self._expire(now_s)
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _expire(self, now_s: float) -> None:
        while self._times and self._times[0] < now_s - self.window_s:
            self._times.popleft()


class LatencyWindow:
    """The last ``size`` samples (seconds) with percentiles in milliseconds."""

    def __init__(self, size: int = 300) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one sample; the oldest leaves once ``size`` are held."""
        with self._lock:
            self._samples.append(seconds)

    def percentiles_ms(self, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
        """``{'p50': ..., 'p95': ...}`` in ms; empty when there are no samples."""
        with self._lock:
            if not self._samples:
                return {}
            values = np.percentile(np.fromiter(self._samples, float), qs) * 1000.0
        return {f'p{q:g}': float(v) for q, v in zip(qs, values, strict=True)}

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


class CounterSet:
    """Named monotonic counters (drops by reason, skips by cause)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> int:
        """Increase ``name``; return the new total (used to throttle warnings)."""
        with self._lock:
            self._counts[name] += amount
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self, prefix: str) -> int:
        """Sum of the counters whose name starts with ``prefix`` (all skips, all drops)."""
        with self._lock:
            return sum(v for k, v in self._counts.items() if k.startswith(prefix))
