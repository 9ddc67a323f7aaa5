"""rgbd_seg_ros: RGB-D semantic segmentation for ROS 2.

The package is layered (doc/design.md §1): ``core`` (numpy) and ``backends`` (torch) never
import ROS; ``ros`` is the only library sub-package that touches rclpy and message types
(``tools`` and ``cli`` sit above the library).
"""

__version__ = '0.1.0'
