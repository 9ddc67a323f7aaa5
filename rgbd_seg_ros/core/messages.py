"""What the package accepts from ``sensor_msgs`` messages, decided once for every reader.

The live node (rclpy messages) and the recording converter (rosbags dataclasses of ROS 2 and
ROS 1 recordings) read the same fields, so they must accept and refuse the same input: a frame
the node segments is a frame the converter writes, and the other way round. The functions here
read the fields by attribute and never import rclpy or rosbags.

One function per rule:

* :func:`decode_colour`: raw colour encodings (:data:`COLOUR_ENCODINGS`) or a jpeg/png
  ``CompressedImage``, as RGB uint8 HxWx3;
* :func:`decode_depth`: raw depth encodings (:data:`DEPTH_ENCODINGS`: 16-bit millimetres,
  float metres), compressed_depth_image_transport payloads or a 16-bit PNG, as uint16 mm or
  float32 m HxW; :func:`decode_depth_mm` adds the dataset's conversion to millimetres;
* :func:`decode_labels`: raw class-id encodings (:data:`LABEL_ENCODINGS`) or a lossless PNG;
* :func:`camera_intrinsics`: the pinhole model of a ``CameraInfo`` (P for rectified images).

Every size is bounded before anything is decoded (raw sizes and the sizes compressed headers
declare, :mod:`rgbd_seg_ros.core.image_header`); ``max_pixels`` lets a reader lower the bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeGuard, cast

import numpy as np

from rgbd_seg_ros.core import image_codec
from rgbd_seg_ros.core.image_header import MAX_PIXELS
from rgbd_seg_ros.errors import FrameError

#: Raw encodings a colour topic may use (single-channel 8-bit is grey, replicated to RGB).
COLOUR_ENCODINGS: tuple[str, ...] = (
    'rgb8',
    'bgr8',
    'rgba8',
    'bgra8',
    '8UC3',
    '8UC4',
    'mono8',
    '8UC1',
)
#: Raw encodings a depth topic may use: 16-bit millimetres or float metres.
DEPTH_ENCODINGS: tuple[str, ...] = ('16UC1', 'mono16', '32FC1')
#: Raw encodings a label topic may use: integer class ids.
LABEL_ENCODINGS: tuple[str, ...] = ('mono8', '8UC1', 'mono16', '16UC1')


class ImageFields(Protocol):
    """The fields of ``sensor_msgs/Image`` the decoders read."""

    @property
    def encoding(self) -> str: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def is_bigendian(self) -> int: ...
    @property
    def data(self) -> object: ...


class CompressedFields(Protocol):
    """The fields of ``sensor_msgs/CompressedImage`` the decoders read."""

    @property
    def format(self) -> str: ...
    @property
    def data(self) -> object: ...


class CameraInfoFields(Protocol):
    """The size fields of ``sensor_msgs/CameraInfo``; the matrices are ``k``/``p`` (ROS 2) or
    ``K``/``P`` (ROS 1)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


AnyImage = ImageFields | CompressedFields


@dataclass(frozen=True)
class Intrinsics:
    """A usable pinhole model: K (3x3 float64, a private copy) for a width x height image.

    K is the matrix that back-projects the image: P's left 3x3 when the camera_info has a
    projection, its K otherwise (see :func:`camera_intrinsics`).
    """

    K: np.ndarray
    width: int
    height: int


def is_compressed(msg: object) -> TypeGuard[CompressedFields]:
    """True for a ``CompressedImage`` (it has ``format``; a raw ``Image`` has ``encoding``)."""
    return hasattr(msg, 'format')


