"""The transport benchmark (``python -m rgbd_seg_ros.tools.transport_bench``): its two children
over real DDS, each variant's setting reaching the process it is meant for, and its summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rgbd_seg_ros.ros.conversions import cdr_stamp_ns
from rgbd_seg_ros.tools import transport_bench as tb

pytestmark = pytest.mark.ros


def test_every_variant_runs_over_dds_with_its_own_settings(tmp_path: Path) -> None:
    out = tmp_path / 'transport.json'
    command = [sys.executable, '-m', 'rgbd_seg_ros.tools.transport_bench', '--count', '4']
    command += ['--points', '2000', '--rate', '10', '--deserialize', '--json', str(out)]
    command += ['--subscriber-malloc', 'default', 'keep']
    command += ['--publication-mode', 'SYNCHRONOUS', 'ASYNCHRONOUS']
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(out.read_text())
    variants = {(r['subscriber_malloc'], r['publication_mode']) for r in doc['runs']}
    assert variants == {(m, p) for m in tb.MALLOC_MODES for p in tb.PUBLICATION_MODES}
    for run in doc['runs']:
        assert 0 < run['received'] <= run['sent'] == 4
        assert run['subscriber_large_blocks'] is (run['subscriber_malloc'] == 'keep')
        assert run['publisher_releases_gil'] is True
        assert run['publish_ms']['p50'] > 0 and run['arrival_ms']['p50'] > 0
    assert len(doc['summary']) == 4
    assert 'arrival p50' in done.stdout and '48,000 bytes' in done.stdout


def test_restamp_writes_the_header_stamp_in_place() -> None:
    from std_msgs.msg import Header

    from rgbd_seg_ros.ros.serialized import CloudMessage

    cloud = CloudMessage((3,), Header(frame_id='f'))
    tb._restamp(cloud.buffer, 1_700_000_123_456_789_012)
    assert cdr_stamp_ns(cloud.buffer.tobytes()) == 1_700_000_123_456_789_012
    tb._restamp(cloud.buffer, 0)
    assert cdr_stamp_ns(cloud.buffer.tobytes()) == 0


def test_summary_gives_each_variants_median_and_spread() -> None:
    def run(malloc: str, arrival: float | None, received: int = 5) -> dict:
        return {
            'subscriber_malloc': malloc,
            'publication_mode': 'SYNCHRONOUS',
            'sent': 5,
            'received': received,
            'publish_ms': {'p50': 2.0, 'p95': 3.0},
            'arrival_ms': {'p50': arrival, 'p95': None},
        }

    rows = tb.summary(
        [run('keep', 10.0), run('default', 20.0), run('keep', 12.0), run('default', None, 0)]
    )
    by_malloc = {row['subscriber_malloc']: row for row in rows}
    assert by_malloc['keep']['arrival_ms'] == {
        'p50s': [10.0, 12.0],
        'median': 11.0,
        'spread': 2 / 11,
    }
    assert by_malloc['default']['arrival_ms']['p50s'] == [20.0]  # a run that got nothing: no p50
    assert by_malloc['default']['received'] == ['5/5', '0/5']
    assert by_malloc['keep']['publish_ms']['spread'] == 0.0


@pytest.mark.parametrize('flag', ['--points', '--count', '--rate', '--rounds'])
def test_sizes_and_rates_must_be_positive(flag: str) -> None:
    with pytest.raises(SystemExit):
        tb.parse_args([flag, '0'])
    assert np.isfinite(float(getattr(tb.parse_args([flag, '3']), flag[2:])))


def test_a_message_beyond_a_cdr_sequence_is_refused() -> None:
    with pytest.raises(SystemExit):
        tb.parse_args(['--points', str(2**32 // 24 + 1)])
    assert tb.parse_args(['--points', str((2**32 - 1) // 24)]).points == (2**32 - 1) // 24


def test_a_child_that_fails_ends_the_run_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subscriber that never gets ready: exit code 1 and why, no hang, no traceback."""
    monkeypatch.setattr(tb, 'apply_loopback_environment', lambda log_dir: 0)
    monkeypatch.setattr(tb, '_child', lambda *a: [sys.executable, '-c', 'print("not ready")'])
    assert tb.main(['--count', '1', '--subscriber-malloc', 'default']) == 1
    assert 'the subscriber did not start' in capsys.readouterr().err
