"""The hand-over between pairing and the worker: newest wins, and the choice between a stale
pending frame and the next one (wait_for_fresh_frame).

The paired rate and the counters come from a real NodeMetrics; the consumer side is driven
directly (``take``) so the decision is checked without racing a camera.
"""

from __future__ import annotations

import threading
import time

from rgbd_seg_ros.core.handover import FrameHandover
from rgbd_seg_ros.core.node_metrics import NodeMetrics


def make_handover(
    rate_hz: float | None, wait: bool = True
) -> tuple[FrameHandover[str], NodeMetrics]:
    metrics = NodeMetrics()
    if rate_hz:
        now = time.monotonic()
        metrics.arrived('paired', now - 1.0 / rate_hz)
        metrics.arrived('paired', now)
    return FrameHandover(metrics, wait_for_fresh=wait), metrics


def pend(handover: FrameHandover[str], name: str, age_s: float) -> None:
    handover.submit(name, arrived_at=time.monotonic() - age_s)


def test_no_rate_known_means_no_wait():
    handover, _ = make_handover(None)
    pend(handover, 'old', 10.0)
    start = time.monotonic()
    assert handover.take() == 'old'
    assert time.monotonic() - start < 0.5


def test_a_frame_younger_than_a_third_of_the_period_is_taken():
    handover, metrics = make_handover(1.0)  # period 1 s
    pend(handover, 'recent', 0.2)
    start = time.monotonic()
    assert handover.take() == 'recent'
    assert time.monotonic() - start < 0.5
    assert metrics.counts().get('waited_for_fresh_frame', 0) == 0


def test_a_stale_frame_is_replaced_by_the_next_one():
    handover, metrics = make_handover(1.0)  # period 1 s: may wait until 1.5 s after 'stale'
    pend(handover, 'stale', 0.5)
    timer = threading.Timer(0.05, handover.submit, args=('fresh',))
    timer.start()
    try:
        assert handover.take() == 'fresh'
    finally:
        timer.join()
    counts = metrics.counts()
    assert counts['waited_for_fresh_frame'] == 1
    assert counts['dropped_superseded'] == 1


def test_the_wait_is_bounded_so_the_last_frame_is_not_lost():
    handover, _ = make_handover(20.0)  # period 50 ms: give up 75 ms after the frame arrived
    pend(handover, 'last', 0.03)
    start = time.monotonic()
    assert handover.take() == 'last'
    waited = time.monotonic() - start
    assert 0.02 <= waited < 1.0


def test_without_wait_for_fresh_frame_a_stale_frame_is_taken_at_once():
    handover, metrics = make_handover(1.0, wait=False)
    pend(handover, 'stale', 0.9)
    start = time.monotonic()
    assert handover.take() == 'stale'
    assert time.monotonic() - start < 0.5
    assert metrics.counts().get('waited_for_fresh_frame', 0) == 0


def test_an_untaken_frame_is_superseded_never_queued():
    handover, metrics = make_handover(None)
    for name in ('a', 'b', 'c'):
        handover.submit(name)
    assert handover.take() == 'c'
    assert metrics.counts()['dropped_superseded'] == 2
    handover.submit('d')
    assert handover.take() == 'd'
    assert metrics.counts()['dropped_superseded'] == 2


def test_close_releases_a_waiting_consumer():
    handover, _ = make_handover(None)
    taken: list[str | None] = []
    consumer = threading.Thread(target=lambda: taken.append(handover.take()))
    consumer.start()
    handover.close()
    consumer.join(timeout=10.0)
    assert not consumer.is_alive()
    assert taken == [None]
    handover.submit('late')
    assert handover.take() is None
