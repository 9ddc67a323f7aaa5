"""Turn a paired colour/depth/camera_info triple into arrays the engine accepts.

Each message is read with the rules of core/messages.py (the converter's rules too); the
cross-checks between the three are the node's own. Each check raises FrameError with a message
naming what disagreed, so the node can skip the frame with a throttled warning and a counter
instead of crashing.

Sizes are bounded before decoding (``core/image_header.py``); a frame within those bounds but
beyond the node's own (``core/input_size.py``) is scaled down here, with its intrinsics, or
refused before it is decoded, as the node's ``oversize_policy`` says. What a frame gets noted
for while still being processed (scaled down; colour and depth from different frames) travels
with its arrays as ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from rgbd_seg_ros.core import cdr_layout, messages
from rgbd_seg_ros.core.image_header import MAX_PIXELS, ImageTooLargeError
from rgbd_seg_ros.core.input_size import InputBound, fitted_size
from rgbd_seg_ros.core.pairing import Triple
from rgbd_seg_ros.core.projection import scale_intrinsics
from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.ros import conversions


@dataclass
class FrameArrays:
    """Colour (HxWx3 uint8), depth at the colour size (uint16 mm or float32 m), K (3x3), and
    (counter name, detail) notes on a frame processed despite them."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    notes: tuple[tuple[str, str], ...] = ()


class InputError(FrameError):
    """A FrameError tagged with the input it concerns, for the node's skip counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


T = TypeVar('T')
NO_BOUND = InputBound()  # only the package's own bound on any image


def _stage(reason: str, decode: Callable[..., T], *args: object) -> T:
    try:
        return decode(*args)
    except InputError:
        raise
    except ImageTooLargeError as err:
        raise InputError('too_large', str(err)) from err
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
        out.append(_stage(reason, _deserialize_in_place, msg_type, data))
    return out[0], out[1], out[2]


class PixelsInPlace:
    """An image message whose ``data`` is a read-only view of the bytes it arrived in.

    Every other field is the deserialised message's own (``__getattr__``), so the decoders
    of core/messages.py, which read fields by name, take it as they take the message.
    """

    def __init__(self, message: Any, data: memoryview) -> None:
        self._message = message
        self.data = data

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set here. An instance made without __init__ (copy.copy,
        # pickle) has no _message yet: asking for it must fail, not recurse.
        if name == '_message':
            raise AttributeError(name)
        return getattr(self._message, name)


def _deserialize_in_place(msg_type: type, data: bytes) -> Any:
    """The message, its pixels (nearly all its bytes) left where they are: a 640x480 frame
    is 1.5 MB of colour and depth the worker would otherwise copy twice before decoding."""
    split = cdr_layout.split_payload(msg_type.__name__, data)
    if split is None:
        return conversions.deserialize(msg_type, data)
    prefix, pixels = split
    return PixelsInPlace(conversions.deserialize(msg_type, prefix), pixels)


def frame_arrays(
    colour: Image | CompressedImage,
    depth: Image | None,
    info: CameraInfo,
    tolerance: float,
    bound: InputBound = NO_BOUND,
) -> FrameArrays:
    """Decode and cross-check one triple; see the module docstring. No depth message (a pair
    made while depth dropped out) is depth without a valid pixel."""
    notes = _frame_id_notes(colour, depth) if depth is not None else ()
    # Refusing: nothing larger than the bound is decoded. Scaling down: the package's bound.
    decode_limit = bound.max_pixels if bound.policy == 'refuse' else MAX_PIXELS
    rgb = _stage('bad_colour', messages.decode_colour, colour, decode_limit)
    depth_arr: np.ndarray | None = None
    if depth is not None:
        depth_arr = _stage('bad_depth', messages.decode_depth, depth, decode_limit)
    intrinsics = _stage('bad_camera_info', messages.camera_intrinsics, info)
    height, width = rgb.shape[:2]
    if (intrinsics.width, intrinsics.height) != (width, height):
        raise InputError(
            'bad_camera_info',
            f'camera_info is {intrinsics.width}x{intrinsics.height} but the colour image is '
            f'{width}x{height}',
        )
    K = intrinsics.K
    target = fitted_size(height, width, bound.max_pixels)
    if target != (height, width):
        rgb = cv2.resize(rgb, target[::-1], interpolation=cv2.INTER_AREA)
        K = scale_intrinsics(K, (height, width), target)
        notes += (
            (
                'downscaled_input',
                f'{width}x{height} is above max_input_pixels ({bound.max_pixels}): '
                f'processed at {target[1]}x{target[0]}',
            ),
        )
        height, width = target
    if depth_arr is None:
        depth_arr = np.zeros((height, width), np.uint16)
    elif depth_arr.shape != (height, width):
        depth_arr = _stage('bad_depth', _resample_depth, depth_arr, width, height, tolerance)
    return FrameArrays(rgb, depth_arr, K, notes)


def _frame_id_notes(colour: Any, depth: Any) -> tuple[tuple[str, str], ...]:
    """Colour and depth from different frames: a depth image not registered to the colour
    camera, most likely. Still processed (the frame may only be misnamed, and refusing would
    stop a working camera over a name), but counted and warned about: the cloud and every
    output are in the colour frame."""
    colour_frame, depth_frame = colour.header.frame_id, depth.header.frame_id
    if colour_frame == depth_frame:
        return ()
    detail = f'colour is in {colour_frame!r} but depth in {depth_frame!r}'
    return (('frame_id_mismatch', detail + '; outputs are in the colour frame'),)


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
