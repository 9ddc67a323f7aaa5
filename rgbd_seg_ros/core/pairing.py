"""Streaming approximate-time pairing of colour, depth and camera_info.

The node must never queue work behind the model: it wants the *newest* complete triple and
nothing else. ``message_filters.ApproximateTimeSynchronizer`` is not available from the ROS
wheels and emits every match in order, so this is a small policy of our own:

* each stream keeps at most ``queue_size`` messages;
* after every arrival, the newest triple whose stamps lie within ``slop`` of each other is
  emitted, and everything at or before it is discarded;
* messages that leave a queue without ever being part of a triple are counted as dropped,
  with a reason, so diagnostics can tell a slow camera_info from a too-tight slop;
* a stamp that jumps backwards by more than ``jump_back_ns`` (a bag loop, a restarted driver)
  resets the queues instead of waiting forever for stamps that will never come.

Stamps are integers in nanoseconds; payloads are opaque.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar('T')

STREAMS: tuple[str, ...] = ('rgb', 'depth', 'info')


@dataclass(frozen=True)
class Stamped(Generic[T]):
    """One message with its stamp in nanoseconds."""

    stamp_ns: int
    payload: T


@dataclass(frozen=True)
class Triple:
    """A matched colour/depth/camera_info set; ``skew_ns`` is max minus min stamp."""

    rgb: Stamped[Any]
    depth: Stamped[Any]
    info: Stamped[Any]

    @property
    def skew_ns(self) -> int:
        stamps = (self.rgb.stamp_ns, self.depth.stamp_ns, self.info.stamp_ns)
        return max(stamps) - min(stamps)


class ApproxTimePairer:
    """Thread-safe newest-triple matcher; see the module docstring for the policy."""

    def __init__(
        self, slop_ns: int, queue_size: int = 5, jump_back_ns: int = 1_000_000_000
    ) -> None:
        if slop_ns < 0 or queue_size < 1:
            raise ValueError('slop must be >= 0 and queue_size >= 1')
        self.slop_ns = slop_ns
        self.queue_size = queue_size
        self.jump_back_ns = jump_back_ns
        self._streams = STREAMS
        self._queues: dict[str, deque[Stamped[Any]]] = {s: deque() for s in self._streams}
        self._last_stamp: dict[str, int] = {}
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.paired = 0
        self.time_jumps = 0

    def configure(self, slop_ns: int, queue_size: int) -> None:
        """Change slop/queue size at run time (parameter updates)."""
        if slop_ns < 0 or queue_size < 1:
            raise ValueError('slop must be >= 0 and queue_size >= 1')
        with self._lock:
            self.slop_ns, self.queue_size = slop_ns, queue_size
            for name, queue in self._queues.items():
                self._trim(name, queue)

    def add(self, stream: str, stamp_ns: int, payload: Any) -> Triple | None:
        """Insert a message; return the newest complete triple if this arrival made one."""
        if stream not in self._queues:
            raise KeyError(f'unknown stream {stream!r}; expected one of {self._streams}')
        with self._lock:
            self.received[stream] += 1
            last = self._last_stamp.get(stream)
            if last is not None and stamp_ns < last - self.jump_back_ns:
                self.time_jumps += 1
                self._reset('time_jump')
            self._last_stamp[stream] = stamp_ns
            queue = self._queues[stream]
            if queue and stamp_ns < queue[-1].stamp_ns:
                # Out of order within one stream: keep the queue sorted.
                items = sorted([*queue, Stamped(stamp_ns, payload)], key=lambda m: m.stamp_ns)
                queue.clear()
                queue.extend(items)
            else:
                queue.append(Stamped(stamp_ns, payload))
            self._trim(stream, queue)
            triple = self._match()
            if triple is not None:
                self._consume(triple)
                self.paired += 1
            return triple

    def pair_without_depth(self) -> Triple | None:
        """The newest colour/camera_info pair within ``slop``, with no depth, or None.

        For a model that runs without depth while depth has stopped arriving: its ``depth`` is
        a Stamped with the colour stamp and payload None. Only colour and camera_info at or
        before the pair are consumed.
        """
        with self._lock:
            rgb_queue, info_queue = self._queues['rgb'], self._queues['info']
            if not rgb_queue or not info_queue:
                return None
            for rgb in reversed(rgb_queue):
                info = self._nearest(info_queue, rgb.stamp_ns)
                if info is not None:
                    pair = Triple(rgb, Stamped(rgb.stamp_ns, None), info)
                    self._consume(pair, ('rgb', 'info'))
                    return pair
            return None

    def counters(self) -> dict[str, int]:
        """Snapshot of received/paired/dropped counts for diagnostics."""
        with self._lock:
            out = {f'received_{k}': v for k, v in self.received.items()}
            out.update({f'dropped_{k}': v for k, v in self.dropped.items()})
            out['paired'] = self.paired
            out['time_jumps'] = self.time_jumps
            return out

    def _trim(self, stream: str, queue: deque[Stamped[Any]]) -> None:
        while len(queue) > self.queue_size:
            queue.popleft()
            self.dropped[f'unpaired_{stream}'] += 1

    def _reset(self, reason: str) -> None:
        for queue in self._queues.values():
            self.dropped[reason] += len(queue)
            queue.clear()
        self._last_stamp.clear()

    def _match(self) -> Triple | None:
        if any(not q for q in self._queues.values()):
            return None
        for rgb in reversed(self._queues['rgb']):
            depth = self._nearest(self._queues['depth'], rgb.stamp_ns)
            info = self._nearest(self._queues['info'], rgb.stamp_ns)
            if depth is None or info is None:
                continue
            triple = Triple(rgb, depth, info)
            if triple.skew_ns <= self.slop_ns:
                return triple
        return None

    def _nearest(self, queue: deque[Stamped[Any]], stamp_ns: int) -> Stamped[Any] | None:
        best = min(queue, key=lambda m: abs(m.stamp_ns - stamp_ns))
        return best if abs(best.stamp_ns - stamp_ns) <= self.slop_ns else None

    def _consume(self, triple: Triple, streams: tuple[str, ...] = STREAMS) -> None:
        used = {'rgb': triple.rgb, 'depth': triple.depth, 'info': triple.info}
        for name in streams:
            queue = self._queues[name]
            cut = used[name].stamp_ns
            while queue and queue[0].stamp_ns <= cut:
                message = queue.popleft()
                if message is not used[name]:
                    self.dropped[f'unpaired_{name}'] += 1
