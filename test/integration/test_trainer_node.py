"""trainer_node end to end: a recording written by the test, ~/start, progress messages, and
the segmentation node hot-swapping to the fine-tuned model with the recording's class set."""

from __future__ import annotations

import json
import signal

import numpy as np
import proc_tree
import pytest
from node_fixtures import HEIGHT, WIDTH, Streamer, small_checkpoint
from ros_frames import intrinsics
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from rgbd_seg_ros.data.rosbag_messages import RecordingWriter

pytestmark = [pytest.mark.ros, pytest.mark.slow]

TOPICS = {
    'rgb': '/cam/color/image_raw',
    'depth': '/cam/depth/image_raw',
    'info': '/cam/color/camera_info',
    'label': '/cam/semantic',
}


def write_recording(path, frames: int = 12) -> None:
    """Three classes split by depth: near, middle and far bands of a ramp."""
    K = intrinsics(WIDTH, HEIGHT)
    rng = np.random.default_rng(0)
    with RecordingWriter(path, storage='mcap') as writer:
        writer.add_topic(TOPICS['rgb'], 'sensor_msgs/msg/Image')
        writer.add_topic(TOPICS['depth'], 'sensor_msgs/msg/Image')
        writer.add_topic(TOPICS['info'], 'sensor_msgs/msg/CameraInfo')
        writer.add_topic(TOPICS['label'], 'sensor_msgs/msg/Image')
        for i in range(frames):
            stamp = 1_000_000_000 + i * 100_000_000
            shift = i % WIDTH
            depth = np.roll(np.linspace(500, 6000, WIDTH), shift)[None].repeat(HEIGHT, 0)
            depth = depth.astype(np.uint16)
            labels = np.digitize(depth, [2000, 4000]).astype(np.uint8)
            rgb = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            writer.write(TOPICS['rgb'], stamp, writer.image(rgb, 'rgb8', stamp))
            writer.write(TOPICS['depth'], stamp, writer.image(depth, '16UC1', stamp))
            writer.write(TOPICS['info'], stamp, writer.camera_info(K, WIDTH, HEIGHT, stamp))
            writer.write(TOPICS['label'], stamp, writer.image(labels, 'mono8', stamp))


def test_trainer_fine_tunes_and_hot_swaps(launch_node, ros_peer, tmp_path):
    base = small_checkpoint(tmp_path / 'base.safetensors', num_classes=5, seed=3)
    recording = tmp_path / 'recording'
    write_recording(recording)
    seg = launch_node(
        'segmentation_node',
        params={
            'checkpoint': str(base),
            'device': 'cpu',
            'diagnostics_period': 0.5,
            'qos': {'input_reliability': 'reliable'},
        },
    )
    trainer = launch_node(
        'trainer_node',
        params={
            'recordings': [str(recording)],
            'rgb_topic': TOPICS['rgb'],
            'depth_topic': TOPICS['depth'],
            'info_topic': TOPICS['info'],
            'label_topic': TOPICS['label'],
            'label_source': 'topic',
            'base_checkpoint': str(base),
            'recipe': 'tiny_cpu',
            'output_dir': str(tmp_path / 'training'),
            'overrides': [
                'stages.0.steps=4',
                'stages.0.batch_size=2',
                'eval.every_steps=0',
                'eval.multiscale_at_end=false',
                'augment.crop=null',
                'checkpoint_every=2',
                'data.num_workers=0',
                'data.val_split=train',
            ],
        },
    )
    progress = ros_peer.subscribe(String, '/trainer_node/progress')
    streamer = Streamer(ros_peer, seg)
    labels = streamer.listen('labels', Image)
    streamer.wait_connected()
    streamer.stream_until(
        lambda: len(labels) >= 2 and len(streamer.class_names()) == 5, 'outputs of the base model'
    )

    start = ros_peer.node.create_client(Trigger, '/trainer_node/start')
    reply = ros_peer.call(start, Trigger.Request(), node=trainer)
    assert reply.success, reply.message
    # Refuses a second concurrent job.
    assert not ros_peer.call(start, Trigger.Request(), node=trainer).success

    events = lambda: [json.loads(m.data) for m in progress]  # noqa: E731
    streamer.stream_until(
        lambda: (
            any(e['event'] == 'swapped' for e in events())
            or any(e['event'] == 'failed' for e in events())
        ),
        'training to finish and the model to be swapped',
        timeout=240,
        period=0.2,
    )
    kinds = [e['event'] for e in events()]
    assert 'failed' not in kinds, events()[-1]
    assert 'train' in kinds and 'finished' in kinds
    assert any('step' in e for e in events())

    # The segmentation node now runs the fine-tuned model with the recording's 3 classes.
    streamer.stream_until(lambda: len(streamer.class_names()) == 3, 'new class list')
    n = len(labels)
    streamer.stream_until(lambda: len(labels) >= n + 2, 'outputs of the new model')
    last = np.frombuffer(bytes(labels[-1].data), np.uint8)
    assert last.max() < 3
    done = next(e for e in events() if e['event'] == 'finished')
    assert done['checkpoint'].startswith(str(tmp_path / 'training'))
    assert seg.interrupt() == 0
    assert trainer.interrupt() == 0


def test_a_killed_trainer_leaves_no_training_behind(launch_node, ros_peer, tmp_path):
    """SIGKILL to trainer_node (no clean-up runs): its job process and the job's data-loader
    workers die with it, checked in /proc within a bounded wait."""
    base = small_checkpoint(tmp_path / 'base.safetensors', num_classes=5, seed=3)
    recording = tmp_path / 'recording'
    write_recording(recording)
    trainer = launch_node(
        'trainer_node',
        params={
            'recordings': [str(recording)],
            'rgb_topic': TOPICS['rgb'],
            'depth_topic': TOPICS['depth'],
            'info_topic': TOPICS['info'],
            'label_topic': TOPICS['label'],
            'base_checkpoint': str(base),
            'recipe': 'tiny_cpu',
            'output_dir': str(tmp_path / 'training'),
            'overrides': [
                'stages.0.steps=100000',  # still training when it is killed
                'stages.0.batch_size=2',
                'eval.every_steps=0',
                'augment.crop=null',
                'log_every=1',
                'data.num_workers=2',
                'data.val_split=train',
            ],
        },
    )
    progress = ros_peer.subscribe(String, '/trainer_node/progress')
    start = ros_peer.node.create_client(Trigger, '/trainer_node/start')
    assert ros_peer.call(start, Trigger.Request(), node=trainer).success
    ros_peer.wait_for(
        lambda: any('step' in json.loads(m.data) for m in progress),
        240,
        'the first training step (data loaders running)',
        trainer,
    )
    started = proc_tree.descendants(trainer.proc.pid)
    try:
        jobs = {p.pid for p in started if p.ppid == trainer.proc.pid}
        loaders = [p for p in started if p.ppid in jobs]
        assert len(loaders) >= 2, started  # the job process and its two loader workers
        trainer.proc.send_signal(signal.SIGKILL)
        trainer.proc.wait(timeout=30)
        assert proc_tree.wait_gone(started) == [], 'training processes outlived the node'
    finally:
        proc_tree.kill(started)
