"""Publishing serialised parts through rcl with the GIL released (ros/raw_publish.py), over
real DDS: what a subscriber receives is what rclpy's own publish of the joined bytes delivers."""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pytest
import rclpy
from rclpy.exceptions import InvalidHandle
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

from rgbd_seg_ros.core.cloud import CLOUD_DTYPE, unpack_cloud
from rgbd_seg_ros.ros import conversions
from rgbd_seg_ros.ros.raw_publish import RawPublisher, loaded_library
from rgbd_seg_ros.ros.serialized import cloud_parts, image_parts

pytestmark = pytest.mark.ros

HEADER = Header(frame_id='camera_color_optical_frame')
HEADER.stamp.sec, HEADER.stamp.nanosec = 1_700_000_001, 2_000
_topics = itertools.count()


def _pair(peer, msg_type):
    topic = f'/raw_publish_test_{next(_topics)}'
    received: list[bytes] = []
    peer.node.create_subscription(msg_type, topic, received.append, 10, raw=True)
    publisher = peer.node.create_publisher(msg_type, topic, 10)
    peer.wait_for_subscribers(publisher)
    return publisher, received


def test_rcl_is_the_library_rclpy_loaded_and_its_calls_release_the_gil():
    raw = RawPublisher()
    assert raw.releases_gil
    path = loaded_library(RawPublisher.RCL)
    assert path is not None and '/librcl.so' in path
    # ctypes holds the GIL only for functions of a PyDLL (the Python API flag).
    assert not raw._publish_c._flags_ & ctypes._FUNCFLAG_PYTHONAPI


def test_an_image_and_a_cloud_arrive_as_rclpy_would_send_them(ros_peer):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    records = np.zeros(3000, CLOUD_DTYPE)
    records['x'] = rng.random(3000, dtype=np.float32)
    records['label'] = rng.integers(0, 40, 3000)
    raw = RawPublisher()
    for msg_type, parts, expected in (
        (Image, image_parts(image, 'rgb8', HEADER), conversions.image_msg(image, 'rgb8', HEADER)),
        (PointCloud2, cloud_parts(records, HEADER), conversions.cloud_msg(records, HEADER)),
    ):
        publisher, received = _pair(ros_peer, msg_type)
        raw.publish(publisher, parts)
        publisher.publish(parts.join())  # rclpy's own path, for comparison
        ros_peer.wait_for(lambda got=received: len(got) == 2, what='both messages')
        assert received[0] == received[1] == parts.join()
        assert deserialize_message(received[0], msg_type) == expected
    cloud = deserialize_message(received[0], PointCloud2)
    np.testing.assert_array_equal(unpack_cloud(bytes(cloud.data), 3000)['label'], records['label'])


def test_without_rcl_in_the_process_it_publishes_through_rclpy(ros_peer, tmp_path):
    maps = tmp_path / 'maps'
    maps.write_text('7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/libc.so.6\n')
    raw = RawPublisher(maps=str(maps))
    assert not raw.releases_gil
    publisher, received = _pair(ros_peer, Image)
    parts = image_parts(np.ones((2, 3), np.uint8), 'mono8', HEADER)
    raw.publish(publisher, parts)
    ros_peer.wait_for(lambda: received, what='the message')
    assert received == [parts.join()]


def test_library_lookup_reads_only_mapped_file_names(tmp_path):
    maps = tmp_path / 'maps'
    maps.write_text(
        '7f00-7f01 r-xp 00000000 08:01 1 /opt/ros/lib/librcl_action.so\n'
        '7f01-7f02 r-xp 00000000 08:01 2 /opt/ros/lib/librcl_yaml_param_parser.so\n'
        '7f02-7f03 rw-p 00000000 00:00 0 [heap]\n'
        '7f03-7f04 r-xp 00000000 08:01 3 /opt/ros/lib/librcl.so.5\n'
    )
    assert loaded_library(RawPublisher.RCL, str(maps)) == '/opt/ros/lib/librcl.so.5'
    assert loaded_library(RawPublisher.RCL, str(tmp_path / 'missing')) is None


def test_a_destroyed_publisher_and_a_shut_down_context_are_errors_not_crashes(ros_peer):
    raw = RawPublisher()
    parts = image_parts(np.ones((2, 3), np.uint8), 'mono8', HEADER)
    publisher = ros_peer.node.create_publisher(Image, f'/raw_publish_test_{next(_topics)}', 10)
    ros_peer.node.destroy_publisher(publisher)
    with pytest.raises(InvalidHandle):
        raw.publish(publisher, parts)

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('raw_publish_shutdown', context=context)
    try:
        orphan = node.create_publisher(Image, f'/raw_publish_test_{next(_topics)}', 10)
        context.shutdown()
        with pytest.raises(RuntimeError, match='failed to publish'):
            raw.publish(orphan, parts)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
