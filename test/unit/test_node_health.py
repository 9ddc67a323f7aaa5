"""The health rules of /diagnostics, each with made-up times: level and message of ``assess``."""

from __future__ import annotations

import dataclasses

import pytest

from rgbd_seg_ros.core.node_health import (
    NEVER,
    HealthLimits,
    HealthSnapshot,
    Level,
    StreamState,
    assess,
)
from rgbd_seg_ros.core.node_metrics import FrameTiming, NodeMetrics

LIMITS = HealthLimits(
    stale_after_s=3.0, min_input_hz=5.0, min_pairing_ratio=0.5, min_output_ratio=0.5
)
NOW = 100.0


def live(rate: float, last_ago: float = 0.02, first_ago: float = 20.0) -> StreamState:
    return StreamState(NOW - first_ago, NOW - last_ago, rate)


def healthy(**changes) -> HealthSnapshot:
    """30 Hz inputs, every triple paired and segmented, a model, a subscriber."""
    base = HealthSnapshot(
        now_s=NOW,
        started_s=NOW - 30.0,
        inputs={'rgb': live(30.0), 'depth': live(30.0), 'info': live(30.0)},
        paired=live(30.0, first_ago=19.0),
        out=live(29.0, first_ago=18.5),
        new_skips=0,
        model_loaded=True,
        outputs_wanted=True,
    )
    return dataclasses.replace(base, **changes)


def with_input(stream: str, state: StreamState) -> HealthSnapshot:
    inputs = dict(healthy().inputs)
    inputs[stream] = state
    return healthy(inputs=inputs)


def test_a_good_stream_is_ok_and_says_running():
    health = assess(healthy(), LIMITS)
    assert health.level == Level.OK and health.message == 'running'
    assert health.findings == ()
    assert health.values['pairing_ratio_recent'] == '1.000'
    assert health.values['output_ratio_recent'] == f'{29 / 30:.3f}'
    assert health.values['silent_info_s'] == '0.0'


def test_no_input_at_all_is_an_error_once_the_stale_time_has_passed():
    nothing = healthy(
        started_s=NOW - 3.5,
        inputs={'rgb': NEVER, 'depth': NEVER, 'info': NEVER},
        paired=NEVER,
        out=NEVER,
    )
    health = assess(nothing, LIMITS)
    assert health.level == Level.ERROR
    assert health.message == (
        'no colour for 3.5 s (none since start); no depth for 3.5 s (none since start); '
        'no camera_info for 3.5 s (none since start)'
    )
    # Before the stale time, a node still waiting for its first frame warns (rate 0).
    early = assess(dataclasses.replace(nothing, started_s=NOW - 1.0), LIMITS)
    assert early.level == Level.WARN
    assert early.message.startswith('colour at 0.0 Hz, below 5 Hz')


def test_one_silent_input_is_an_error_naming_it():
    health = assess(with_input('info', live(30.0, last_ago=8.0)), LIMITS)
    assert health.level == Level.ERROR
    assert health.message == 'no camera_info for 8.0 s'
    assert health.values['silent_info_s'] == '8.0'
    # Exactly at the limit it is not stale yet.
    assert assess(with_input('depth', live(30.0, last_ago=3.0)), LIMITS).level == Level.OK


def test_a_slow_input_warns_and_a_zero_minimum_turns_the_rule_off():
    health = assess(with_input('depth', live(2.0)), LIMITS)
    assert health.level == Level.WARN
    assert health.message.startswith('depth at 2.0 Hz, below 5 Hz')
    off = dataclasses.replace(LIMITS, min_input_hz=0.0, min_pairing_ratio=0.0)
    assert assess(with_input('depth', live(2.0)), off).level == Level.OK


def test_pairing_collapse_warns_against_the_slowest_input():
    # 15 Hz depth, 15 pairs/s: every depth frame pairs, healthy.
    inputs = {'rgb': live(30.0), 'depth': live(15.0), 'info': live(30.0)}
    half = healthy(inputs=inputs, paired=live(15.0), out=live(15.0))
    assert assess(half, LIMITS).level == Level.OK
    # Inputs flow but pairs stopped (stamps no longer match) longer than the stale time.
    stopped = healthy(paired=live(30.0, last_ago=4.0), out=live(30.0, last_ago=4.0))
    health = assess(stopped, LIMITS)
    assert health.level == Level.WARN
    assert health.message == 'pairing collapsed: 0.0 pairs/s from inputs at 30.0 Hz'
    assert health.values['pairing_ratio_recent'] == '0.000'
    # A few pairs per second out of 30 Hz inputs.
    trickle = healthy(paired=live(3.0), out=live(3.0))
    assert 'pairing collapsed: 3.0 pairs/s' in assess(trickle, LIMITS).message


