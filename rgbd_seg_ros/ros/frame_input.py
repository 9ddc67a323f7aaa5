"""Turn a paired colour/depth/camera_info triple into arrays the engine accepts.

Each message is read with the rules of core/messages.py (the converter's rules too); the
cross-checks between the three are the node's own. Each check raises FrameError with a message
naming what disagreed, so the node can skip the frame with a throttled warning and a counter
instead of crashing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from rgbd_seg_ros.core import messages
from rgbd_seg_ros.core.pairing import Triple
from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.ros import conversions


@dataclass
class FrameArrays:
    """Colour (HxWx3 uint8), depth at the colour size (uint16 mm or float32 m), K (3x3)."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray


class InputError(FrameError):
    """A FrameError tagged with the input it concerns, for the node's skip counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


T = TypeVar('T')


def _stage(reason: str, decode: Callable[..., T], *args: object) -> T:
    try:
        return decode(*args)
    except InputError:
        raise
    except (FrameError, ValueError) as err:
        raise InputError(reason, str(err)) from err


def deserialize_triple(triple: Triple) -> tuple[Any, Any, Any]:
    """The paired (type, bytes) payloads as messages; only the frame being segmented pays."""
    out: list[Any] = []
    for reason, stamped in (
        ('bad_colour', triple.rgb),
        ('bad_depth', triple.depth),
        ('bad_camera_info', triple.info),
    ):
        if stamped.payload is None:  # a pair made without depth (depth dropout)
            out.append(None)
            continue
        msg_type, data = stamped.payload
        out.append(_stage(reason, conversions.deserialize, msg_type, data))
    return out[0], out[1], out[2]


def frame_arrays(
    colour: Image | CompressedImage, depth: Image | None, info: CameraInfo, tolerance: float
) -> FrameArrays:
    """Decode and cross-check one triple; see the module docstring. No depth message (a pair
    made while depth dropped out) is depth without a valid pixel."""
    rgb = _stage('bad_colour', messages.decode_colour, colour)
    if depth is None:
        depth_arr: np.ndarray = np.zeros(rgb.shape[:2], np.uint16)
    else:
        depth_arr = _stage('bad_depth', messages.decode_depth, depth)
    intrinsics = _stage('bad_camera_info', messages.camera_intrinsics, info)
    height, width = rgb.shape[:2]
    if (intrinsics.width, intrinsics.height) != (width, height):
        raise InputError(
            'bad_camera_info',
            f'camera_info is {intrinsics.width}x{intrinsics.height} but the colour image is '
            f'{width}x{height}',
        )
    if depth_arr.shape != (height, width):
        depth_arr = _stage('bad_depth', _resample_depth, depth_arr, width, height, tolerance)
    return FrameArrays(rgb, depth_arr, intrinsics.K)


def _resample_depth(depth: np.ndarray, width: int, height: int, tolerance: float) -> np.ndarray:
    """Nearest-neighbour resample of a depth image with the same field of view as the colour.

    Different aspect ratios mean different fields of view (not registered to the colour
    camera): that is refused rather than silently misaligned.
    """
    d_h, d_w = depth.shape
    aspect_colour, aspect_depth = width / height, d_w / d_h
    if abs(aspect_depth / aspect_colour - 1.0) > tolerance:
        raise FrameError(
            f'depth is {d_w}x{d_h} but colour is {width}x{height}: different '
            'aspect ratios, so depth is not registered to the colour camera'
        )
    return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
