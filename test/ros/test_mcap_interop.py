"""Recordings this project writes, read back by Foxglove's own mcap reader.

The demo records the node's outputs as they arrive (CDR built by ``ros/serialized.py``) into
an mcap written by rosbags, and ``rgbd-seg synth`` writes its recordings the same way; users
open them in Foxglove or with ``ros2 bag``. ``mcap`` and ``mcap-ros2-support`` (Foxglove's
reader and its decoder of ROS 2 messages from the schema stored in the file) are
implementations this project did not write: what they decode is what a user's tools see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from std_msgs.msg import Header

from rgbd_seg_ros.core.cloud import CLOUD_DTYPE, POINT_STEP
from rgbd_seg_ros.data.synth.writers import (
    COLOR_TOPIC,
    DEPTH_TOPIC,
    INFO_TOPIC,
    LABEL_TOPIC,
    write_recording,
)
from rgbd_seg_ros.ros.serialized import CloudMessage, image_parts

HEADER = Header(frame_id='camera_color_optical_frame')
HEADER.stamp.sec, HEADER.stamp.nanosec = 1_700_000_123, 456_789


def _by_topic(path: Path) -> dict[str, list]:
    """Every message of the recording's mcap file(s), decoded, per topic."""
    found: dict[str, list] = {}
    files = sorted(path.glob('*.mcap'))
    assert files, f'no mcap file in {path}'
    for file in files:
        with file.open('rb') as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            for schema, channel, _, decoded in reader.iter_decoded_messages():
                found.setdefault(channel.topic, []).append((schema.name, decoded))
    return found


def test_node_outputs_as_the_demo_records_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, (6, 8), dtype=np.uint8)
    confidence = rng.random((6, 8), dtype=np.float32)
    cloud = CloudMessage((6, 8), HEADER)
    cloud.records['x'] = rng.random((6, 8), dtype=np.float32)
    cloud.records['y'] = -0.25  # every field set: the message's buffer starts uninitialised
    cloud.records['z'] = 1.5
    cloud.records['rgb'] = rng.integers(0, 1 << 24, (6, 8), dtype=np.uint32).view(np.float32)
    cloud.records['label'] = labels
    cloud.records['confidence'] = confidence
    payloads = {
        '/segmentation/labels': ('sensor_msgs/msg/Image', image_parts(labels, 'mono8', HEADER)),
        '/segmentation/confidence': (
            'sensor_msgs/msg/Image',
            image_parts(confidence, '32FC1', HEADER),
        ),
        '/segmentation/points': ('sensor_msgs/msg/PointCloud2', cloud.parts()),
    }
    store = get_typestore(Stores.ROS2_JAZZY)
    out = tmp_path / 'outputs'
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)  # as OutputRecorder
    writer.open()
    for stamp, (topic, (msgtype, parts)) in enumerate(payloads.items()):
        connection = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(connection, 1_000 + stamp, parts.join())
    writer.close()

    found = _by_topic(out)
    assert set(found) == set(payloads)
    for topic, (msgtype, _) in payloads.items():
        ((schema, message),) = found[topic]
        assert schema == msgtype
        assert message.header.frame_id == HEADER.frame_id
        assert (message.header.stamp.sec, message.header.stamp.nanosec) == (
            1_700_000_123,
            456_789,
        )
    image = found['/segmentation/labels'][0][1]
    assert (image.height, image.width, image.encoding, image.step) == (6, 8, 'mono8', 8)
    assert bytes(image.data) == labels.tobytes()
    image = found['/segmentation/confidence'][0][1]
    assert (image.encoding, image.step) == ('32FC1', 32)
    np.testing.assert_array_equal(
        np.frombuffer(bytes(image.data), np.float32).reshape(6, 8), confidence
    )
    points = found['/segmentation/points'][0][1]
    assert (points.height, points.width, points.point_step) == (6, 8, POINT_STEP)
    assert points.row_step == 8 * POINT_STEP and points.is_dense is False
    fields = {f.name: (f.offset, f.datatype, f.count) for f in points.fields}
    assert set(fields) == set(CLOUD_DTYPE.names)
    for name in CLOUD_DTYPE.names:
        assert fields[name][0] == CLOUD_DTYPE.fields[name][1]
    records = np.frombuffer(bytes(points.data), CLOUD_DTYPE).reshape(6, 8)
    np.testing.assert_array_equal(records, cloud.records)


def test_synthetic_recordings(tmp_path: Path) -> None:
    path = write_recording(tmp_path / 'rec', seed=3, num_frames=3, width=32, height=24)
    found = _by_topic(path)
    for topic in (COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, LABEL_TOPIC):
        assert len(found[topic]) == 3, topic
    colour = found[COLOR_TOPIC][0][1]
    assert (colour.width, colour.height, colour.encoding, len(colour.data)) == (
        32,
        24,
        'rgb8',
        32 * 24 * 3,
    )
    depth = found[DEPTH_TOPIC][0][1]
    assert (depth.encoding, len(depth.data)) == ('16UC1', 32 * 24 * 2)
    assert np.frombuffer(bytes(depth.data), np.uint16).max() > 0
    info = found[INFO_TOPIC][0][1]
    assert (info.width, info.height) == (32, 24)
    k = np.asarray(info.k, np.float64).reshape(3, 3)
    assert k[0, 0] > 0 and k[1, 1] > 0 and k[2, 2] == 1.0
    stamps = [message.header.stamp for _, message in found[COLOR_TOPIC]]
    ns = [s.sec * 1_000_000_000 + s.nanosec for s in stamps]
    assert ns == sorted(ns) and len(set(ns)) == 3
