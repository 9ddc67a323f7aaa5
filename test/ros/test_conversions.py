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
    """The same entry broken in K and in P's left 3x3 (the model is P when P is set)."""
    k = np.asarray(info.k, np.float64).copy()
    k[entry] = value
    info.k = k
    p = np.asarray(info.p, np.float64).reshape(3, 4).copy()
    p[entry // 3, entry % 3] = value
    info.p = p.reshape(-1)
    return info


def _break_p(info, entry: int, value: float):
    p = np.asarray(info.p, np.float64).copy()
    p[entry] = value
    info.p = p
    return info


@pytest.mark.parametrize(
    'breaker',
    [
        lambda info: _break_info(info, 0, float('nan')),  # fx NaN: was accepted before
        lambda info: _break_info(info, 4, float('nan')),  # fy NaN
        lambda info: _break_info(info, 2, float('inf')),  # cx infinite
        lambda info: _break_info(info, 0, 0.0),  # uncalibrated
        lambda info: setattr(info, 'width', 0) or info,
        lambda info: _break_p(info, 5, float('nan')),  # P's fy NaN, K fine
        lambda info: _break_p(info, 0, -1.0),  # P's fx negative, K fine
        lambda info: _break_info(info, 4, -5.0),  # fy negative in both
        lambda info: _break_p(info, 3, float('inf')),  # P's Tx infinite
    ],
    ids=[
        'nan_fx',
        'nan_fy',
        'inf_cx',
        'zero_fx',
        'zero_width',
        'nan_p_fy',
        'negative_p_fx',
        'negative_fy',
        'inf_p_tx',
    ],
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


def _rectified_info(stamp_ns: int = 5):
    """A triple's camera_info with a rectification that moved P 3 % away from K."""
    rgb, depth, info = frame_triple(stamp_ns, width=64, height=48)
    P = np.array([[52.7, 0.0, 33.1, 0.0], [0.0, 52.6, 22.9, 0.0], [0.0, 0.0, 1.0, 0.0]])
    info.p = P.reshape(-1)
    info.d = [0.1, -0.05, 0.001, 0.0, 0.0]
    info.binning_x = 2
    info.roi.x_offset, info.roi.width = 3, 40
    return rgb, depth, info, P


def test_frame_arrays_back_project_with_p():
    rgb, depth, info, P = _rectified_info()
    arrays = frame_input.frame_arrays(rgb, depth, info, tolerance=0.01)
    np.testing.assert_array_equal(arrays.K, P[:, :3])


def test_published_camera_info_is_the_inputs_at_the_same_size():
    _rgb, _depth, info, P = _rectified_info()
    header = frame_triple(9)[0].header
    out = conversions.camera_info_msg(info, 64, 48, header)
    assert out.header.stamp == header.stamp and (out.width, out.height) == (64, 48)
    np.testing.assert_array_equal(np.asarray(out.p).reshape(3, 4), P)  # not [K|0]
    np.testing.assert_array_equal(out.k, info.k)
    np.testing.assert_array_equal(out.d, info.d)
    np.testing.assert_array_equal(out.r, info.r)
    assert out.distortion_model == info.distortion_model
    assert (out.binning_x, out.roi.x_offset, out.roi.width) == (2, 3, 40)


def test_published_camera_info_is_scaled_to_a_smaller_label_image():
    info = _rectified_info()[2]
    out = conversions.camera_info_msg(info, 32, 24, info.header)
    p = np.asarray(out.p).reshape(3, 4)
    # Half size, pixel centres kept: f/2 and (c + 0.5) / 2 - 0.5.
    np.testing.assert_allclose(p[0], [52.7 / 2, 0.0, (33.1 + 0.5) / 2 - 0.5, 0.0])
    np.testing.assert_allclose(p[1], [0.0, 52.6 / 2, (22.9 + 0.5) / 2 - 0.5, 0.0])
    k = np.asarray(out.k).reshape(3, 3)
    K = np.asarray(info.k).reshape(3, 3)
    np.testing.assert_allclose(k[0, 0], K[0, 0] / 2)
    np.testing.assert_allclose(k[1, 2], (K[1, 2] + 0.5) / 2 - 0.5)


def test_cloud_label_field_is_uint32():
    from sensor_msgs.msg import PointField

    from rgbd_seg_ros.core.cloud import CLOUD_DTYPE

    records = np.zeros(4, CLOUD_DTYPE)
    records['label'] = [0, 1, 70000, 2**32 - 1]
    msg = conversions.cloud_msg(records, frame_triple(1)[0].header)
    label = next(f for f in msg.fields if f.name == 'label')
    assert (label.datatype, label.count, label.offset) == (PointField.UINT32, 1, 16)
    back = np.frombuffer(bytes(msg.data), '<u4').reshape(4, 6)[:, 4]  # byte 16 of 24
    np.testing.assert_array_equal(back, records['label'])


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
