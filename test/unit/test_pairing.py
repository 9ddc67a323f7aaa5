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
