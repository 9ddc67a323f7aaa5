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

from rgbd_seg_ros.ros import conversions

_EMPTY_LENGTH = b'\x00\x00\x00\x00'


class SerializedParts:
    """A serialised message as the buffers that make it up, in order (no copy made yet).

    ``ros/raw_publish.py`` copies them once into the buffer it publishes from; ``join``
    makes the bytes rclpy's ``publish`` takes.
    """

    def __init__(self, parts: tuple[bytes | memoryview, ...]) -> None:
        self.parts = parts

    def join(self) -> bytes:
        return b''.join(self.parts)


def _splice(template: bytes, tail: int, payload: np.ndarray) -> SerializedParts:
    """``template`` serialised with an empty data sequence, ``tail`` bytes after its length."""
    head = len(template) - tail - 4
    if template[head : head + 4] != _EMPTY_LENGTH:  # pragma: no cover - layout changed upstream
        raise RuntimeError('unexpected CDR layout: the empty data sequence is not where expected')
    order = '<' if template[1] == 1 else '>'
    data = np.ascontiguousarray(payload).reshape(-1).view(np.uint8).data
    return SerializedParts(
        (
            template[:head],
            struct.pack(order + 'I', data.nbytes),
            data,
            template[len(template) - tail :],
        )
    )


def image_parts(array: np.ndarray, encoding: str, header: Header) -> SerializedParts:
    """Serialised sensor_msgs/Image of ``array`` (what ``conversions.image_msg`` would send)."""
    array = np.ascontiguousarray(array)
    msg = conversions.image_msg(array[:0], encoding, header)  # every field but the pixels
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    return _splice(serialize_message(msg), 0, array)


def cloud_parts(records: np.ndarray, header: Header) -> SerializedParts:
    """Serialised sensor_msgs/PointCloud2 of CLOUD_DTYPE records (1-D dense or 2-D organised)."""
    records = np.ascontiguousarray(records)
    msg = conversions.cloud_msg(records.reshape(-1)[:0], header)
    if records.ndim == 2:
        msg.height, msg.width = int(records.shape[0]), int(records.shape[1])
        msg.is_dense = False
    else:
        msg.height, msg.width = 1, int(records.shape[0])
    msg.row_step = msg.point_step * msg.width
    return _splice(serialize_message(msg), 1, records)
