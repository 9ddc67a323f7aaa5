"""Replay camera frames into the node over DDS, and record what the node publishes.

``RecordingPlayer`` republishes a recording's colour, depth and camera_info at their recorded
rate, restamping headers to the current clock (the node measures stamp-to-publish latency, so
stamps must share its clock; ``original_stamps`` maps each new stamp back). ``OutputRecorder``
subscribes with ``raw=True`` and writes the serialised messages straight into an mcap file, so
recording costs no deserialisation.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message

from rgbd_seg_ros.data.recordings import Recording
from rgbd_seg_ros.ros.conversions import restamp_cdr


def message_class(msgtype: str) -> Any:
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


@dataclass
class Frame:
    """Messages sharing one recorded stamp, in publish order."""

    stamp_ns: int
    messages: list[tuple[str, Any]] = field(default_factory=list)  # (output topic, msg)


def load_frames(path: str | Path, topic_map: dict[str, str]) -> list[Frame]:
    """Deserialise the mapped topics of a recording into frames grouped by header stamp."""
    frames: dict[int, Frame] = {}
    with Recording(path) as recording:
        for raw in recording.messages(topic_map):
            msg = deserialize_message(bytes(raw.data), message_class(raw.msgtype))
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            frames.setdefault(stamp, Frame(stamp)).messages.append((topic_map[raw.topic], msg))
    return [frames[s] for s in sorted(frames)]


class RecordingPlayer:
    """Publishes frames at their recorded rate with fresh stamps."""

    def __init__(self, node: Node, topics: Iterable[str], reliable: bool = True) -> None:
        qos = QoSProfile(
            depth=5,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        )
        self._node = node
        self._pubs: dict[str, Any] = {}
        self._qos = qos
        self._topics = set(topics)
        self.original_stamps: dict[int, int] = {}
        self.published = 0
        self._serialised: dict[int, tuple[Any, bytes]] = {}

    def publisher(self, topic: str, msg: Any) -> Any:
        if topic not in self._pubs:
            self._pubs[topic] = self._node.create_publisher(type(msg), topic, self._qos)
        return self._pubs[topic]

    def play(
        self, frames: list[Frame], rate_scale: float = 1.0, stop: threading.Event | None = None
    ) -> None:
        """Blocking: publish every frame on schedule (relative to the first one)."""
        if not frames:
            return
        first = frames[0].stamp_ns
        start = time.monotonic()
        clock = self._node.get_clock()
        for frame in frames:
            due = start + (frame.stamp_ns - first) / 1e9 / rate_scale
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop is not None and stop.is_set():
                return
            now = clock.now().nanoseconds
            self.original_stamps[now] = frame.stamp_ns
            for topic, msg in frame.messages:
                data = restamp_cdr(self._serialise(msg), now)
                self.publisher(topic, msg).publish(data)
            self.published += 1

    def _serialise(self, msg: Any) -> bytes:
        """Each message is serialised once; publishing then only patches the stamp bytes.

        Keyed by identity and holding the message, so a cycled recording reuses the bytes.
        """
        cached = self._serialised.get(id(msg))
        if cached is None or cached[0] is not msg:
            cached = (msg, serialize_message(msg))
            self._serialised[id(msg)] = cached
        return cached[1]


class OutputRecorder:
    """Writes every message of the given topics (serialised, as received) to an mcap file."""

    def __init__(
        self,
        node: Node,
        path: str | Path,
        topics: dict[str, str],
        latched: frozenset[str] = frozenset(),
    ) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self._store = get_typestore(Stores.ROS2_JAZZY)
        self._writer: Writer | None = Writer(
            Path(path), version=9, storage_plugin=StoragePlugin.MCAP
        )
        self._writer.open()
        self._lock = threading.Lock()
        self._connections: dict[str, Any] = {}
        self.received: dict[str, list[int]] = {topic: [] for topic in topics}
        self.last: dict[str, bytes] = {}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # Latched topics (published once, e.g. the class list) need a transient-local
        # subscription, or a recorder that joins after the publish never sees them.
        latched_qos = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        for topic, msgtype in topics.items():
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._store
            )
            node.create_subscription(
                message_class(msgtype),
                topic,
                functools.partial(self._on_message, topic),
                latched_qos if topic in latched else qos,
                raw=True,
            )

    def _on_message(self, topic: str, data: bytes) -> None:
        now = time.time_ns()
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(self._connections[topic], now, data)
            self.received[topic].append(now)
            self.last[topic] = data

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
