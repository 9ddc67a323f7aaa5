"""rgbd_seg_ros: RGB-D semantic segmentation for ROS 2.

The package is layered (see DESIGN.md): ``core`` (numpy) and ``backends`` (torch) never import
ROS; ``ros`` is the only sub-package that touches rclpy and message types.
"""

__version__ = '0.1.0'
