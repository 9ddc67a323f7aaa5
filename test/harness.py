"""Real-DDS test harness: node subprocesses plus an in-process rclpy participant.

* ``launch_node`` starts a project executable (its console script) with ``--ros-args`` and
  stops *and reaps* it at teardown, even when the test failed: SIGINT first (the node must
  exit 0), then SIGTERM, then SIGKILL.
* ``ros_peer`` is the test's own rclpy context and node, spun on demand by ``wait_for`` so
  tests wait on conditions with deadlines instead of sleeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rgbd_seg_ros.ros.process import NodeProcess

DEFAULT_TIMEOUT = 60.0


@pytest.fixture
def launch_node(tmp_path: Path, ros_env: dict[str, str]) -> Iterator[Callable[..., NodeProcess]]:
    """Factory: ``launch_node('segmentation_node', params={...}, remap={...})``."""
    started: list[NodeProcess] = []

    def launch(
        executable: str,
        params: dict[str, Any] | Path | None = None,
        remap: dict[str, str] | None = None,
        name: str | None = None,
        own_group: bool = False,
    ) -> NodeProcess:
        remap = dict(remap or {})
        if name:
            remap['__node'] = name
        node = NodeProcess.start(
            executable, tmp_path, ros_env, params, remap, f'_{len(started)}', own_group
        )
        started.append(node)
        return node

    yield launch
    for node in started:
        if node.alive():
            node.interrupt(timeout=10.0)


@dataclass
class RosPeer:
    """The test's own participant: a node in a private context and a one-thread executor."""

    context: Any
    node: Any
    executor: Any
    received: dict[str, list[Any]] = field(default_factory=dict)

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 10) -> list[Any]:
        """Collect every message on ``topic`` into the returned list."""
        bucket = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, bucket.append, qos)
        return bucket

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = DEFAULT_TIMEOUT,
        what: str = 'condition',
        node: NodeProcess | None = None,
    ) -> Any:
        """Spin until ``predicate()`` is truthy; fail with ``what`` (and the node log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if node is not None and not node.alive():
                pytest.fail(
                    f'{node.name} exited ({node.proc.returncode}) while waiting for '
                    f'{what}\n--- node log ---\n{node.log()[-4000:]}'
                )
            self.executor.spin_once(timeout_sec=0.05)
        log = f'\n--- node log ---\n{node.log()[-4000:]}' if node else ''
        pytest.fail(f'timed out after {timeout:.0f}s waiting for {what}{log}')

    def wait_for_subscribers(
        self,
        publisher: Any,
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        node: NodeProcess | None = None,
    ) -> None:
        self.wait_for(
            lambda: publisher.get_subscription_count() >= count,
            timeout,
            f'{count} subscriber(s) on {publisher.topic_name}',
            node,
        )

    def call(
        self,
        client: Any,
        request: Any,
        timeout: float = DEFAULT_TIMEOUT,
        node: NodeProcess | None = None,
    ) -> Any:
        """Call a service synchronously by spinning this participant."""
        self.wait_for(client.service_is_ready, timeout, f'service {client.srv_name}', node)
        future = client.call_async(request)
        self.wait_for(future.done, timeout, f'reply from {client.srv_name}', node)
        return future.result()


@pytest.fixture
def ros_peer() -> Iterator[RosPeer]:
    """An in-process rclpy participant on the session's loopback domain."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f'test_peer_{os.getpid()}', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield RosPeer(context, node, executor)
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)
