"""The segmentation node on either one-thread executor (its read-only ``executor``
parameter): the same outputs over real DDS, the choice in its log, a clean stop on SIGINT."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy.experimental
from node_fixtures import NODE_PARAMS, Streamer, small_checkpoint
from sensor_msgs.msg import Image, PointCloud2

pytestmark = [pytest.mark.ros, pytest.mark.slow]

HAS_EVENTS = hasattr(rclpy.experimental, 'EventsExecutor')


@pytest.mark.parametrize(
    ('choice', 'expected'),
    [
        ('single', 'SingleThreadedExecutor'),
        ('auto', 'EventsExecutor' if HAS_EVENTS else 'SingleThreadedExecutor'),
    ],
)
def test_both_executors_segment_and_stop_cleanly(
    launch_node, ros_peer, tmp_path, choice, expected
):
    checkpoint = small_checkpoint(tmp_path / 'model.safetensors', num_classes=4, seed=3)
    proc = launch_node(
        'segmentation_node',
        params={**NODE_PARAMS, 'checkpoint': str(checkpoint), 'executor': choice},
    )
    streamer = Streamer(ros_peer, proc)
    labels = streamer.listen('labels', Image)
    clouds = streamer.listen('points', PointCloud2)
    streamer.wait_connected()
    streamer.stream_until(lambda: len(labels) >= 3 and clouds, 'labels and a cloud')
    streamer.peer.wait_for(
        lambda: f'executor: {expected}' in proc.log(), what='the executor in the log', node=proc
    )
    label_image = np.frombuffer(bytes(labels[-1].data), np.uint8)
    assert label_image.size == labels[-1].height * labels[-1].width and label_image.max() < 4
    assert proc.interrupt() == 0, proc.log()[-3000:]
    assert 'Traceback' not in proc.log()
