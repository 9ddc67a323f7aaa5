"""Every figure the segmentation node reports, owned in one place.

The node's parts record into one ``NodeMetrics`` (subscription callbacks their arrivals, the
worker each segmented frame's moments, everyone their skips and drops) and /diagnostics
publishes ``key_values()``. A figure is declared, derived and formatted here only, so adding
one touches this file; the parts keep recording raw moments and reasons, not derived numbers.

Free of ROS so the arithmetic is tested directly; thread-safe because the callbacks, the
worker and the diagnostics timer use it concurrently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from rgbd_seg_ros.core.node_health import StreamState
from rgbd_seg_ros.core.stats import CounterSet, LatencyWindow, RateMeter

# Event rates, reported as rate_<name>_hz: the three inputs, paired triples, segmented frames.
RATES: tuple[str, ...] = ('rgb', 'depth', 'info', 'paired', 'out')

# Latency windows, reported as <name>_p50_ms / _p95_ms / _p99_ms once they hold a sample.
# latency: camera stamp -> last output published; model_time: the forward pass; overhead:
# latency minus the forward pass; work_overhead: the same from the worker's pick-up;
# labels_overhead: camera stamp -> labels published, minus the forward pass; pickup_age:
# camera stamp -> pick-up (transport, pairing, waiting for the worker); prepare_time: pick-up
# -> forward start (deserialise, decode, upload, preprocess); cloud_time: the point cloud.
WINDOWS: tuple[str, ...] = (
    'latency',
    'model_time',
    'overhead',
    'work_overhead',
    'labels_overhead',
    'pickup_age',
    'prepare_time',
    'cloud_time',
)

SKIPPED = 'skipped_'
DROPPED = 'dropped_'


@dataclass(frozen=True)
class FrameTiming:
    """When one segmented frame passed each step, as integer nanoseconds on the clock of the
    camera stamps (the node's ROS clock), plus the engine's own timings in seconds."""

    stamp_ns: int  # camera stamp of the colour image
    picked_up_ns: int  # the worker took the triple
    decoded_ns: int  # the triple was deserialised, decoded and checked
    done_ns: int  # the last output was published
    labels_ns: int | None  # the labels were published (None: nobody wanted them)
    forward_s: float
    preprocess_s: float
    cloud_s: float | None = None  # None: no cloud was built


class NodeMetrics:
    """Rates, counters and latency windows of one node; see the module docstring."""

    def __init__(self, window_size: int = 300, rate_window_s: float = 5.0) -> None:
        self._rates = {name: RateMeter(rate_window_s) for name in RATES}
        self._windows = {name: LatencyWindow(window_size) for name in WINDOWS}
        self._counters = CounterSet()
        self._frames_out = 0
        self._seen: dict[str, tuple[float, float]] = {}  # stream -> (first, last) event
        self._lock = threading.Lock()

    # ---- recording ----------------------------------------------------------------------------
    def arrived(self, stream: str, now_s: float) -> None:
        """One event on ``stream`` (an input, or 'paired') at monotonic time ``now_s``."""
        self._rates[stream].tick(now_s)
        self._saw(stream, now_s)

    def count(self, name: str, amount: int = 1) -> int:
        """Increase counter ``name``; return its new total."""
        return self._counters.add(name, amount)

    def skip(self, reason: str) -> int:
        """A frame refused for ``reason`` (bad input); return how many so far."""
        return self._counters.add(SKIPPED + reason)

    def drop(self, reason: str) -> int:
        """A good frame not segmented for ``reason`` (superseded, no model, ...)."""
        return self._counters.add(DROPPED + reason)

    def record_frame(self, timing: FrameTiming, now_s: float | None = None) -> None:
        """One frame segmented and published: its latency split, the output rate and count."""
        forward = timing.forward_s

        def seconds(start_ns: int, end_ns: int) -> float:
            return (end_ns - start_ns) / 1e9

        latency = seconds(timing.stamp_ns, timing.done_ns)
        self._windows['model_time'].add(forward)
        if timing.cloud_s is not None:
            self._windows['cloud_time'].add(timing.cloud_s)
        self._windows['latency'].add(latency)
        self._windows['overhead'].add(latency - forward)
        if timing.labels_ns is not None:
            self._windows['labels_overhead'].add(
                seconds(timing.stamp_ns, timing.labels_ns) - forward
            )
        self._windows['work_overhead'].add(seconds(timing.picked_up_ns, timing.done_ns) - forward)
        self._windows['pickup_age'].add(seconds(timing.stamp_ns, timing.picked_up_ns))
        self._windows['prepare_time'].add(
            seconds(timing.picked_up_ns, timing.decoded_ns) + timing.preprocess_s
        )
        now = time.monotonic() if now_s is None else now_s
        self._rates['out'].tick(now)
        self._saw('out', now)
        with self._lock:
            self._frames_out += 1

    def _saw(self, stream: str, now_s: float) -> None:
        with self._lock:
            first = self._seen.get(stream, (now_s, now_s))[0]
            self._seen[stream] = (first, now_s)

    # ---- reading ------------------------------------------------------------------------------
    def rate(self, name: str, now_s: float) -> float:
        """Events per second of ``name`` over the rate window ending at ``now_s``."""
        return self._rates[name].rate(now_s)

    def stream(self, name: str, now_s: float) -> StreamState:
        """First and last event of ``name`` and its rate at ``now_s`` (the health rules' view)."""
        with self._lock:
            seen = self._seen.get(name)
        rate = self._rates[name].rate(now_s)
        return StreamState(None, None, rate) if seen is None else StreamState(*seen, rate)

    @property
    def frames_out(self) -> int:
        """Frames segmented and published since start."""
        with self._lock:
            return self._frames_out

    def counts(self) -> dict[str, int]:
        """Every counter (skips, drops, waits) by name."""
        return self._counters.snapshot()

    def skipped_total(self) -> int:
        """Frames skipped for any reason since start."""
        return self._counters.total(SKIPPED)

    def samples(self, window: str) -> int:
        """How many samples latency window ``window`` holds."""
        return len(self._windows[window])

    def key_values(
        self, pairing: Mapping[str, int] | None = None, now_s: float | None = None
    ) -> dict[str, str]:
        """Every figure as the strings /diagnostics publishes, merged with the pairer's counts.

        Keys: rate_<stream>_hz, pairing_ratio, every counter (sorted), frames_out, and
        <window>_p50/p95/p99_ms for each window holding a sample.
        """
        now = time.monotonic() if now_s is None else now_s
        pairs = dict(pairing or {})
        values = {
            f'rate_{name}_hz': f'{meter.rate(now):.2f}' for name, meter in self._rates.items()
        }
        received_rgb = pairs.get('received_rgb', 0)
        values['pairing_ratio'] = (
            f'{pairs.get("paired", 0) / received_rgb:.3f}' if received_rgb else '0.000'
        )
        counts = {**pairs, **self.counts()}
        values.update({k: str(v) for k, v in sorted(counts.items())})
        values['frames_out'] = str(self.frames_out)
        for name, window in self._windows.items():
            for key, value in window.percentiles_ms().items():
                values[f'{name}_{key}_ms'] = f'{value:.1f}'
        return values
