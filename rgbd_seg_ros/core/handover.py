"""The hand-over between the pairing callbacks and the segmenting worker: one slot, newest wins.

Nothing ever queues behind the model: a triple the worker has not taken yet is replaced by a
newer one (counted as dropped ``superseded``). When the model is slower than the camera, the
worker may also wait a little for the frame after a stale one (see ``FrameHandover.take``).
Free of ROS so the policy is tested with plain objects.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

from rgbd_seg_ros.core.node_metrics import NodeMetrics

T = TypeVar('T')


class FrameHandover(Generic[T]):
    """A slot of size one, read by a single consumer; ``close`` releases it."""

    def __init__(self, metrics: NodeMetrics, wait_for_fresh: bool = True) -> None:
        self._metrics = metrics
        # Read once per frame by the consumer; the node sets it from wait_for_fresh_frame.
        self.wait_for_fresh = wait_for_fresh
        self._pending: T | None = None
        self._pending_at = 0.0  # monotonic arrival time of the pending item
        self._submitted = 0
        self._closed = False
        self._cond = threading.Condition()

    def submit(self, item: T, arrived_at: float | None = None) -> None:
        """Offer the newest item (arrived at monotonic ``arrived_at``, default now); an older
        one not taken yet is dropped, never queued."""
        with self._cond:
            if self._pending is not None:
                self._metrics.drop('superseded')
            self._pending = item
            self._pending_at = time.monotonic() if arrived_at is None else arrived_at
            self._submitted += 1
            self._cond.notify()

    def take(self) -> T | None:
        """Block until an item is pending and return it; None once the slot is closed."""
        with self._cond:
            while self._pending is None and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if self.wait_for_fresh:
                self._await_fresher()
            item, self._pending = self._pending, None
            return item

    def close(self) -> None:
        """Wake the consumer for good; a pending item is not handed out any more."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _await_fresher(self) -> None:
        """With the lock held: wait for the item after a stale pending one.

        Processing a frame of age ``a`` now, versus waiting ``P - a`` for the next one (camera
        period ``P``, from the paired rate), changes the mean age of the newest published result
        by ``P/2 - 3a/2`` per cycle (the next output is ``a`` fresher, the cycle ``P - a``
        longer): waiting wins exactly when ``a > P/3``. The wait is bounded (1.5 periods after
        the pending frame arrived) so the last frame of a recording is never lost.
        """
        now = time.monotonic()
        rate = self._metrics.rate('paired', now)
        if rate <= 0.0:
            return
        period = 1.0 / rate
        if now - self._pending_at <= period / 3.0:
            return
        seen, deadline = self._submitted, self._pending_at + 1.5 * period
        while self._submitted == seen and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)
        self._metrics.count('waited_for_fresh_frame')
