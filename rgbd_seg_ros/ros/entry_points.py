"""Console-script entry points of the nodes: signal handling first, heavy imports after.

Importing a node module takes seconds (rclpy, torch, the backends). A SIGINT in that time
(Ctrl-C right after ``ros2 launch``) would raise KeyboardInterrupt inside some import and end
the process with a traceback; so each entry point installs the stop request before it imports
its node, and a signal during the import ends the process with status 0. This is why the
node modules are imported inside the functions, not for a cycle.
"""

from __future__ import annotations

from rgbd_seg_ros.core.stop_request import StopRequest, StopRequested


def segmentation_node() -> int:
    """``segmentation_node``: the segmentation node."""
    stop = StopRequest()
    try:
        stop.install()
        from rgbd_seg_ros.core.large_blocks import return_large_blocks
        from rgbd_seg_ros.ros.runtime import run_node
        from rgbd_seg_ros.ros.segmentation_node import EXECUTOR_THREADS, SegmentationNode

        return_large_blocks()  # a few oversize frames must not keep the process larger for good
        return run_node(SegmentationNode, num_threads=EXECUTOR_THREADS, stop=stop)
    except StopRequested:
        return 0


def trainer_node() -> int:
    """``trainer_node``: the fine-tuning node."""
    stop = StopRequest()
    try:
        stop.install()
        from rgbd_seg_ros.ros.runtime import run_node
        from rgbd_seg_ros.ros.trainer_node import TrainerNode

        return run_node(TrainerNode, stop=stop)
    except StopRequested:
        return 0
