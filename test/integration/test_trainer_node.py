"""trainer_node end to end: a recording written by the test, ~/start, progress messages, the
quality gate, and the segmentation node hot-swapping to the fine-tuned model with the
recording's class set only when it is better than the model it serves."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import proc_tree
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from node_fixtures import HEIGHT, WIDTH, Streamer, small_checkpoint
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter
from ros_frames import intrinsics
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from stop_signals import assert_clean_exit, send_burst

from rgbd_seg_ros.backends.checkpoint import (
    CheckpointMeta,
    InputSpec,
    build_from_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.data.rosbag_messages import RecordingWriter
from rgbd_seg_ros.ros.topics import reliable_input_params

pytestmark = [pytest.mark.ros, pytest.mark.slow]

TOPICS = {
    'rgb': '/cam/color/image_raw',
    'depth': '/cam/depth/image_raw',
    'info': '/cam/color/camera_info',
    'label': '/cam/semantic',
}


def write_recording(path, frames: int = 12, first_id: int = 0) -> None:
    """Three classes split by depth: near, middle and far bands of a ramp, with label ids
    ``first_id`` .. ``first_id + 2``."""
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
            labels = (np.digitize(depth, [2000, 4000]) + first_id).astype(np.uint8)
            rgb = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            writer.write(TOPICS['rgb'], stamp, writer.image(rgb, 'rgb8', stamp))
            writer.write(TOPICS['depth'], stamp, writer.image(depth, '16UC1', stamp))
            writer.write(TOPICS['info'], stamp, writer.camera_info(K, WIDTH, HEIGHT, stamp))
            writer.write(TOPICS['label'], stamp, writer.image(labels, 'mono8', stamp))


def depth_checkpoint(path: Path, seed: int = 3) -> Path:
    """A small real backend that reads depth only (ERFNet encoder), random weights: a serving
    model made deliberately bad, and a base that learns the depth bands in a few steps."""
    torch.manual_seed(seed)
    model = build_backend('erfnet_enc', num_classes=3, modality='depth', depth_channels=1)
    meta = CheckpointMeta(
        backend='erfnet_enc',
        config=dict(vars(model.config)),
        class_names=['near', 'middle', 'far'],
        input_spec=InputSpec(depth_encoding='metric', depth_params={'max_depth_m': 10.0}),
        provenance={'made_by': 'integration test', 'seed': seed},
    )
    save_checkpoint(path, model, meta)
    return path


COMMON_OVERRIDES = [
    'stages.0.batch_size=2',
    'eval.every_steps=0',
    'eval.multiscale_at_end=false',
    'augment.enabled=false',
    'checkpoint_every=1000',
    'data.num_workers=0',
    'schedule.warmup_steps=0',
]
GOOD = ['stages.0.steps=12', 'optim.lr=1.0e-2', 'optim.encoder_lr=1.0e-2']
# One Adam step moves every weight by about the learning rate: a destroyed network.
BAD = ['stages.0.steps=1', 'optim.lr=1000.0', 'optim.encoder_lr=1000.0']


def set_params(peer, node_proc, node_name: str, **values) -> None:
    client = peer.node.create_client(SetParameters, f'/{node_name}/set_parameters')
    request = SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    )
    reply = peer.call(client, request, node=node_proc)
    assert all(r.successful for r in reply.results), [r.reason for r in reply.results]


def serving_checkpoint(peer, node_proc) -> str:
    client = peer.node.create_client(GetParameters, '/segmentation_node/get_parameters')
    reply = peer.call(client, GetParameters.Request(names=['checkpoint']), node=node_proc)
    return reply.values[0].string_value


def trainer_diagnostics(diagnostics: list) -> list:
    return [s for a in diagnostics for s in a.status if s.name == '/trainer_node: training']


def test_trainer_gates_the_hot_swap(launch_node, ros_peer, tmp_path):
    """A good candidate (fine-tuned from a deliberately bad serving model) is swapped in; a
    bad one (one step at a destructive learning rate) is refused and the good one keeps
    serving. The recording labels ids 1..3: the node publishes exactly those, no class 0."""
    serving = depth_checkpoint(tmp_path / 'degraded.safetensors')
    recording = tmp_path / 'recording'
    write_recording(recording, frames=24, first_id=1)
    seg = launch_node(
        'segmentation_node',
        params={
            'checkpoint': str(serving),
            'device': 'cpu',
            'diagnostics_period': 0.5,
            **reliable_input_params(),
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
            'base_checkpoint': str(serving),
            'recipe': 'tiny_cpu',
            'output_dir': str(tmp_path / 'training'),
            'overrides': COMMON_OVERRIDES + GOOD,
        },
    )
    progress = ros_peer.subscribe(String, '/trainer_node/progress')
    streamer = Streamer(ros_peer, seg)
    labels = streamer.listen('labels', Image)
    streamer.wait_connected()
    streamer.stream_until(
        lambda: len(labels) >= 2 and streamer.class_names() == ['near', 'middle', 'far'],
        'outputs of the serving model',
    )
    events = lambda: [json.loads(m.data) for m in progress]  # noqa: E731

    def run_job(outcome: str) -> dict:
        """~/start, then stream until the job ends in ``outcome`` (or fails)."""
        seen = len(progress)
        start = ros_peer.node.create_client(Trigger, '/trainer_node/start')
        reply = ros_peer.call(start, Trigger.Request(), node=trainer)
        assert reply.success, reply.message
        # Refuses a second concurrent job.
        assert not ros_peer.call(start, Trigger.Request(), node=trainer).success
        ends = ('swapped', 'swap_skipped', 'swap_refused', 'failed')
        streamer.stream_until(
            lambda: any(e['event'] in ends for e in events()[seen:]),
            f'the job to end in {outcome}',
            timeout=300,
            period=1.0,  # a frame a second: the training gets the CPU
        )
        mine = events()[seen:]
        kinds = [e['event'] for e in mine]
        assert 'failed' not in kinds, mine[-1]
        assert 'train' in kinds and 'finished' in kinds and 'gated' in kinds
        assert any('step' in e for e in mine)
        assert kinds[-1] == outcome, mine[-1]
        return mine[-1]

    # 1. Good candidate: beats the degraded serving model, swapped in.
    swapped = run_job('swapped')
    gate = swapped['gate']
    good = gate['candidate']
    assert good.startswith(str(tmp_path / 'training'))
    assert gate['serving'] == str(serving) and gate['split'] == 'test' and gate['frames'] >= 1
    assert gate['candidate_miou'] > gate['serving_miou']
    assert swapped['gate_decision'] == 'swap' and 'more than the margin' in swapped['gate_reason']
    print(f'good: candidate mIoU {gate["candidate_miou"]:.4f} vs serving {gate["serving_miou"]}')
    # Both figures are in the new checkpoint's metrics.
    assert read_checkpoint_meta(good).metrics['gate']['serving_miou'] == gate['serving_miou']
    # The segmentation node now serves it, with the recording's classes and label ids.
    streamer.stream_until(
        lambda: (
            len(streamer.class_names()) == 3
            and (json.loads(streamer.classes[-1].data)['checkpoint'] == good)
        ),
        'the new class list',
    )
    ids = [c['id'] for c in json.loads(streamer.classes[-1].data)['classes']]
    assert ids == [1, 2, 3] and 'class_0' not in streamer.class_names()
    n = len(labels)
    streamer.stream_until(lambda: len(labels) >= n + 2, 'outputs of the new model')
    last = np.frombuffer(bytes(labels[-1].data), np.uint8)
    assert set(np.unique(last).tolist()) <= {1, 2, 3}
    assert serving_checkpoint(ros_peer, seg) == good

    # 2. Bad candidate: fine-tuned from the good model, destroyed; the gate keeps the good one.
    set_params(
        ros_peer, trainer, 'trainer_node', base_checkpoint=good, overrides=COMMON_OVERRIDES + BAD
    )
    skipped = run_job('swap_skipped')
    gate = skipped['gate']
    print(f'bad: candidate mIoU {gate["candidate_miou"]} vs serving {gate["serving_miou"]:.4f}')
    assert gate['serving'] == good
    assert gate['candidate_miou'] is not None and gate['candidate_miou'] < gate['serving_miou']
    assert skipped['gate_decision'] == 'keep'
    assert skipped['gate_reason'].startswith('kept the serving model')
    assert (
        read_checkpoint_meta(gate['candidate']).metrics['gate']['candidate_miou']
        == (gate['candidate_miou'])
    )
    # /diagnostics says why, at WARN.
    streamer.stream_until(
        lambda: any(
            s.level == DiagnosticStatus.WARN and 'kept the serving model' in s.message
            for s in trainer_diagnostics(streamer.diagnostics)
        ),
        'the gate decision on /diagnostics',
    )
    assert serving_checkpoint(ros_peer, seg) == good  # never swapped
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


def ignored_signals(pid: int) -> int:
    """The SigIgn mask of ``pid`` (bit n-1: signal n is ignored)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('SigIgn:'):
            return int(line.split()[1], 16)
    return 0


