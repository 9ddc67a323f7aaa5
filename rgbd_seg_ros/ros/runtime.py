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

import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from rgbd_seg_ros.core.parent_death import die_with_parent
from rgbd_seg_ros.core.stop_request import StopRequest, StopRequested

# Longest time between a signal and the main loop seeing it (Python runs a signal handler
# only when the main thread is back in the interpreter, so the wait is sliced).
SPIN_SLICE_S = 0.1


def run_node(
    factory: Callable[[], Node],
    args: Sequence[str] | None = None,
    num_threads: int = 4,
    stop: StopRequest | None = None,
) -> int:
    """Create the node, spin it on ``num_threads`` executor threads (1: the single-threaded
    executor, no thread pool), stop cleanly on signals.

    ``stop`` is the request an entry point installed before its imports; without one it is
    installed here.
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
        executor = (
            SingleThreadedExecutor()
            if num_threads == 1
            else MultiThreadedExecutor(num_threads=num_threads)
        )
        if not stop.requested:
            node = factory()
            executor.add_node(node)
        stop.spinning()
        while not stop.requested:
            executor.spin_once(timeout_sec=SPIN_SLICE_S)
    except StopRequested:
        pass
    finally:
        stop.spinning()
        _stop(node, executor)
    return 0


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
