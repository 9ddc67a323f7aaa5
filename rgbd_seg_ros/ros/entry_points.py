"""Console-script entry points of the nodes: signal handling first, heavy imports after.

Importing a node module takes seconds (rclpy, torch, the backends). A SIGINT in that time
(Ctrl-C right after ``ros2 launch``) would raise KeyboardInterrupt inside some import and end
the process with a traceback; so each entry point installs the stop request before it imports
its node, and a signal during the import ends the process with status 0. This is why the
node modules are imported inside the functions, not for a cycle.

Each entry point ends through :func:`~rgbd_seg_ros.core.process_exit.exit_process`: a stop
during a model load leaves the load on a daemon thread inside torch, and a plain interpreter
teardown would abort the process there (see that module).
"""

from __future__ import annotations

from rgbd_seg_ros.core.process_exit import exit_process
from rgbd_seg_ros.core.stop_request import StopRequest, StopRequested


def segmentation_node() -> int:
    """``segmentation_node``: the segmentation node."""
    stop = StopRequest()
    try:
        stop.install()
        from rgbd_seg_ros.core.large_blocks import return_large_blocks
        from rgbd_seg_ros.ros.runtime import run_node
        from rgbd_seg_ros.ros.segmentation_node import (
            EXECUTOR_THREADS,
            SegmentationNode,
            executor_kind,
        )

        return_large_blocks()  # a few oversize frames must not keep the process larger for good
        code = run_node(
            SegmentationNode,
            num_threads=EXECUTOR_THREADS,
            stop=stop,
            executor_kind=executor_kind,
        )
    except StopRequested:
        code = 0
    stop.settle()
    return exit_process(code)


def trainer_node() -> int:
    """``trainer_node``: the fine-tuning node."""
    stop = StopRequest()
    try:
        stop.install()
        from rgbd_seg_ros.ros.runtime import run_node
        from rgbd_seg_ros.ros.trainer_node import TrainerNode

        code = run_node(TrainerNode, stop=stop)
    except StopRequested:
        code = 0
    stop.settle()
    return exit_process(code)