def test_ctrl_c_cancels_the_job_cleanly(launch_node, ros_peer, tmp_path):
    """A terminal's Ctrl-C while the job trains: SIGINT to the whole group (node, job, data
    loaders), then the one launch forwards to the node. The node exits 0 without a
    traceback; the job is cancelled (not interrupted inside a checkpoint write): ~/progress
    says ``cancelled`` with its checkpoint, which loads and verifies."""
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
                'stages.0.steps=100000',  # still training at the Ctrl-C
                'stages.0.batch_size=2',
                'eval.every_steps=0',
                'augment.crop=null',
                'log_every=1',
                'data.num_workers=2',
                'data.val_split=train',
            ],
        },
        own_group=True,
    )
    progress = ros_peer.subscribe(String, '/trainer_node/progress')
    events = lambda: [json.loads(m.data) for m in progress]  # noqa: E731
    start = ros_peer.node.create_client(Trigger, '/trainer_node/start')
    assert ros_peer.call(start, Trigger.Request(), node=trainer).success
    ros_peer.wait_for(
        lambda: any('step' in e for e in events()), 240, 'the first training step', trainer
    )
    jobs = [p for p in proc_tree.descendants(trainer.proc.pid) if p.ppid == trainer.proc.pid]
    assert jobs, 'no job process'
    assert all(ignored_signals(p.pid) & (1 << (signal.SIGINT - 1)) for p in jobs), jobs
    started = proc_tree.descendants(trainer.proc.pid)
    try:
        os.killpg(trainer.proc.pid, signal.SIGINT)  # the terminal's, to the whole group
        ros_peer.spin_for(0.005)
        # then what launch forwards to the node, and an impatient second Ctrl-C
        send_burst(trainer.proc, (signal.SIGINT, signal.SIGINT), (0.3,), ros_peer.spin_for)
        assert_clean_exit(trainer, timeout=120)
        assert proc_tree.wait_gone(started) == [], 'training processes outlived the node'
    finally:
        proc_tree.kill(started)
    ros_peer.wait_for(
        lambda: any(e['event'] == 'cancelled' for e in events()), 30, '"cancelled" on ~/progress'
    )
    cancelled = next(e for e in events() if e['event'] == 'cancelled')
    assert 'failed' not in [e['event'] for e in events()]
    checkpoint = Path(cancelled['checkpoint'])
    assert checkpoint.is_file() and checkpoint.is_relative_to(tmp_path / 'training')
    _model, meta = build_from_checkpoint(checkpoint)  # verified: digest, shapes, strict load
    assert meta.backend == 'ssma' and meta.num_classes >= 1
    assert not list(checkpoint.parent.glob('.*.tmp')), 'a checkpoint write was left half done'
