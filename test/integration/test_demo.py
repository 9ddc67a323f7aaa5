"""A shortened run of the README's main command: synthetic recording -> node -> outputs."""

from __future__ import annotations

import json
import subprocess

import pytest

from rgbd_seg_ros.data.recordings import Recording
from rgbd_seg_ros.paths import default_model
from rgbd_seg_ros.ros.process import console_script

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.mark.skipif(default_model() is None, reason='no embedded default model')
def test_short_demo_produces_outputs_previews_and_scores(tmp_path, ros_env):
    out = tmp_path / 'demo'
    proc = subprocess.run(
        [
            console_script('rgbd-seg-demo'),
            '--out',
            str(out),
            '--frames',
            '12',
            '--size',
            '320x240',
            '--fps',
            '5',
            '--device',
            'cpu',
        ],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['frames_in'] == 12
    assert 0 < summary['frames_out'] <= 12
    assert summary['frames_scored'] == summary['frames_out']
    assert summary['node_exit_code'] == 0
    # The embedded model was trained on this kind of scene: far better than chance.
    assert summary['miou'] > 0.3, summary
    for name in ('previews.png', 'cloud.png'):
        assert (out / name).stat().st_size > 10_000
    with Recording(out / 'outputs') as recording:
        topics = recording.topics
    for topic in (
        '/segmentation/labels',
        '/segmentation/overlay',
        '/segmentation/points',
        '/segmentation/confidence',
        '/segmentation/classes',
    ):
        assert topics[topic].count >= 1, topic
    assert 'mIoU vs ground truth' in proc.stdout
