"""Spliced CDR bytes deserialise to exactly the message the slow path builds.

(Not byte-equal: CDR alignment padding is whatever the serialiser's buffer held.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

from rgbd_seg_ros.core.cloud import CLOUD_DTYPE
from rgbd_seg_ros.ros import conversions
from rgbd_seg_ros.ros.conversions import cdr_stamp_ns, restamp_cdr
from rgbd_seg_ros.ros.serialized import CloudMessage, cloud_parts, image_parts

HEADER = Header(frame_id='camera_color_optical_frame')
HEADER.stamp.sec, HEADER.stamp.nanosec = 1_700_000_123, 456_789


@pytest.mark.parametrize(
    ('shape', 'dtype', 'encoding'),
    [
        ((5, 7), np.uint8, 'mono8'),
        ((5, 7, 3), np.uint8, 'rgb8'),
        ((4, 6), np.float32, '32FC1'),
        ((3, 9), np.uint16, 'mono16'),
        ((1, 1), np.uint8, 'mono8'),
        ((0, 4), np.uint8, 'mono8'),
        ((2, 3, 3), np.uint8, 'rgb8'),
    ],
)
def test_image_bytes_equal_the_serialised_message(shape, dtype, encoding):
    rng = np.random.default_rng(0)
    array = (rng.random(shape) * 200).astype(dtype)
    expected = conversions.image_msg(array, encoding, HEADER)
    data = image_parts(array, encoding, HEADER).join()
    msg = deserialize_message(data, Image)
    assert msg == expected


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    sec=st.integers(-(2**31), 2**31 - 1),
    nanosec=st.integers(0, 2**32 - 1),
    frame_id=st.text(st.characters(codec='utf-8', exclude_characters='\x00'), max_size=30),
    encoding=st.text(st.characters(codec='utf-8', exclude_characters='\x00'), max_size=12),
    shape=st.tuples(st.integers(0, 5), st.integers(0, 7), st.sampled_from([(), (1,), (3,), (4,)])),
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.int8]),
)
def test_image_prefix_deserialises_as_rclpys_message(
    sec, nanosec, frame_id, encoding, shape, dtype
):
    """The hand-written Image layout against rclpy's deserialiser, every field and length."""
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    array = (
        np.arange(int(np.prod(shape[:2] + shape[2]))).astype(dtype).reshape(shape[:2] + shape[2])
    )
    expected = conversions.image_msg(array, encoding, header)
    assert deserialize_message(image_parts(array, encoding, header).join(), Image) == expected


@pytest.mark.parametrize('frame_id', ['', 'c', 'camera_color_optical_frame', 'ünïcode', 'x' * 37])
@pytest.mark.parametrize(
    ('shape', 'dtype', 'encoding'),
    [((3, 5), np.uint8, 'mono8'), ((4, 2, 3), np.uint8, 'rgb8'), ((2, 3), np.float32, '32FC1')],
)
def test_images_agree_with_rosbags_cdr_codec_both_ways(frame_id, shape, dtype, encoding):
    """A second, independent CDR implementation (rosbags, pure Python) reads what
    image_prefix writes, and what it writes splits (cdr_layout.split_payload) as rclpy's does."""
    from rosbags.typesys import Stores, get_typestore

    from rgbd_seg_ros.core.cdr_layout import split_payload

    store = get_typestore(Stores.ROS2_JAZZY)
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = 1_700_000_321, 999_999_999
    array = np.arange(int(np.prod(shape))).astype(dtype).reshape(shape)
    theirs = store.deserialize_cdr(
        image_parts(array, encoding, header).join(), 'sensor_msgs/msg/Image'
    )
    assert (theirs.header.frame_id, theirs.header.stamp.nanosec) == (frame_id, 999_999_999)
    assert (theirs.height, theirs.width, theirs.encoding, theirs.step) == (
        shape[0],
        shape[1],
        encoding,
        array.strides[0],
    )
    assert theirs.data.tobytes() == array.tobytes()
    split = split_payload('Image', bytes(store.serialize_cdr(theirs, 'sensor_msgs/msg/Image')))
    assert split is not None and bytes(split[1]) == array.tobytes()
    without_pixels = conversions.image_msg(array, encoding, header)
    without_pixels.data = b''
    assert deserialize_message(split[0], Image) == without_pixels


def test_image_bytes_of_a_non_contiguous_view():
    array = np.arange(60, dtype=np.uint8).reshape(6, 10)[:, ::2]
    msg = deserialize_message(image_parts(array, 'mono8', HEADER).join(), Image)
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(6, 5), array)


@pytest.mark.parametrize('shape', [(0,), (1,), (17,), (3, 5)])
def test_cloud_bytes_equal_the_serialised_message(shape):
    records = np.zeros(shape, CLOUD_DTYPE)
    records['x'] = np.arange(records.size, dtype=np.float32).reshape(shape)
    records['label'] = 7
    records['confidence'] = 0.5
    expected = conversions.cloud_msg(records, HEADER)
    data = cloud_parts(records, HEADER).join()
    msg = deserialize_message(data, PointCloud2)
    assert msg == expected
    assert msg.is_dense == (len(shape) == 1)


@pytest.mark.parametrize('shape', [(0,), (5,), (2, 3)])
def test_a_cloud_filled_in_place_is_the_serialised_message(shape):
    message = CloudMessage(shape, HEADER)
    assert message.records.shape == shape and message.records.dtype == CLOUD_DTYPE
    assert records_in_buffer(message)  # filling the records fills the message
    records = np.zeros(shape, CLOUD_DTYPE)
    records['z'] = np.linspace(0.5, 3.0, records.size, dtype=np.float32).reshape(shape)
    records['label'] = 3
    message.records[...] = records
    (data,) = message.parts().parts
    assert data is message.buffer
    assert deserialize_message(data.tobytes(), PointCloud2) == conversions.cloud_msg(
        records, HEADER
    )


def test_a_cloud_message_is_one_or_two_dimensional():
    with pytest.raises(ValueError, match='1-D'):
        CloudMessage((2, 2, 2), HEADER)


def test_restamp_replaces_only_the_stamp():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data = image_parts(array, 'mono8', HEADER).join()
    moved = restamp_cdr(data, 5_000_000_007)
    assert cdr_stamp_ns(moved) == 5_000_000_007
    msg = deserialize_message(moved, Image)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 7)
    assert msg.header.frame_id == HEADER.frame_id
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(3, 4), array)
    with pytest.raises(ValueError):
        restamp_cdr(b'\x00\x01', 1)


def records_in_buffer(message: CloudMessage) -> bool:
    """Whether the records are a view of the message buffer (an empty view shares nothing)."""
    base = message.records
    while base.base is not None and base is not message.buffer:
        base = base.base
    return base is message.buffer
