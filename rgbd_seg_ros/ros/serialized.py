"""Outgoing Image and PointCloud2 messages built as serialised CDR bytes, in one copy.

Publishing a message object costs three copies of its payload in Python and C (``tobytes``
into ``msg.data``, the conversion to the C struct, the CDR serialisation) before the middleware
makes its own; for the 12 MB a 640x480 frame produces (labels, confidence, colour, overlay and
a 7.4 MB cloud) that is most of the node's own work on a small CPU. Here rclpy serialises the
message with an empty ``data`` field (so every other field is laid out by the real serialiser),
and the payload is spliced in: its length replaces the empty sequence's length, and for
PointCloud2 the trailing ``is_dense`` byte follows the data. The pieces are kept apart
(``SerializedParts``) until the one copy that joins them: ``join`` for rclpy's
``Publisher.publish``, which accepts bytes as a serialised message, or the buffer
ros/raw_publish.py publishes from.
"""

from __future__ import annotations

import struct

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


def _splice(template: bytes, payload: np.ndarray) -> SerializedParts:
    """``template`` serialised with an empty data sequence at its end, ``payload`` spliced in."""
    data = np.ascontiguousarray(payload).reshape(-1).view(np.uint8).data
    head, length = _data_sequence(template, 0, data.nbytes)
    return SerializedParts((template[:head], length, data))


def image_parts(array: np.ndarray, encoding: str, header: Header) -> SerializedParts:
    """Serialised sensor_msgs/Image of ``array`` (what ``conversions.image_msg`` would send)."""
    array = np.ascontiguousarray(array)
    msg = conversions.image_msg(array[:0], encoding, header)  # every field but the pixels
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    return _splice(serialize_message(msg), array)


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
