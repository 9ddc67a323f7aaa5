"""Process-level plumbing shared by the node executables.

Jazzy's rclpy installs its own SIGINT/SIGTERM handlers; a plain ``rclpy.spin`` then raises
``ExternalShutdownException`` and the process exits 1 with a traceback. Launch systems and
our tests expect a clean exit code 0 on either signal, which this wrapper provides.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node

from rgbd_seg_ros.core.parent_death import die_with_parent


def run_node(
    factory: Callable[[], Node], args: Sequence[str] | None = None, num_threads: int = 4
) -> int:
    """Create the node, spin it on ``num_threads`` executor threads (1: the single-threaded
    executor, no thread pool), shut down cleanly on signals."""
    die_with_parent()
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node: Node | None = None
    executor: Executor = (
        SingleThreadedExecutor() if num_threads == 1 else MultiThreadedExecutor(num_threads)
    )
    try:
        node = factory()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, 'close', None)
            if callable(close):
                close()
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return 0