def test_no_pair_yet_is_not_a_collapse_until_the_inputs_have_flowed_for_the_stale_time():
    young = {'rgb': live(30, first_ago=1.0), 'depth': live(30, first_ago=1.0)}
    young['info'] = live(30, first_ago=1.0)
    assert assess(healthy(inputs=young, paired=NEVER, out=NEVER), LIMITS).level == Level.OK
    old = {name: live(30, first_ago=5.0) for name in ('rgb', 'depth', 'info')}
    health = assess(healthy(inputs=old, paired=NEVER, out=NEVER), LIMITS)
    assert health.message == 'pairing collapsed: 0.0 pairs/s from inputs at 30.0 Hz'


def test_new_skips_warn():
    health = assess(healthy(new_skips=2), LIMITS)
    assert health.level == Level.WARN and health.message == '2 bad frame(s) skipped'


def test_outputs_behind_the_pairs_warn_only_while_somebody_listens():
    # A stall (decoding, a hung model): pairs flow, the last output is older than the limit.
    stalled = healthy(out=live(30.0, last_ago=5.0))
    health = assess(stalled, LIMITS)
    assert health.level == Level.WARN
    assert health.message == 'outputs at 0.0 Hz for 30.0 pairs/s'
    assert health.values['output_ratio_recent'] == '0.000'
    # A slow model: 10 outputs/s for 30 pairs/s.
    assert assess(healthy(out=live(10.0)), LIMITS).message == 'outputs at 10.0 Hz for 30.0 pairs/s'
    # Nobody subscribes: nothing is segmented, and that is fine.
    assert assess(dataclasses.replace(stalled, outputs_wanted=False), LIMITS).level == Level.OK
    # Never produced an output although pairs flowed for longer than the limit.
    assert assess(healthy(out=NEVER), LIMITS).message == 'outputs at 0.0 Hz for 30.0 pairs/s'


def test_no_model_warns_without_an_output_rule():
    health = assess(healthy(model_loaded=False, out=NEVER), LIMITS)
    assert health.level == Level.WARN and health.message == 'no model loaded'


def test_findings_merge_to_the_worst_level_with_every_message():
    snapshot = with_input('info', live(30.0, last_ago=10.0))
    snapshot = dataclasses.replace(snapshot, new_skips=1, model_loaded=False)
    health = assess(snapshot, LIMITS)
    assert [f.level for f in health.findings] == [Level.ERROR, Level.WARN, Level.WARN]
    assert health.level == Level.ERROR
    assert health.message == 'no camera_info for 10.0 s; no model loaded; 1 bad frame(s) skipped'


@pytest.mark.parametrize('field', ['stale_after_s', 'min_input_hz'])
def test_limits_move_the_verdict(field):
    snapshot = with_input('rgb', live(4.0, last_ago=2.0))
    assert assess(snapshot, LIMITS).level == Level.WARN  # 4 Hz < 5 Hz
    tighter = dataclasses.replace(LIMITS, **{field: 1.0})
    expected = Level.ERROR if field == 'stale_after_s' else Level.OK
    assert assess(snapshot, tighter).level == expected


def test_metrics_give_each_stream_its_first_and_last_event_and_rate():
    metrics = NodeMetrics(rate_window_s=2.0)
    assert metrics.stream('rgb', 0.0) == NEVER
    for i in range(11):
        metrics.arrived('rgb', 10.0 + i / 10)
    state = metrics.stream('rgb', 11.0)
    assert state.first_s == 10.0 and state.last_s == 11.0
    assert state.rate_hz == pytest.approx(10.0)
    metrics.record_frame(
        FrameTiming(
            stamp_ns=0,
            picked_up_ns=0,
            decoded_ns=0,
            done_ns=0,
            labels_ns=None,
            forward_s=0.0,
            preprocess_s=0.0,
        ),
        now_s=12.5,
    )
    assert metrics.stream('out', 12.5) == StreamState(12.5, 12.5, 0.0)


def test_a_silent_optional_input_warns_and_stays_out_of_the_pairing_rules():
    """Depth for a model that runs without it: its silence degrades, it does not stop."""
    snap = healthy(
        inputs={'rgb': live(30.0), 'info': live(30.0)},
        optional_inputs={'depth': live(30.0, last_ago=10.0)},
    )
    health = assess(snap, LIMITS)
    assert health.level == Level.WARN
    assert 'no depth for 10.0 s, running without' in health.message
    fresh = healthy(
        inputs={'rgb': live(30.0), 'info': live(30.0)}, optional_inputs={'depth': live(30.0)}
    )
    assert assess(fresh, LIMITS).level == Level.OK