def _decode_compressed(
    msg: CompressedFields, *, depth: bool, mono_as_rgb: bool, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    fmt = str(msg.format)
    if depth and 'compresseddepth' in fmt.lower():
        return image_codec.decode_compressed_depth(fmt, msg.data, max_pixels=max_pixels)
    return image_codec.decode_compressed(
        fmt, msg.data, mono_as_rgb=mono_as_rgb, max_pixels=max_pixels
    )


def _decode_raw(
    msg: ImageFields,
    accepted: tuple[str, ...],
    role: str,
    *,
    mono_as_rgb: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    encoding = str(msg.encoding)
    if encoding not in accepted:
        raise FrameError(f'{role} image encoding {encoding!r} is not one of {", ".join(accepted)}')
    return image_codec.decode_image(
        encoding,
        msg.height,
        msg.width,
        msg.step,
        msg.is_bigendian,
        msg.data,
        mono_as_rgb=mono_as_rgb,
        max_pixels=max_pixels,
    )


def decode_colour(msg: AnyImage, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A colour Image or CompressedImage as RGB uint8 HxWx3 (grey is replicated)."""
    if is_compressed(msg):
        image = _decode_compressed(msg, depth=False, mono_as_rgb=True, max_pixels=max_pixels)
    else:
        raw = cast(ImageFields, msg)
        image = _decode_raw(raw, COLOUR_ENCODINGS, 'colour', max_pixels=max_pixels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FrameError(f'colour image decoded to {image.dtype} {image.shape}; need 8-bit colour')
    return image


def decode_depth(msg: AnyImage, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A depth Image or CompressedImage as uint16 millimetres or float32 metres, HxW.

    Compressed depth is compressed_depth_image_transport's payload or a plain 16-bit PNG (in
    millimetres); an 8-bit or colour payload is refused: it cannot carry depth.
    """
    if is_compressed(msg):
        depth = _decode_compressed(msg, depth=True, mono_as_rgb=False, max_pixels=max_pixels)
        if depth.ndim != 2 or depth.dtype not in (np.uint16, np.float32):
            raise FrameError(
                f'depth CompressedImage ({msg.format}) is not a 16-bit single-channel image'
            )
        return depth
    return _decode_raw(cast(ImageFields, msg), DEPTH_ENCODINGS, 'depth', max_pixels=max_pixels)


def decode_depth_mm(msg: AnyImage) -> np.ndarray:
    """:func:`decode_depth` in uint16 millimetres, 0 where invalid (the dataset's depth)."""
    return image_codec.depth_to_millimetres(decode_depth(msg))


def decode_labels(msg: AnyImage) -> np.ndarray:
    """A label Image or lossless (png) CompressedImage as integer ids HxW (uint8 or uint16)."""
    if is_compressed(msg):
        if 'png' not in str(msg.format).lower():
            raise FrameError(f'label images must be lossless (png), got {msg.format!r}')
        labels = _decode_compressed(msg, depth=False, mono_as_rgb=False)
    else:
        labels = _decode_raw(cast(ImageFields, msg), LABEL_ENCODINGS, 'label', mono_as_rgb=False)
    if labels.ndim != 2:
        raise FrameError(f'label image must be single-channel, got shape {labels.shape}')
    return labels


def _matrix_field(msg: object, names: tuple[str, ...]) -> object | None:
    # ROS 2 spells the matrices ``k``/``p``; ROS 1 recordings (read with rosbags) ``K``/``P``.
    for name in names:
        value: object | None = getattr(msg, name, None)
        if value is not None:
            return value
    return None


def _read_matrix(
    msg: object, names: tuple[str, ...], shape: tuple[int, int], *, required: bool
) -> np.ndarray:
    """The matrix ``names`` of ``msg``; all zero (unset) when it is absent and not required."""
    value = _matrix_field(msg, names)
    if value is None:
        if required:
            raise FrameError(f'camera_info has no matrix {names[0]}')
        return np.zeros(shape)
    return np.array(value, dtype=np.float64).reshape(shape)


def camera_intrinsics(msg: CameraInfoFields) -> Intrinsics:
    """The intrinsics of a ``CameraInfo``, or FrameError when it cannot describe an image.

    The model is the projection P when P is set, K when P is all zero. The node's inputs are
    rectified images, and a rectified image is the image P projects to (sensor_msgs/CameraInfo,
    image_geometry and depth_image_proc all back-project it with P); K describes the raw image
    and can differ from P by several percent. P's translation column (a stereo baseline) is not
    part of the model: a depth image registered to this camera is in this camera's frame.

    Usable means: K and P hold finite numbers (a NaN anywhere means a broken calibration, and
    the node would republish it), the model's focal lengths are positive (zero is how an
    uncalibrated driver says "unknown") and the image size is not zero.
    """
    try:
        K = _read_matrix(msg, ('k', 'K'), (3, 3), required=True)
        P = _read_matrix(msg, ('p', 'P'), (3, 4), required=False)
        width, height = int(msg.width), int(msg.height)
    except (TypeError, ValueError) as err:
        raise FrameError(f'camera_info is malformed: {err}') from err
    for name, matrix in (('K', K), ('P', P)):
        if not np.isfinite(matrix).all():
            raise FrameError(f'camera_info {name} holds NaN or infinite values')
    source, model = ('P', P[:, :3].copy()) if P.any() else ('K', K)
    if not (model[0, 0] > 0 and model[1, 1] > 0):
        raise FrameError(
            f'camera_info has no calibration ({source} focal lengths {model[0, 0]:g}, '
            f'{model[1, 1]:g}; both must be positive)'
        )
    if width <= 0 or height <= 0:
        raise FrameError(f'camera_info has no image size ({width}x{height})')
    return Intrinsics(model, width, height)
