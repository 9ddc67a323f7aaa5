"""Offline pairing (pairing_offline) and frame selection / splits (selection)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rgbd_seg_ros.data.pairing_offline import match_nearest, match_unique, pair_streams
from rgbd_seg_ros.data.selection import (
    DuplicateFilter,
    assign_splits,
    parse_ratios,
    select_min_gap,
    subsample,
)
from rgbd_seg_ros.errors import ConfigError

MS = 1_000_000


def test_match_unique_uses_each_message_once_closest_first():
    ref = np.array([0, 10, 20]) * MS
    other = np.array([9, 11]) * MS
    # Slop 5: only 10 has candidates (9 and 11, a tie: the earlier one wins).
    np.testing.assert_array_equal(match_unique(ref, other, 5 * MS), [-1, 0, -1])
    # Slop 10: 10 takes 9 (|dt| 1), so 0 cannot have it; 20 takes the remaining 11.
    np.testing.assert_array_equal(match_unique(ref, other, 10 * MS), [-1, 0, 1])
    # Out-of-slop messages are never paired.
    np.testing.assert_array_equal(match_unique(ref, other + 100 * MS, 10 * MS), [-1, -1, -1])


def test_match_nearest_allows_reuse():
    ref = np.array([0, 10, 20, 100]) * MS
    other = np.array([12]) * MS
    np.testing.assert_array_equal(match_nearest(ref, other, 15 * MS), [0, 0, 0, -1])


def test_pair_streams_with_out_of_order_stamps_and_drops():
    colour = np.array([30, 0, 10, 20, 40, 40]) * MS  # arrival order; 40 repeated
    depth = np.array([1, 12, 31, 19]) * MS  # no partner for 40
    info = np.array([0, 10, 20]) * MS
    labels = np.array([0, 10, 20, 30]) * MS
    frames, stats = pair_streams(colour, depth, info, labels, slop_ns=3 * MS, info_slop_ns=15 * MS)
    assert [f.stamp_ns for f in frames] == [0, 10 * MS, 20 * MS, 30 * MS]
    assert [colour[f.colour] for f in frames] == [f.stamp_ns for f in frames]
    assert [depth[f.depth] for f in frames] == [1 * MS, 12 * MS, 19 * MS, 31 * MS]
    assert [f.dt_depth_ns for f in frames] == [1 * MS, 2 * MS, -1 * MS, 1 * MS]
    assert stats.dropped['duplicate_colour_stamp'] == 1
    assert stats.dropped['no_depth_within_slop'] == 1
    assert stats.out_of_order > 0
    d = stats.to_dict()
    assert d['pairs'] == 4 and d['slop_ms']['max'] == 2.0
    assert sum(d['slop_ms']['histogram'].values()) == 4


def test_pair_streams_reports_camera_info_gaps():
    colour = np.arange(10) * 100 * MS
    info = np.array([0, 100, 800, 900]) * MS
    frames, stats = pair_streams(colour, colour + MS, info, slop_ns=5 * MS, info_slop_ns=50 * MS)
    assert len(frames) == 4
    assert stats.dropped['no_camera_info_within_slop'] == 6
    assert stats.info_gaps == [(200 * MS, 700 * MS, 6)]


def test_select_min_gap_and_subsample():
    stamps = np.array([0, 10, 20, 35, 40, 80]) * MS
    np.testing.assert_array_equal(select_min_gap(stamps, 25 * MS), [0, 3, 5])
    np.testing.assert_array_equal(select_min_gap(stamps, 0), np.arange(6))
    np.testing.assert_array_equal(subsample(np.arange(10), 3), [0, 4, 9])  # rounded linspace
    np.testing.assert_array_equal(subsample(np.arange(3), 5), [0, 1, 2])


def test_assign_splits_contiguous_blocks_and_ratios():
    stamps = np.arange(1000) * 100 * MS  # 100 s at 10 Hz
    names = assign_splits(stamps, (0.8, 0.1, 0.1), block_ns=5_000 * MS)
    counts = {s: names.count(s) for s in ('train', 'val', 'test')}
    assert counts == {'train': 800, 'val': 100, 'test': 100}
    # Every 5 s block is whole.
    for b in range(20):
        assert len(set(names[b * 50 : (b + 1) * 50])) == 1


def test_assign_splits_guard_band():
    stamps = np.arange(200) * 100 * MS
    names = assign_splits(stamps, (0.5, 0.5, 0.0), block_ns=5_000 * MS, guard_ns=300 * MS)
    dropped = [i for i, n in enumerate(names) if n is None]
    assert dropped  # frames near train/val boundaries are dropped
    assert 'test' not in names
    for i in dropped:
        boundary = round(i / 50) * 50
        assert abs(i - boundary) < 3


def test_parse_ratios():
    assert parse_ratios('8,1,1') == pytest.approx((0.8, 0.1, 0.1))
    for bad in ('0.8,0.2', 'a,b,c', '-1,1,1', '0,0,0'):
        with pytest.raises(ConfigError):
            parse_ratios(bad)


def test_duplicate_filter():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 1, 0, 255).astype(np.uint8)
    c = 255 - a
    f = DuplicateFilter(threshold=2.0)
    assert not f.is_duplicate(a)
    assert f.is_duplicate(b)
    assert not f.is_duplicate(c)
    assert not DuplicateFilter(0).is_duplicate(a)


def test_short_recordings_always_hold_frames_out():
    """A recording shorter than one block still gets validation and test frames."""
    for n in range(3, 120):  # 0.3 to 12 s at 10 Hz against 10 s blocks
        stamps = np.arange(n) * 100 * MS
        for guard in (0, 500 * MS):
            names = assign_splits(stamps, (0.8, 0.1, 0.1), block_ns=10_000 * MS, guard_ns=guard)
            assert {'train', 'val', 'test'} <= set(names), (n, guard, names)
            kept = [x for x in names if x is not None]
            assert kept.count('train') >= kept.count('val') + kept.count('test') - 1
    assert assign_splits(np.arange(2) * 100 * MS, (0.8, 0.1, 0.1)) == ['train', 'test']
    assert assign_splits(np.arange(1) * 100 * MS, (0.8, 0.1, 0.1)) == ['train']
    # A split without a share still gets nothing.
    names = assign_splits(np.arange(20) * 100 * MS, (0.9, 0.1, 0.0))
    assert set(names) == {'train', 'val'}


def test_short_recording_blocks_stay_contiguous():
    names = assign_splits(np.arange(30) * 100 * MS, (0.8, 0.1, 0.1), block_ns=10_000 * MS)
    runs = [k for k, _ in itertools.groupby(names)]
    assert sorted(set(runs)) == ['test', 'train', 'val'] and len(runs) <= 5
