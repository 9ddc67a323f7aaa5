"""rgbd_seg_ros.data.rosbag_messages: messages from arrays, recordings in every storage."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from rgbd_seg_ros.core import image_codec as ic
from rgbd_seg_ros.data import rosbag_messages as rm
from rgbd_seg_ros.errors import DatasetError

H, W = 48, 64
K = np.array([[50.0, 0, 31.5], [0, 51.0, 23.5], [0, 0, 1]])


@pytest.mark.parametrize('storage', rm.STORAGES)
def test_recording_roundtrip(tmp_path, storage):
    path = tmp_path / ('rec.bag' if storage == 'ros1' else 'rec')
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.integers(0, 5000, (H, W), dtype=np.uint16)
    with rm.RecordingWriter(path, storage) as rec:
        rec.add_topic('/rgb', rm.IMAGE)
        rec.add_topic('/depth', rm.COMPRESSED_IMAGE)
        rec.add_topic('/info', rm.CAMERA_INFO)
        stamp = 1_700_000_000_123_456_789
        rec.write('/rgb', stamp, rec.image(rgb, 'bgr8', stamp, 'cam', row_padding=4))
        rec.write('/depth', stamp, rec.compressed_depth(depth, stamp, 'cam'))
        rec.write('/info', stamp, rec.camera_info(K, W, H, stamp, 'cam'))
        with pytest.raises(DatasetError, match='not added'):
            rec.write('/nope', stamp, rec.image(rgb, 'rgb8', stamp))
    with AnyReader([path]) as reader:
        msgs = {c.topic: reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()}
    img = msgs['/rgb']
    assert (img.header.stamp.sec, img.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert img.header.frame_id == 'cam'
    out = ic.decode_image(
        img.encoding, img.height, img.width, img.step, img.is_bigendian, img.data
    )
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(
        ic.decode_compressed_depth(msgs['/depth'].format, msgs['/depth'].data), depth
    )
    info = msgs['/info']
    k = info.K if storage == 'ros1' else info.k
    np.testing.assert_array_equal(np.asarray(k).reshape(3, 3), K)


def test_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match='storage'):
        rm.RecordingWriter(tmp_path / 'x', 'rosbag3')
    with pytest.raises(DatasetError, match='typestore'):
        rm.typestore_of('ros9_nope')
    with pytest.raises(DatasetError, match='negative'):
        rm.make_header(rm.ROS2_JAZZY, -1)
