"""Message <-> bytes/array helpers the node's hot path relies on, and its input decoding."""

import struct

import cv2
import numpy as np
import pytest
from rclpy.serialization import serialize_message
from ros_frames import frame_triple, header
from sensor_msgs.msg import CompressedImage

from rgbd_seg_ros.core.input_size import InputBound
from rgbd_seg_ros.core.projection import scale_intrinsics
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


def test_a_frame_above_the_bound_is_scaled_down_with_its_intrinsics():
    rgb, depth, info = frame_triple(5, width=64, height=48)
    bound = InputBound(32 * 24, 'downscale')
    arrays = frame_input.frame_arrays(rgb, depth, info, 0.01, bound)
    assert arrays.rgb.shape == (24, 32, 3) and arrays.depth.shape == (24, 32)
    K = np.asarray(info.k).reshape(3, 3)
    np.testing.assert_allclose(arrays.K, scale_intrinsics(K, (48, 64), (24, 32)))
    assert [name for name, _ in arrays.notes] == ['downscaled_input']
    assert '64x48' in arrays.notes[0][1] and '32x24' in arrays.notes[0][1]


def test_refusing_an_oversize_frame_names_it_too_large(monkeypatch):
    rgb, depth, info = frame_triple(5, width=64, height=48)
    with pytest.raises(frame_input.InputError) as caught:
        frame_input.frame_arrays(rgb, depth, info, 0.01, InputBound(64 * 48 - 1, 'refuse'))
    assert caught.value.reason == 'too_large'
    # A compressed colour beyond the bound is refused from its header: never decoded.
    _ok, png = cv2.imencode('.png', np.zeros((48, 64, 3), np.uint8))
    compressed = CompressedImage(header=rgb.header, format='png', data=png.tobytes())
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: pytest.fail('decoded'))
    with pytest.raises(frame_input.InputError) as caught:
        frame_input.frame_arrays(compressed, depth, info, 0.01, InputBound(1000, 'refuse'))
    assert caught.value.reason == 'too_large'


def test_a_compressed_colour_declaring_16000_square_is_too_large_whatever_the_policy():
    rgb, depth, info = frame_triple(5, width=64, height=48)
    _ok, png = cv2.imencode('.png', np.zeros((4, 4, 3), np.uint8))
    data = bytearray(png.tobytes())
    data[16:24] = (16000).to_bytes(4, 'big') * 2
    compressed = CompressedImage(header=rgb.header, format='png', data=bytes(data))
    for policy in ('downscale', 'refuse'):
        with pytest.raises(frame_input.InputError, match='16000x16000') as caught:
            frame_input.frame_arrays(compressed, depth, info, 0.01, InputBound(policy=policy))
        assert caught.value.reason == 'too_large'


def test_colour_and_depth_from_different_frames_are_noted_and_still_decoded():
    rgb, depth, info = frame_triple(5)
    depth.header = header(5, 'some_other_depth_frame')  # the triple shares one Header
    arrays = frame_input.frame_arrays(rgb, depth, info, tolerance=0.01)
    assert arrays.rgb.shape == (48, 64, 3)
    assert [name for name, _ in arrays.notes] == ['frame_id_mismatch']
    assert 'some_other_depth_frame' in arrays.notes[0][1]


def test_stamp_fields_are_read_apart_for_the_validity_check():
    msg = frame_triple(5)[0]
    msg.header.stamp.sec = -5
    assert conversions.cdr_stamp(serialize_message(msg)) == (-5, 5)


def _length_offsets(data: bytes, type_name: str) -> list[int]:
    """Offsets of every string/sequence length field, found by walking the layout."""
    from rgbd_seg_ros.core.cdr_layout import LAYOUTS, _Cursor

    cursor, found = _Cursor(data, type_name), []
    for kind in LAYOUTS[type_name]:
        if kind == 'string' or kind.startswith('seq'):
            found.append(cursor.take(4, 4, 'length'))
            size = 1 if kind == 'string' else int(kind[3:])
            (count,) = struct.unpack_from('<I', data, found[-1])
            cursor.take(count * size, size, 'body')
        elif kind.startswith('arr'):
            size, length = (int(part) for part in kind[3:].split('x'))
            cursor.take(size * length, size, 'array')
        else:
            cursor.take(int(kind), int(kind), 'field')
    assert cursor.pos == len(data)  # the layout covers the whole message
    return found


@pytest.mark.parametrize('index', [0, 1, 2])
def test_every_bad_length_is_a_frame_error_and_never_a_stderr_line(index, capfd):
    msg = frame_triple(5)[index]
    msg.header.frame_id = 'camera'
    if index == 2:
        msg.d = [0.1, 0.2, 0.0, 0.0, 0.0]
    data = serialize_message(msg)
    offsets = _length_offsets(data, type(msg).__name__)
    assert len(offsets) == 3  # frame_id, then encoding/distortion_model, then data/d
    for at in offsets:
        for length in (0x7FFFFFFF, len(data)):
            bad = bytearray(data)
            struct.pack_into('<I', bad, at, length)
            with pytest.raises(FrameError, match='malformed'):
                conversions.deserialize(type(msg), bytes(bad))
    assert conversions.deserialize(type(msg), data) == msg
    assert 'exceeds' not in capfd.readouterr().err


def test_compressed_image_layout_is_walked_to_its_end():
    msg = CompressedImage(header=header(5, 'cam'), format='png', data=b'\x01\x02\x03')
    data = serialize_message(msg)
    assert len(_length_offsets(data, 'CompressedImage')) == 3
    bad = bytearray(data)
    struct.pack_into('<I', bad, _length_offsets(data, 'CompressedImage')[-1], 1 << 30)
    with pytest.raises(FrameError, match='malformed CompressedImage'):
        conversions.deserialize(CompressedImage, bytes(bad))
