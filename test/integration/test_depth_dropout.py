"""Depth dropout over real (loopback) DDS: a model that runs without depth (depth_gating with
the hybrid gate) keeps publishing labels, colour, overlay and confidence, without a cloud,
when depth stops arriving or is all invalid; a model that needs depth (SSMA) publishes
nothing until depth is back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from node_fixtures import HEIGHT, WIDTH, Streamer, small_checkpoint
from sensor_msgs.msg import Image, PointCloud2

from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec, save_checkpoint
from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.ros.conversions import image_msg
from rgbd_seg_ros.ros.topics import reliable_input_params

pytestmark = [pytest.mark.ros, pytest.mark.slow]

IMAGES = ('labels', 'color', 'overlay', 'confidence')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    model = build_backend(
        'depth_gating',
        num_classes=4,
        encoder='resnet18',
        gating_source='hybrid',
        width=32,
        depth_head_width=16,
    )
    meta = CheckpointMeta(
        backend='depth_gating',
        config=dict(vars(model.config)),
        class_names=['a', 'b', 'c', 'd'],
        input_spec=InputSpec(
            depth_encoding='metric', depth_params={'max_depth_m': model.config.depth_max_m}
        ),
    )
    hybrid = folder / 'hybrid.safetensors'
    save_checkpoint(hybrid, model, meta)
    return {'hybrid': hybrid, 'ssma': small_checkpoint(folder / 'ssma.safetensors', seed=1)}


def _start(launch_node, ros_peer, checkpoint):
    params = {
        'checkpoint': str(checkpoint),
        'device': 'cpu',
        'diagnostics_period': 0.25,
        'slop': 0.01,
        'depth_timeout': 0.3,
        **reliable_input_params(),
    }
    proc = launch_node('segmentation_node', params=params)
    streamer = Streamer(ros_peer, proc)
    outs = {name: streamer.listen(name, Image) for name in IMAGES}
    outs['points'] = streamer.listen('points', PointCloud2)
    streamer.wait_connected()
    return proc, streamer, outs


def _stamps(msgs) -> set[int]:
    return {m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in msgs}


def _no_depth(rgb, depth, info):
    return rgb, None, info


def _invalid_depth(rgb, depth, info):
    nan = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    return rgb, image_msg(nan, '32FC1', depth.header), info


def test_a_model_that_runs_without_depth_keeps_publishing(launch_node, ros_peer, checkpoints):
    proc, streamer, outs = _start(launch_node, ros_peer, checkpoints['hybrid'])
    streamer.stream_until(lambda: outs['points'] and outs['labels'], 'outputs with depth')

    def counter(name: str) -> int:
        return int(streamer.latest_diag().get(name, 0))

    # Depth stops: after depth_timeout, colour + camera_info alone produce every image.
    for phase, mutate, key in (
        ('no depth message', _no_depth, 'paired_without_depth'),
        ('all-invalid depth', _invalid_depth, 'frames_without_depth'),
    ):
        start_ns = streamer.stamp_ns
        before = counter(key)

        def new_images(start_ns=start_ns) -> set[int]:
            per_image = [{s for s in _stamps(outs[n]) if s > start_ns} for n in IMAGES]
            return set.intersection(*per_image)

        streamer.stream_until(
            lambda key=key, before=before, new_images=new_images: (
                len(new_images()) >= 3 and counter(key) >= before + 3
            ),
            f'labels, colour, overlay and confidence with {phase}',
            mutate=mutate,
        )
        streamer.peer.spin_for(0.3)
        clouds = {s for s in _stamps(outs['points']) if s > start_ns}
        assert not clouds, f'{phase}: a cloud was published without depth'
        labels = next(m for m in reversed(outs['labels']) if _stamps([m]) <= new_images())
        assert np.frombuffer(bytes(labels.data), np.uint8).max() < 4
    assert counter('frames_without_depth') >= 6  # both phases are frames without depth

    # Depth is back: the cloud is too.
    n = len(outs['points'])
    streamer.stream_until(lambda: len(outs['points']) >= n + 2, 'clouds once depth is back')
    assert proc.interrupt() == 0


def test_a_model_that_needs_depth_waits_for_it(launch_node, ros_peer, checkpoints):
    proc, streamer, outs = _start(launch_node, ros_peer, checkpoints['ssma'])
    streamer.stream_until(lambda: outs['labels'], 'outputs with depth')
    start_ns = streamer.stamp_ns
    dropped = int(streamer.latest_diag().get('dropped_unpaired_rgb', 0))
    streamer.stream_until(
        lambda: int(streamer.latest_diag().get('dropped_unpaired_rgb', 0)) >= dropped + 20,
        'colour frames dropped while depth is missing',
        mutate=_no_depth,
    )
    skipped = int(streamer.latest_diag().get('skipped_no_valid_depth', 0))
    streamer.stream_until(
        lambda: int(streamer.latest_diag().get('skipped_no_valid_depth', 0)) >= skipped + 3,
        'all-invalid depth skipped',
        mutate=_invalid_depth,
    )
    streamer.peer.spin_for(0.3)
    for name in (*IMAGES, 'points'):
        assert not {s for s in _stamps(outs[name]) if s > start_ns}, name
    assert 'paired_without_depth' not in streamer.latest_diag()
    assert int(streamer.latest_diag().get('frames_without_depth', 0)) == 0
    assert proc.interrupt() == 0
