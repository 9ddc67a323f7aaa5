"""Message <-> bytes/array helpers the node's hot path relies on, and its input decoding."""

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from ros_frames import frame_triple

from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.ros import conversions, frame_input


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


@pytest.mark.parametrize('frame', ['camera_color_optical_frame', 'cam2/rgb', 'ü', ''])
def test_frame_id_is_read_from_serialised_bytes(frame):
    for msg in frame_triple(1_000_000_000):
        msg.header.frame_id = frame
        data = serialize_message(msg)
        assert conversions.cdr_frame_id(data) == frame
    with pytest.raises(ValueError):
        conversions.cdr_frame_id(data[:14])
    with pytest.raises(ValueError, match='does not fit'):
        conversions.cdr_frame_id(data[:4] + data[4:12] + b'\xff\xff\xff\x00' + data[16:])


def test_frame_arrays_decode_a_triple():
    rgb, depth, info = frame_triple(5, width=64, height=48)
    arrays = frame_input.frame_arrays(rgb, depth, info, tolerance=0.01)
    assert arrays.rgb.shape == (48, 64, 3) and arrays.depth.dtype == np.uint16
    np.testing.assert_array_equal(arrays.K, np.asarray(info.k).reshape(3, 3))


def _break_info(info, entry: int, value: float):
    k = np.asarray(info.k, np.float64).copy()
    k[entry] = value
    info.k = k
    return info


@pytest.mark.parametrize(
    'breaker',
    [
        lambda info: _break_info(info, 0, float('nan')),  # fx NaN: was accepted before
        lambda info: _break_info(info, 4, float('nan')),  # fy NaN
        lambda info: _break_info(info, 2, float('inf')),  # cx infinite
        lambda info: _break_info(info, 0, 0.0),  # uncalibrated
        lambda info: setattr(info, 'width', 0) or info,
    ],
    ids=['nan_fx', 'nan_fy', 'inf_cx', 'zero_fx', 'zero_width'],
)
def test_unusable_camera_info_is_a_bad_camera_info_skip(breaker):
    rgb, depth, info = frame_triple(5)
    with pytest.raises(frame_input.InputError) as caught:
        frame_input.frame_arrays(rgb, depth, breaker(info), tolerance=0.01)
    assert caught.value.reason == 'bad_camera_info'


def test_bad_colour_and_depth_encodings_name_their_input():
    rgb, depth, info = frame_triple(5)
    rgb.encoding = 'yuv422'
    with pytest.raises(frame_input.InputError, match='yuv422') as caught:
        frame_input.frame_arrays(rgb, depth, info, tolerance=0.01)
    assert caught.value.reason == 'bad_colour'
    rgb, depth, info = frame_triple(5)
    depth.encoding = 'rgb8'
    with pytest.raises(frame_input.InputError, match='depth') as caught:
        frame_input.frame_arrays(rgb, depth, info, tolerance=0.01)
    assert caught.value.reason == 'bad_depth'
