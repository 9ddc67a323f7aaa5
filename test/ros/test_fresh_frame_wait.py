"""The worker's choice between a stale pending frame and the next one (wait_for_fresh_frame).

The node's attributes the choice reads (params, the paired-rate meter, counters) are the real
classes; the worker is driven directly so the decision is checked without racing a camera.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from rgbd_seg_ros.core.stats import CounterSet, RateMeter
from rgbd_seg_ros.ros.segment_worker import SegmentWorker


def make_worker(rate_hz: float | None, wait: bool = True) -> SegmentWorker:
    meter = RateMeter()
    if rate_hz:
        now = time.monotonic()
        meter.tick(now - 1.0 / rate_hz)
        meter.tick(now)
    node = SimpleNamespace(
        params={'wait_for_fresh_frame': wait}, rates={'paired': meter}, counters=CounterSet()
    )
    return SegmentWorker(node)


def pend(worker: SegmentWorker, name: str, age_s: float) -> None:
    worker.submit(name)
    worker._pending_at = time.monotonic() - age_s


def decide(worker: SegmentWorker) -> str:
    with worker._cond:
        worker._await_fresher()
        return worker._pending


def test_no_rate_known_means_no_wait():
    worker = make_worker(None)
    pend(worker, 'old', 10.0)
    start = time.monotonic()
    assert decide(worker) == 'old'
    assert time.monotonic() - start < 0.5


def test_a_frame_younger_than_a_third_of_the_period_is_taken():
    worker = make_worker(1.0)  # period 1 s
    pend(worker, 'recent', 0.2)
    start = time.monotonic()
    assert decide(worker) == 'recent'
    assert time.monotonic() - start < 0.5
    assert worker._node.counters.snapshot().get('waited_for_fresh_frame', 0) == 0


def test_a_stale_frame_is_replaced_by_the_next_one():
    worker = make_worker(1.0)  # period 1 s: the wait may last until 1.5 s after 'stale'
    pend(worker, 'stale', 0.5)
    timer = threading.Timer(0.05, worker.submit, args=('fresh',))
    timer.start()
    try:
        assert decide(worker) == 'fresh'
    finally:
        timer.join()
    counts = worker._node.counters.snapshot()
    assert counts['waited_for_fresh_frame'] == 1
    assert counts['dropped_superseded'] == 1


def test_the_wait_is_bounded_so_the_last_frame_is_not_lost():
    worker = make_worker(20.0)  # period 50 ms: give up 75 ms after the frame arrived
    pend(worker, 'last', 0.03)
    start = time.monotonic()
    assert decide(worker) == 'last'
    waited = time.monotonic() - start
    assert 0.02 <= waited < 1.0
