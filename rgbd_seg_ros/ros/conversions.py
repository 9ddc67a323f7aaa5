"""ROS message <-> numpy conversions (our small cv_bridge/sensor_msgs_py equivalents).

Reading input messages into arrays lives in core/messages.py, so the recording converter
applies the same rules; this module builds output messages and handles serialised bytes,
always moving whole buffers (``tobytes`` into ``msg.data``: assigning a numpy array
element-wise costs ~100 ms per VGA image).
"""

from __future__ import annotations

import struct

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from rgbd_seg_ros.core import cdr_layout
from rgbd_seg_ros.core.cloud import CLOUD_FIELDS, POINT_STEP
from rgbd_seg_ros.core.projection import scale_camera_matrix
from rgbd_seg_ros.errors import FrameError


def cdr_stamp(data: bytes) -> tuple[int, int]:
    """Header stamp (sec, nanosec) of a serialised message whose first field is std_msgs/Header.

    CDR puts a 4-byte encapsulation header first (byte 1: 0 big-endian, 1 little-endian), then
    stamp.sec (int32) and stamp.nanosec (uint32). Reading these 8 bytes lets the node pair
    frames without deserialising images it will drop anyway.
    """
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1):
        raise ValueError(f'not a CDR message with a header ({len(data)} bytes)')
    order = '<' if data[1] == 1 else '>'
    sec, nanosec = struct.unpack_from(order + 'iI', data, 4)
    return int(sec), int(nanosec)


def cdr_stamp_ns(data: bytes) -> int:
    """:func:`cdr_stamp` as integer nanoseconds."""
    sec, nanosec = cdr_stamp(data)
    return sec * 1_000_000_000 + nanosec


def cdr_frame_id(data: bytes) -> str:
    """Header frame_id of a serialised message whose first field is std_msgs/Header.

    After the stamp (see ``cdr_stamp_ns``) CDR writes the string as a uint32 length, counting
    the terminating NUL, then its bytes. Lets the node name its camera frame without
    deserialising images.
    """
    cdr_stamp_ns(data)  # validates the layout
    order = '<' if data[1] == 1 else '>'
    if len(data) < 16:
        raise ValueError(f'no frame_id in a {len(data)}-byte message')
    (length,) = struct.unpack_from(order + 'I', data, 12)
    if length == 0 or 16 + length > len(data):
        raise ValueError(f'frame_id length {length} does not fit a {len(data)}-byte message')
    return data[16 : 16 + length - 1].decode('utf-8', errors='replace')


def restamp_cdr(data: bytes, stamp_ns: int) -> bytes:
    """``data`` (a serialised message starting with a Header) with its stamp replaced.

    Lets a replayer serialise each recorded message once and publish it with fresh stamps for
    the cost of one buffer copy instead of a full serialisation per publish.
    """
    cdr_stamp_ns(data)  # validates the layout
    return b''.join((data[:4], cdr_stamp_field(data, stamp_ns), data[12:]))


def cdr_stamp_field(data: bytes | np.ndarray, stamp_ns: int) -> bytes:
    """The 8 bytes that hold ``stamp_ns`` at ``data[4:12]``, the header stamp of the serialised
    message ``data``, in its byte order (a benchmark writes them into a buffer in place)."""
    order = '<' if data[1] == 1 else '>'
    return struct.pack(order + 'iI', *divmod(int(stamp_ns), 1_000_000_000))


def deserialize(msg_type: type, data: bytes) -> object:
    """Serialised bytes -> message; FrameError when they do not decode.

    The lengths are checked first (core/cdr_layout.py): the C deserialiser would print an
    unthrottled line to stderr for each sequence that runs past the buffer.
    """
    cdr_layout.check_lengths(msg_type.__name__, data)
    try:
        return deserialize_message(data, msg_type)
    except Exception as err:  # rclpy raises plain exceptions for malformed CDR
        raise FrameError(f'cannot deserialise {msg_type.__name__}: {err}') from err


def stamp_ns(header: Header) -> int:
    """Header stamp as integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """Array -> Image with the given header (the input's, so stamps line up)."""
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(array.strides[0])
    msg.data = array.tobytes()
    return msg


def camera_info_msg(source: CameraInfo, width: int, height: int, header: Header) -> CameraInfo:
    """The input camera_info as it applies to an output image of ``width`` x ``height``.

    Everything is the camera's own (distortion, R, binning, ROI); K and P are scaled to the
    output size, so a consumer back-projecting the labels with P (image_geometry,
    depth_image_proc) gets the model the cloud was built with.
    """
    msg = CameraInfo()
    msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = source.distortion_model
    msg.d = list(source.d)
    msg.r = list(source.r)
    msg.binning_x, msg.binning_y = source.binning_x, source.binning_y
    msg.roi = source.roi
    sizes = (int(source.height), int(source.width)), (int(height), int(width))
    if sizes[0] == sizes[1]:
        msg.k, msg.p = list(source.k), list(source.p)
        return msg
    k = scale_camera_matrix(np.asarray(source.k).reshape(3, 3), *sizes)
    p = scale_camera_matrix(np.asarray(source.p).reshape(3, 4), *sizes)
    msg.k = [float(v) for v in k.reshape(-1)]
    msg.p = [float(v) for v in p.reshape(-1)]
    return msg


_POINT_FIELDS = [
    PointField(name=name, offset=offset, datatype=code, count=1)
    for name, offset, _, code in CLOUD_FIELDS
]


def cloud_msg(records: np.ndarray, header: Header) -> PointCloud2:
    """Packed CLOUD_DTYPE records (1-D dense or 2-D organised) -> PointCloud2."""
    msg = PointCloud2()
    msg.header = header
    if records.ndim == 2:
        msg.height, msg.width = int(records.shape[0]), int(records.shape[1])
        msg.is_dense = False
    else:
        msg.height, msg.width = 1, int(records.shape[0])
        msg.is_dense = True
    msg.fields = _POINT_FIELDS
    msg.is_bigendian = False
    msg.point_step = POINT_STEP
    msg.row_step = POINT_STEP * msg.width
    msg.data = records.tobytes()
    return msg
