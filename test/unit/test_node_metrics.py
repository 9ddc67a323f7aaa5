"""The node's figures: what each record does and the exact keys /diagnostics publishes."""

import re

import pytest

from rgbd_seg_ros.core.node_metrics import RATES, WINDOWS, FrameTiming, NodeMetrics

MS = 1_000_000  # nanoseconds


def timing(**overrides) -> FrameTiming:
    """Stamp at 1 s; pick-up 40 ms later, decoded at 45 ms, labels at 130 ms, done at 160 ms;
    forward 70 ms, preprocess 5 ms, cloud 12 ms."""
    base = dict(
        stamp_ns=1_000 * MS,
        picked_up_ns=1_040 * MS,
        decoded_ns=1_045 * MS,
        done_ns=1_160 * MS,
        labels_ns=1_130 * MS,
        forward_s=0.070,
        preprocess_s=0.005,
        cloud_s=0.012,
    )
    return FrameTiming(**{**base, **overrides})


def test_a_recorded_frame_splits_its_latency():
    metrics = NodeMetrics()
    metrics.record_frame(timing(), now_s=10.0)
    values = metrics.key_values(now_s=10.0)
    expected = {
        'latency': 160.0,  # stamp -> done
        'model_time': 70.0,
        'overhead': 90.0,  # latency - forward
        'work_overhead': 50.0,  # pick-up -> done, minus forward
        'labels_overhead': 60.0,  # stamp -> labels, minus forward
        'pickup_age': 40.0,  # stamp -> pick-up
        'prepare_time': 10.0,  # pick-up -> decoded, plus preprocess
        'cloud_time': 12.0,
    }
    assert set(expected) == set(WINDOWS)
    for name, ms in expected.items():
        for q in ('p50', 'p95', 'p99'):
            assert float(values[f'{name}_{q}_ms']) == pytest.approx(ms, abs=0.05), name
        assert metrics.samples(name) == 1
    assert values['frames_out'] == '1'
    assert metrics.frames_out == 1


def test_windows_without_samples_are_not_reported():
    metrics = NodeMetrics()
    values = metrics.key_values()
    assert not any(key.endswith('_ms') for key in values)
    metrics.record_frame(timing(labels_ns=None, cloud_s=None))
    values = metrics.key_values()
    assert 'latency_p50_ms' in values and 'model_time_p99_ms' in values
    assert not any(key.startswith(('labels_overhead_', 'cloud_time_')) for key in values)
    assert metrics.samples('labels_overhead') == metrics.samples('cloud_time') == 0


def test_rates_of_inputs_pairs_and_outputs():
    metrics = NodeMetrics(rate_window_s=2.0)
    for i in range(31):
        metrics.arrived('rgb', i / 30.0)
        if i % 2 == 0:
            metrics.arrived('depth', i / 30.0)
    for i in range(11):
        metrics.record_frame(timing(), now_s=i / 10.0)
    assert metrics.rate('rgb', 1.0) == pytest.approx(30.0)
    assert metrics.rate('depth', 1.0) == pytest.approx(15.0)
    assert metrics.rate('out', 1.0) == pytest.approx(10.0)
    values = metrics.key_values(now_s=1.0)
    assert values['rate_rgb_hz'] == '30.00'
    assert values['rate_depth_hz'] == '15.00'
    assert values['rate_out_hz'] == '10.00'
    assert values['rate_info_hz'] == values['rate_paired_hz'] == '0.00'
    with pytest.raises(KeyError):
        metrics.arrived('thermal', 0.0)


def test_skips_and_drops_are_counters_keyed_by_reason():
    metrics = NodeMetrics()
    assert metrics.skip('bad_colour') == 1
    assert metrics.skip('bad_colour') == 2
    assert metrics.skip('no_valid_depth') == 1
    assert metrics.drop('superseded') == 1
    assert metrics.count('waited_for_fresh_frame', 3) == 3
    assert metrics.counts() == {
        'skipped_bad_colour': 2,
        'skipped_no_valid_depth': 1,
        'dropped_superseded': 1,
        'waited_for_fresh_frame': 3,
    }
    assert metrics.skipped_total() == 3
    values = metrics.key_values()
    assert values['skipped_bad_colour'] == '2'
    assert values['dropped_superseded'] == '1'
    assert values['waited_for_fresh_frame'] == '3'


def test_pairing_counts_merge_with_ours_and_give_the_ratio():
    metrics = NodeMetrics()
    metrics.drop('no_model')
    pairing = {'received_rgb': 8, 'paired': 6, 'dropped_unpaired_depth': 2, 'time_jumps': 0}
    values = metrics.key_values(pairing)
    assert values['pairing_ratio'] == '0.750'
    assert values['received_rgb'] == '8'
    assert values['dropped_unpaired_depth'] == '2'
    assert values['dropped_no_model'] == '1'
    assert metrics.key_values({'paired': 0})['pairing_ratio'] == '0.000'
    assert metrics.key_values()['pairing_ratio'] == '0.000'


def test_key_order_and_formats_are_those_diagnostics_always_published():
    metrics = NodeMetrics()
    metrics.skip('bad_depth')
    metrics.record_frame(timing(), now_s=5.0)
    values = metrics.key_values({'received_rgb': 3, 'paired': 1}, now_s=5.0)
    keys = list(values)
    assert keys[: len(RATES)] == [f'rate_{name}_hz' for name in RATES]
    assert keys[len(RATES)] == 'pairing_ratio'
    counters = ['paired', 'received_rgb', 'skipped_bad_depth']
    assert keys[len(RATES) + 1 : len(RATES) + 4] == counters  # sorted, ours and the pairer's
    assert keys[len(RATES) + 4] == 'frames_out'
    windows = keys[len(RATES) + 5 :]
    assert windows == [f'{name}_{q}_ms' for name in WINDOWS for q in ('p50', 'p95', 'p99')]
    assert all(re.fullmatch(r'\d+\.\d\d', values[k]) for k in keys if k.endswith('_hz'))
    assert all(re.fullmatch(r'-?\d+\.\d', values[k]) for k in windows)
    assert re.fullmatch(r'\d\.\d{3}', values['pairing_ratio'])


def test_latency_windows_keep_the_newest_samples():
    metrics = NodeMetrics(window_size=4)
    for forward_ms in (500, 500, 500, 500, 10, 20, 30, 40):
        metrics.record_frame(timing(forward_s=forward_ms / 1e3))
    assert metrics.samples('model_time') == 4
    assert float(metrics.key_values()['model_time_p50_ms']) == pytest.approx(25.0)
    assert metrics.frames_out == 8
