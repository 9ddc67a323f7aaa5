"""The node's newest-triple pairing policy."""

import pytest

from rgbd_seg_ros.core.pairing import ApproxTimePairer

MS = 1_000_000


def feed(pairer, stream, stamp_ms):
    return pairer.add(stream, stamp_ms * MS, f'{stream}@{stamp_ms}')


def test_exact_stamps_pair_immediately():
    pairer = ApproxTimePairer(slop_ns=5 * MS)
    assert feed(pairer, 'rgb', 100) is None
    assert feed(pairer, 'depth', 100) is None
    triple = feed(pairer, 'info', 100)
    assert triple is not None
    assert (triple.rgb.payload, triple.depth.payload, triple.info.payload) == (
        'rgb@100',
        'depth@100',
        'info@100',
    )
    assert triple.skew_ns == 0


def test_skew_within_and_beyond_slop():
    pairer = ApproxTimePairer(slop_ns=10 * MS)
    feed(pairer, 'rgb', 100)
    feed(pairer, 'info', 100)
    assert feed(pairer, 'depth', 111) is None  # 11 ms > slop
    triple = feed(pairer, 'depth', 108)
    assert triple is not None and triple.skew_ns == 8 * MS


def test_newest_triple_wins_and_older_are_dropped():
    pairer = ApproxTimePairer(slop_ns=5 * MS, queue_size=10)
    for t in (0, 33, 66):
        feed(pairer, 'rgb', t)
        feed(pairer, 'info', t)
    # Depth arrives late, only for the newest colour frame.
    triple = feed(pairer, 'depth', 66)
    assert triple.rgb.payload == 'rgb@66'
    counters = pairer.counters()
    assert counters['dropped_unpaired_rgb'] == 2
    assert counters['dropped_unpaired_info'] == 2
    assert counters['paired'] == 1


def test_rate_mismatch_pairs_every_depth_frame():
    """30 Hz colour and camera_info with 15 Hz depth: one triple per depth frame."""
    pairer = ApproxTimePairer(slop_ns=5 * MS, queue_size=5)
    triples = []
    for i in range(30):
        t = round(i * 1000 / 30)
        feed(pairer, 'info', t)
        out = feed(pairer, 'rgb', t)
        if out:
            triples.append(out)
        if i % 2 == 0:
            out = feed(pairer, 'depth', t)
            if out:
                triples.append(out)
    assert len(triples) == 15
    assert all(tr.skew_ns <= 5 * MS for tr in triples)


def test_missing_camera_info_never_pairs_and_overflows_are_counted():
    pairer = ApproxTimePairer(slop_ns=5 * MS, queue_size=3)
    for t in range(0, 300, 30):
        assert feed(pairer, 'rgb', t) is None
        assert feed(pairer, 'depth', t) is None
    counters = pairer.counters()
    assert counters['paired'] == 0
    assert counters['dropped_unpaired_rgb'] == 7
    assert counters['dropped_unpaired_depth'] == 7


def test_time_jump_back_resets_queues():
    pairer = ApproxTimePairer(slop_ns=5 * MS, jump_back_ns=500 * MS)
    for t in (5000, 5033):
        feed(pairer, 'rgb', t)
    feed(pairer, 'rgb', 0)  # the bag looped
    assert pairer.counters()['dropped_time_jump'] == 2
    assert pairer.counters()['time_jumps'] == 1
    feed(pairer, 'depth', 0)
    assert feed(pairer, 'info', 0).rgb.payload == 'rgb@0'


def test_out_of_order_arrivals_within_a_stream():
    pairer = ApproxTimePairer(slop_ns=2 * MS, queue_size=5)
    feed(pairer, 'rgb', 66)
    feed(pairer, 'rgb', 33)
    feed(pairer, 'depth', 33)
    triple = feed(pairer, 'info', 33)
    assert triple.rgb.payload == 'rgb@33'


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError):
        ApproxTimePairer(slop_ns=-1)
    pairer = ApproxTimePairer(slop_ns=1)
    with pytest.raises(ValueError):
        pairer.configure(slop_ns=1, queue_size=0)
    with pytest.raises(KeyError):
        pairer.add('labels', 0, None)


def test_pair_without_depth_takes_the_newest_colour_and_info_within_slop():
    p = ApproxTimePairer(slop_ns=5 * MS, queue_size=5)
    assert p.pair_without_depth() is None  # nothing yet
    for t in (0, 33, 66):
        assert p.add('rgb', t * MS, f'rgb{t}') is None
    assert p.pair_without_depth() is None  # no camera_info yet
    p.add('info', 31 * MS, 'info31')
    p.add('info', 80 * MS, 'info80')  # 14 ms from rgb66: beyond the slop
    pair = p.pair_without_depth()
    assert pair is not None
    assert (pair.rgb.payload, pair.info.payload) == ('rgb33', 'info31')
    assert pair.depth.payload is None and pair.depth.stamp_ns == 33 * MS
    # What the pair used or passed over is gone; newer colour and camera_info stay.
    assert p.pair_without_depth() is None
    assert p.counters()['dropped_unpaired_rgb'] == 1  # rgb0
    p.add('rgb', 81 * MS, 'rgb81')
    assert p.pair_without_depth().rgb.payload == 'rgb81'


def test_pair_without_depth_leaves_depth_queued():
    p = ApproxTimePairer(slop_ns=5 * MS, queue_size=5)
    p.add('depth', 100 * MS, 'depth100')
    p.add('rgb', 0, 'rgb0')
    p.add('info', 0, 'info0')
    assert p.pair_without_depth().rgb.payload == 'rgb0'
    # The queued depth still pairs with later colour and camera_info.
    p.add('rgb', 100 * MS, 'rgb100')
    triple = p.add('info', 100 * MS, 'info100')
    assert triple is not None and triple.depth.payload == 'depth100'
