"""Synthetic sensor messages for tests (rclpy types), built from numpy arrays."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from rgbd_seg_ros.ros.conversions import image_msg


def header(stamp_ns: int, frame_id: str = 'camera_color_optical_frame') -> Header:
    h = Header()
    h.stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    h.frame_id = frame_id
    return h


def intrinsics(width: int, height: int, fov_scale: float = 1.0) -> np.ndarray:
    f = 0.8 * width * fov_scale
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def camera_info(K: np.ndarray, width: int, height: int, stamp_ns: int) -> CameraInfo:
    msg = CameraInfo()
    msg.header = header(stamp_ns)
    msg.width, msg.height = width, height
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = [float(v) for v in K.reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:3, :3] = K
    msg.p = [float(v) for v in P.reshape(-1)]
    return msg


def gradient_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    image[: height // 2] //= 2
    return image


def planar_depth_mm(width: int, height: int, near_mm: int = 800, far_mm: int = 3000) -> np.ndarray:
    rows = np.linspace(far_mm, near_mm, height, dtype=np.float32)[:, None]
    return np.repeat(rows, width, axis=1).astype(np.uint16)


def frame_triple(
    stamp_ns: int, width: int = 64, height: int = 48, seed: int = 0
) -> tuple[Image, Image, CameraInfo]:
    """A consistent colour/depth/camera_info triple sharing one stamp."""
    h = header(stamp_ns)
    rgb = image_msg(gradient_rgb(width, height, seed), 'rgb8', h)
    depth = image_msg(planar_depth_mm(width, height), '16UC1', h)
    info = camera_info(intrinsics(width, height), width, height, stamp_ns)
    return rgb, depth, info
