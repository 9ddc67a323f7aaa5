"""Helpers for the segmentation-node integration tests: checkpoints and a frame streamer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_frames import frame_triple
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec, save_checkpoint
from rgbd_seg_ros.backends.registry import build_backend
from rgbd_seg_ros.ros.topics import reliable_input_params

WIDTH, HEIGHT = 64, 48


def small_checkpoint(
    path: Path,
    num_classes: int = 5,
    seed: int = 0,
    palette: list[tuple[int, int, int]] | None = None,
) -> Path:
    """A real registered backend (SSMA, ResNet-18 experts), seeded random weights."""
    torch.manual_seed(seed)
    model = build_backend('ssma', num_classes=num_classes, encoder='resnet18', depth_channels=3)
    config = {k: v for k, v in vars(model.config).items()}
    meta = CheckpointMeta(
        backend='ssma',
        config=config,
        class_names=[f'class_{i}' for i in range(num_classes)],
        palette=palette or [],
        input_spec=InputSpec(depth_encoding='jet', depth_params={'max_depth_m': 10.0}),
        provenance={'made_by': 'integration test', 'seed': seed},
    )
    save_checkpoint(path, model, meta)
    return path


def diag_values(array: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for kv in array.status[0].values}


# Parameters of a node under test: CPU, frequent diagnostics, reliable inputs (the test's
# publishers send each frame once).
NODE_PARAMS = {
    'device': 'cpu',
    'diagnostics_period': 0.25,
    'slop': 0.01,
    **reliable_input_params(),
    'queue_size': 5,
}


class CompressedBytes(bytes):
    """A serialised CompressedImage, published as it is on the compressed colour topic."""


@dataclass
class Streamer:
    """The test's camera: publishes triples and records what the node sends back."""

    peer: object
    node_proc: object
    pubs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    stamp_ns: int = 1_000_000_000
    sent: int = 0
    namespace: str = ''  # the node's namespace ('/cam1'): topics are looked up below it
    rgb_topic: str = ''  # the colour topic when remapped ('': <namespace>/rgb/image_rect_color)

    def __post_init__(self) -> None:
        node = self.peer.node
        ns = self.namespace
        rgb_topic = self.rgb_topic or f'{ns}/rgb/image_rect_color'
        self.pubs = {
            'rgb': node.create_publisher(Image, rgb_topic, 10),
            'rgb_compressed': node.create_publisher(
                CompressedImage, f'{rgb_topic}/compressed', 10
            ),
            'depth': node.create_publisher(Image, f'{ns}/depth_registered/image_rect', 10),
            'info': node.create_publisher(CameraInfo, f'{ns}/rgb/camera_info', 10),
        }
        self.diagnostics = self.peer.subscribe(DiagnosticArray, '/diagnostics')
        latched = QoSProfile(
            depth=1,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        self.classes = self.peer.subscribe(
            String, f'{self.namespace}/segmentation/classes', latched
        )

    def listen(self, name: str, msg_type) -> list:
        self.outputs[name] = self.peer.subscribe(msg_type, f'{self.namespace}/segmentation/{name}')
        return self.outputs[name]

    def wait_connected(self, colour: str = 'rgb') -> None:
        """Wait for the node's subscriptions: ``colour`` ('rgb'/'rgb_compressed'), depth, info."""
        for name in (colour, 'depth', 'info'):
            self.peer.wait_for_subscribers(self.pubs[name], node=self.node_proc)

    def publish(self, rgb=None, depth=None, info=None) -> None:
        if rgb is not None:
            compressed = isinstance(rgb, CompressedImage | CompressedBytes)
            self.pubs['rgb_compressed' if compressed else 'rgb'].publish(rgb)
        if depth is not None:
            self.pubs['depth'].publish(depth)
        if info is not None:
            self.pubs['info'].publish(info)

    def next_triple(self, **kwargs):
        self.stamp_ns += 33_333_333
        self.sent += 1
        return frame_triple(self.stamp_ns, WIDTH, HEIGHT, seed=self.sent % 7, **kwargs)

    def stream_until(
        self,
        predicate: Callable[[], bool],
        what: str,
        timeout: float = 90.0,
        period: float = 1 / 30,
        mutate: Callable | None = None,
    ) -> None:
        """Publish good triples at ~30 Hz until ``predicate`` holds (deadline, no fixed sleep)."""
        deadline = time.monotonic() + timeout

        def step() -> bool:
            rgb, depth, info = self.next_triple()
            if mutate is not None:
                rgb, depth, info = mutate(rgb, depth, info)
            self.publish(rgb, depth, info)
            next_at = time.monotonic() + period
            while time.monotonic() < next_at:
                self.peer.executor.spin_once(timeout_sec=max(0.0, next_at - time.monotonic()))
            return predicate()

        self.peer.wait_for(step, max(1.0, deadline - time.monotonic()), what, self.node_proc)

    def latest_diag(self) -> dict[str, str]:
        return diag_values(self.diagnostics[-1]) if self.diagnostics else {}

    def class_names(self) -> list[str]:
        if not self.classes:
            return []
        return [c['name'] for c in json.loads(self.classes[-1].data)['classes']]
