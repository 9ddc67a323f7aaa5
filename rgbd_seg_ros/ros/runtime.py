"""Process-level plumbing shared by the node executables: spin, stop on a signal, exit 0.

Launch systems and our tests expect exit code 0 and no traceback on SIGINT or SIGTERM, any
number of them, at any moment. rclpy's own handlers give neither: they shut the context down
from another thread while the worker may still publish (``publisher's context is invalid``)
and chain to Python's handler, whose KeyboardInterrupt lands wherever the main thread is.
So rclpy is initialised without signal handlers and ``core.stop_request.StopRequest`` takes
them: the main thread spins in short slices until a stop is requested, then stops the parts
in order (the node's worker, the executor and its callbacks, the node, the context) while
further signals are ignored.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from rgbd_seg_ros.core.parent_death import die_with_parent
from rgbd_seg_ros.core.stop_request import StopRequest, StopRequested
from rgbd_seg_ros.modes import ExecutorKind

# Longest time between a signal and the main loop seeing it (Python runs a signal handler
# only when the main thread is back in the interpreter, so the wait is sliced).
SPIN_SLICE_S = 0.1


def run_node(
    factory: Callable[[], Node],
    args: Sequence[str] | None = None,
    num_threads: int = 4,
    stop: StopRequest | None = None,
    executor_kind: Callable[[Node], ExecutorKind] | None = None,
) -> int:
    """Create the node, spin it on ``num_threads`` executor threads (1: one thread, no pool),
    stop cleanly on signals.

    ``stop`` is the request an entry point installed before its imports; without one it is
    installed here. ``executor_kind(node)`` chooses the one-thread executor from the node's
    parameters (default: rclpy's SingleThreadedExecutor).
    """
    stop = stop if stop is not None else StopRequest()
    node: Node | None = None
    executor: Executor | None = None
    try:
        stop.install()
        die_with_parent()
        rclpy.init(
            args=list(args) if args is not None else sys.argv,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        if not stop.requested:
            node = factory()
            kind = executor_kind(node) if executor_kind is not None else 'single'
            executor = make_executor(kind, num_threads, node.get_logger().warning)
            node.get_logger().info(f'executor: {type(executor).__name__}')
            executor.add_node(node)
        stop.spinning()
        while not stop.requested and executor is not None:
            executor.spin_once(timeout_sec=SPIN_SLICE_S)
    except StopRequested:
        pass
    finally:
        stop.spinning()
        _stop(node, executor)
    return 0


def make_executor(
    kind: ExecutorKind, num_threads: int, warn: Callable[[str], object] = print
) -> Executor:
    """The executor of a node: a pool of ``num_threads`` (more than one), else the one-thread
    executor ``kind`` asks for.

    rclpy's EventsExecutor (``rclpy.experimental``) dispatches in C++: taking the node's
    90 input messages a second (640x480 colour, depth and camera_info at 30 Hz) costs about two
    thirds of the CPU of the Python SingleThreadedExecutor, and the worker gets the GIL back
    sooner. An rclpy without it (Humble, early Jazzy releases) gets the SingleThreadedExecutor;
    asking for 'events' there is ``warn``ed about, not fatal, as both give the same outputs.
    """
    if num_threads != 1:
        return MultiThreadedExecutor(num_threads=num_threads)
    if kind != 'single':
        events = events_executor()
        if events is not None:
            return events
        if kind == 'events':
            warn(
                "executor 'events' asked for, but this rclpy has no "
                'rclpy.experimental.EventsExecutor: using the SingleThreadedExecutor'
            )
    return SingleThreadedExecutor()


def events_executor() -> Executor | None:
    """rclpy's EventsExecutor, or None where this rclpy has none."""
    try:
        experimental = importlib.import_module('rclpy.experimental')
    except ImportError:
        return None
    factory = getattr(experimental, 'EventsExecutor', None)
    if factory is None:
        return None
    executor: Executor = factory()
    return executor


def _stop(node: Node | None, executor: Executor | None) -> None:
    """Stop in dependency order: nothing may use the context after it is gone."""
    if node is not None:
        close = getattr(node, 'close', None)
        if callable(close):
            close()  # the worker: it publishes, so it stops first
    if executor is not None:
        executor.shutdown()  # waits for callbacks already running
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()
