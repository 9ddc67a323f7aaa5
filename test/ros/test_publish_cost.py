"""The publish-cost benchmark (``python -m rgbd_seg_ros.tools.publish_cost``): the node's output
path over real DDS to a child subscriber, alternating with serialisation only, and its summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rgbd_seg_ros.tools import publish_cost as pc

pytestmark = pytest.mark.ros

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / 'models' / 'default.safetensors'


def test_both_sinks_alternate_and_every_published_output_arrives(tmp_path: Path) -> None:
    out = tmp_path / 'cost.json'
    command = [sys.executable, '-m', 'rgbd_seg_ros.tools.publish_cost', '--frames', '3']
    command += ['--checkpoint', str(DEFAULT_MODEL), '--size', '160x120', '--pause', '0.2']
    command += ['--side-thread', 'on', '--json', str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(out.read_text())
    assert [row['sink'] for row in doc['frames']] == ['published', 'serialised'] * 3
    for row in doc['frames']:
        assert set(row['after_labels_ms']) == {'confidence', 'points', 'color', 'overlay'}
        assert row['labels_to_last_ms'] == max(row['after_labels_ms'].values()) > 0
    # Reliable outputs, a frame every 0.2 s: the warm-up frames and the three published ones.
    assert doc['published_per_output'] == 5
    assert doc['received'] == dict.fromkeys(pc.OUTPUTS, 5)
    assert set(doc['summary']) == set(pc.SINKS)
    assert doc['side_thread'] is True and doc['device'] == 'cpu'
    assert 'labels -> last' in done.stdout


def test_summary_takes_each_sinks_frames_apart() -> None:
    def row(sink: str, cloud: float, colour: float) -> dict:
        return pc.frame_row(
            sink,
            {
                'labels': 1_000_000,
                'points': 1_000_000 + int(cloud * 1e6),
                'color': 1_000_000 + int(colour * 1e6),
            },
            {'forward': 20.0},
        )

    rows = [row('published', 8.0, 3.0), row('serialised', 2.0, 1.0), row('published', 10.0, 12.0)]
    assert rows[2]['labels_to_last_ms'] == 12.0
    result = pc.summary(rows)
    assert result['published']['frames'] == 2
    assert result['published']['labels_to_last_ms']['p50'] == 10.0  # of 8 and 12
    assert result['published']['after_labels_p50_ms'] == {'color': 7.5, 'points': 9.0}
    assert result['serialised']['labels_to_last_ms'] == {'p25': 2.0, 'p50': 2.0, 'p75': 2.0}
    assert result['serialised']['forward_p50_ms'] == 20.0


@pytest.mark.parametrize('argv', [['--frames', '0'], ['--size', '640'], ['--size', '8x8']])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        pc.parse_args(argv)


def test_a_bad_checkpoint_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    bad = tmp_path / 'm.safetensors'
    bad.write_bytes(b'not a checkpoint')
    command = [sys.executable, '-m', 'rgbd_seg_ros.tools.publish_cost', '--checkpoint', str(bad)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith('publish_cost: ') and 'Traceback' not in done.stderr
