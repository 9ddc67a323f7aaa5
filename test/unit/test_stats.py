"""Rolling statistics behind /diagnostics."""

import pytest

from rgbd_seg_ros.core.stats import CounterSet, LatencyWindow, RateMeter


def test_rate_meter_measures_frequency_and_forgets_old_events():
    meter = RateMeter(window_s=2.0)
    for i in range(31):
        meter.tick(i / 30.0)
    assert meter.rate(1.0) == pytest.approx(30.0)
    assert meter.rate(10.0) == 0.0


def test_latency_percentiles_in_ms():
    window = LatencyWindow(size=100)
    assert window.percentiles_ms() == {}
    for ms in range(1, 101):
        window.add(ms / 1000.0)
    p = window.percentiles_ms((50, 95))
    assert p['p50'] == pytest.approx(50.5)
    assert p['p95'] == pytest.approx(95.05)
    window.add(1.0)  # oldest sample (1 ms) leaves the window
    assert len(window) == 100


def test_counter_set_totals():
    counters = CounterSet()
    assert counters.add('bad_encoding') == 1
    assert counters.add('bad_encoding', 2) == 3
    assert counters.snapshot() == {'bad_encoding': 3}


def test_counter_set_total_by_prefix():
    counters = CounterSet()
    assert counters.total('skipped_') == 0
    counters.add('skipped_bad_colour', 2)
    counters.add('skipped_bad_depth')
    counters.add('dropped_superseded', 5)
    assert counters.total('skipped_') == 3
    assert counters.total('dropped_') == 5
    assert counters.total('') == 8
