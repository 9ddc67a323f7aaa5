"""Skip warnings are throttled per reason: one bad stream cannot hide another."""

from __future__ import annotations

from rgbd_seg_ros.core.node_metrics import NodeMetrics
from rgbd_seg_ros.ros.skips import PerKeyThrottle, SkipReporter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, message: str, **kwargs: object) -> None:
        assert not kwargs  # the reporter throttles; rclpy's per-call-site throttle is not used
        self.lines.append(message)


def _reporter():
    clock, log, metrics = Clock(), Log(), NodeMetrics()
    return clock, log, metrics, SkipReporter(metrics, log, PerKeyThrottle(5.0, clock))


def test_one_flooding_reason_does_not_hide_another():
    clock, log, metrics, skip = _reporter()
    for _ in range(50):
        skip('bad_colour', 'garbage')
        clock.now += 0.01
    skip('invalid_stamp', 'negative')
    assert metrics.counts() == {'skipped_bad_colour': 50, 'skipped_invalid_stamp': 1}
    assert len(log.lines) == 2
    assert 'bad_colour' in log.lines[0] and 'invalid_stamp' in log.lines[1]


def test_a_warning_after_the_quiet_spell_says_how_many_were_held_back():
    clock, log, metrics, skip = _reporter()
    for _ in range(4):
        skip('too_large', 'big')
    clock.now += 5.0
    skip('too_large', 'big')
    assert len(log.lines) == 2
    assert '5 so far' in log.lines[1] and '3 more of this kind' in log.lines[1]
    assert metrics.counts()['skipped_too_large'] == 5


def test_notes_are_counted_under_their_own_name_and_throttled_apart():
    _clock, log, metrics, skip = _reporter()
    skip.note('frame_id_mismatch', 'colour in a, depth in b')
    skip.note('frame_id_mismatch', 'again')
    skip('bad_depth', 'x')
    assert metrics.counts() == {'frame_id_mismatch': 2, 'skipped_bad_depth': 1}
    assert metrics.skipped_total() == 1
    assert len(log.lines) == 2 and 'frame_id_mismatch (1 so far)' in log.lines[0]
    assert 'frame_id_mismatch' in metrics.key_values()
