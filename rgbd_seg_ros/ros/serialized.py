"""Outgoing Image and PointCloud2 messages built as serialised CDR bytes, in one copy.

Publishing a message object costs three copies of its payload in Python and C (``tobytes``
into ``msg.data``, the conversion to the C struct, the CDR serialisation) before the middleware
makes its own; for the 12 MB a 640x480 frame produces (labels, confidence, colour, overlay and
a 7.4 MB cloud) that is most of the node's own work on a small CPU. An Image's few fields
before its pixels are written here (``image_prefix``); a PointCloud2 is serialised by rclpy
with an empty ``data`` field (so its field list is laid out by the real serialiser) and the
payload is spliced in: its length replaces the empty sequence's length, and the trailing
``is_dense`` byte follows the data. The pieces are kept apart
(``SerializedParts``) until the one copy that joins them: ``join`` for rclpy's
``Publisher.publish``, which accepts bytes as a serialised message, or the buffer
ros/raw_publish.py publishes from.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from rgbd_seg_ros.core.cloud import CLOUD_DTYPE, POINT_STEP
from rgbd_seg_ros.ros import conversions

_EMPTY_LENGTH = b'\x00\x00\x00\x00'


class SerializedParts:
    """A serialised message as the buffers that make it up, in order (no copy made yet).

    ``ros/raw_publish.py`` copies them once into the buffer it publishes from; ``join``
    makes the bytes rclpy's ``publish`` takes.
    """

    def __init__(self, parts: tuple[bytes | memoryview | np.ndarray, ...]) -> None:
        self.parts = parts

    def join(self) -> bytes:
        return b''.join(part.data if isinstance(part, np.ndarray) else part for part in self.parts)

    def contiguous(self) -> np.ndarray:
        """The message as one uint8 buffer: a message built whole (CloudMessage) as it is,
        parts joined in one copy."""
        if len(self.parts) == 1 and isinstance(self.parts[0], np.ndarray):
            only = self.parts[0]
            if only.dtype == np.uint8 and only.ndim == 1 and only.flags.c_contiguous:
                return only
        return np.concatenate([np.frombuffer(part, np.uint8) for part in self.parts])


def _data_sequence(template: bytes, tail: int, nbytes: int) -> tuple[int, bytes]:
    """Where the empty data sequence of ``template`` (``tail`` bytes after it) starts, and its
    length field for ``nbytes`` of data in the template's byte order."""
    head = len(template) - tail - 4
    if template[head : head + 4] != _EMPTY_LENGTH:  # pragma: no cover - layout changed upstream
        raise RuntimeError('unexpected CDR layout: the empty data sequence is not where expected')
    order = '<' if template[1] == 1 else '>'
    return head, struct.pack(order + 'I', nbytes)


def image_parts(array: np.ndarray, encoding: str, header: Header) -> SerializedParts:
    """Serialised sensor_msgs/Image of ``array`` (what ``conversions.image_msg`` would send)."""
    array = np.ascontiguousarray(array)
    data = array.reshape(-1).view(np.uint8).data
    height, width = int(array.shape[0]), int(array.shape[1])
    prefix = image_prefix(header, height, width, encoding, int(array.strides[0]), data.nbytes)
    return SerializedParts((prefix, data))


def image_prefix(
    header: Header, height: int, width: int, encoding: str, step: int, nbytes: int
) -> bytes:
    """The little-endian CDR of a sensor_msgs/Image up to its ``nbytes`` of pixels.

    Written here rather than by rclpy's serialiser: a frame publishes four images, and on a
    small CPU each pass through the serialiser cost 1-3 ms when its code and data had gone
    cold (the node's frames are a forward apart), against well under a millisecond for this.
    Every field of Image is 4-byte aligned or a byte, so the layout is short: stamp, frame_id,
    height, width, encoding, is_bigendian (0), padding to 4, step, the pixel count.
    test_serialized reads what it writes back with rclpy's deserialiser, field by field.
    """
    frame_id = str(header.frame_id).encode() + b'\x00'
    encoded = encoding.encode() + b'\x00'
    out = bytearray(b'\x00\x01\x00\x00')  # plain CDR, little-endian
    out += struct.pack('<iII', header.stamp.sec, header.stamp.nanosec, len(frame_id))
    out += frame_id
    out += bytes(-len(out) % 4)  # the origin is 4 bytes in, so 4-alignment is the same
    out += struct.pack('<III', height, width, len(encoded))
    out += encoded
    out += b'\x00'  # is_bigendian
    out += bytes(-len(out) % 4)
    out += struct.pack('<II', step, nbytes)
    return bytes(out)


def cloud_parts(records: np.ndarray, header: Header) -> SerializedParts:
    """Serialised sensor_msgs/PointCloud2 of CLOUD_DTYPE records (1-D dense or 2-D organised)."""
    message = CloudMessage(records.shape, header)
    message.records[...] = records
    return message.parts()


class CloudMessage:
    """A serialised PointCloud2 of ``shape`` points whose records are filled in place.

    The message buffer is allocated whole, every field but the points already serialised, and
    ``records`` is the CLOUD_DTYPE view of its point data: the engine writes the cloud straight
    into it, so the 7.4 MB of a 640x480 cloud are not copied again to be published
    (``parts`` is the one buffer; ros/raw_publish.py publishes it as it is).
    """

    def __init__(self, shape: tuple[int, ...], header: Header) -> None:
        if len(shape) not in (1, 2):
            raise ValueError(f'a cloud is 1-D (dense) or 2-D (organised), got shape {shape}')
        msg = conversions.cloud_msg(np.zeros(0, CLOUD_DTYPE), header)
        if len(shape) == 2:
            msg.height, msg.width = int(shape[0]), int(shape[1])
            msg.is_dense = False
        else:
            msg.height, msg.width = 1, int(shape[0])
        msg.row_step = msg.point_step * msg.width
        template = serialize_message(msg)
        nbytes = int(np.prod(shape, dtype=np.int64)) * POINT_STEP
        head, length = _data_sequence(template, 1, nbytes)  # is_dense (1 byte) after the data
        start = head + 4  # 4-aligned: CDR aligns the length before it
        self.buffer = np.empty(start + nbytes + 1, np.uint8)
        self.buffer[:head] = np.frombuffer(template, np.uint8, head)
        self.buffer[head:start] = np.frombuffer(length, np.uint8)
        self.buffer[-1] = template[-1]
        #: Where the points go: CLOUD_DTYPE records of ``shape`` inside the message buffer.
        self.records = self.buffer[start : start + nbytes].view(CLOUD_DTYPE).reshape(shape)

    def parts(self) -> SerializedParts:
        return SerializedParts((self.buffer,))


class Restamped:
    """One serialised message kept and republished frame after frame with a new stamp.

    The node's camera_info output is the input's, scaled to the output size, in the colour
    image's header: the same bytes every frame but for the stamp while the camera, the output
    size and the frame name stay the same (``key``). Serialising it once and replacing the
    stamp (``conversions.restamp_cdr``) spares a message object and rclpy's serialiser per
    frame, and lets it be published with the GIL released like the other outputs.
    """

    def __init__(self) -> None:
        self._key: Hashable | None = None
        self._data = b''

    def parts(self, key: Hashable, stamp_ns: int, build: Callable[[], object]) -> SerializedParts:
        """The message ``build()`` makes (serialised once per ``key``) stamped ``stamp_ns``."""
        if key != self._key:
            self._data = serialize_message(build())
            self._key = key
        return SerializedParts((conversions.restamp_cdr(self._data, stamp_ns),))
