"""Message <-> bytes/array helpers the node's hot path relies on."""

import pytest
from rclpy.serialization import serialize_message
from ros_frames import frame_triple

from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.ros import conversions


@pytest.mark.parametrize('index', [0, 1, 2])
def test_stamp_is_read_from_serialised_bytes(index):
    stamp = 1_700_000_123_456_789_012
    msg = frame_triple(stamp)[index]
    data = serialize_message(msg)
    assert conversions.cdr_stamp_ns(data) == stamp
    back = conversions.deserialize(type(msg), data)
    assert conversions.stamp_ns(back.header) == stamp


def test_bad_bytes_are_refused_with_a_reason():
    with pytest.raises(ValueError):
        conversions.cdr_stamp_ns(b'\x00\x01\x00')
    rgb = frame_triple(5)[0]
    data = serialize_message(rgb)
    with pytest.raises(FrameError, match='Image'):
        conversions.deserialize(type(rgb), data[: len(data) // 3])
