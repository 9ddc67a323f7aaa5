"""rgbd_seg_ros.core.messages: each rule, on the messages the node and the converter really get.

Every test runs against three kinds of message, each built here and passed through its real
serialisation: rclpy ``sensor_msgs.msg`` (what the node deserialises), rosbags ROS 2 Jazzy and
rosbags ROS 1 Noetic dataclasses (what the converter deserialises from recordings).
"""

from __future__ import annotations

import numpy as np
import pytest

from rgbd_seg_ros.core import image_codec as ic
from rgbd_seg_ros.core import messages
from rgbd_seg_ros.data import rosbag_messages as rm
from rgbd_seg_ros.errors import FrameError

H, W = 24, 32
K = np.array([[30.0, 0.0, 15.5], [0.0, 31.0, 11.5], [0.0, 0.0, 1.0]])


class RclpyKind:
    """rclpy messages, serialised and deserialised as the node's subscriptions do."""

    name = 'rclpy'

    def __init__(self) -> None:
        from rclpy.serialization import deserialize_message, serialize_message
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self._ser, self._de = serialize_message, deserialize_message
        self._types = Image, CompressedImage, CameraInfo

    def _roundtrip(self, msg):
        return self._de(self._ser(msg), type(msg))

    def image(self, array, encoding, *, row_padding=0, bigendian=False, shape=None):
        step, data = ic.encode_image(array, encoding, row_padding=row_padding, bigendian=bigendian)
        msg = self._types[0]()
        msg.height, msg.width = shape or array.shape[:2]
        msg.encoding, msg.is_bigendian, msg.step, msg.data = encoding, int(bigendian), step, data
        return self._roundtrip(msg)

    def compressed(self, fmt, data):
        msg = self._types[1]()
        msg.format, msg.data = fmt, data
        return self._roundtrip(msg)

    def camera_info(self, k, width, height, p=None):
        msg = self._types[2]()
        msg.width, msg.height = width, height
        msg.k = [float(v) for v in np.asarray(k).reshape(-1)]
        if p is not None:
            msg.p = [float(v) for v in np.asarray(p).reshape(-1)]
        return self._roundtrip(msg)


class RosbagsKind:
    """rosbags dataclasses, serialised and deserialised as a recording stores them."""

    def __init__(self, store) -> None:
        self.store = rm.typestore_of(store)
        self.ros1 = store == rm.ROS1_NOETIC
        self.name = 'rosbags-' + store.value

    def _roundtrip(self, msg):
        if self.ros1:
            raw = self.store.serialize_ros1(msg, msg.__msgtype__)
            return self.store.deserialize_ros1(raw, msg.__msgtype__)
        raw = self.store.serialize_cdr(msg, msg.__msgtype__)
        return self.store.deserialize_cdr(raw, msg.__msgtype__)

    def image(self, array, encoding, *, row_padding=0, bigendian=False, shape=None):
        msg = rm.make_image(
            self.store, array, encoding, 1, row_padding=row_padding, bigendian=bigendian
        )
        if shape is not None:
            msg.height, msg.width = shape
        return self._roundtrip(msg)

    def compressed(self, fmt, data):
        msg = rm.make_compressed_image(self.store, np.zeros((2, 2), np.uint8), 1, codec='png')
        msg.format, msg.data = fmt, np.frombuffer(data, np.uint8)
        return self._roundtrip(msg)

    def camera_info(self, k, width, height, p=None):
        if p is None:
            p = np.zeros((3, 4))  # as an uncalibrated-for-rectification driver leaves it
        return self._roundtrip(rm.make_camera_info(self.store, k, width, height, 1, P=p))


@pytest.fixture(params=['rclpy', 'rosbags-jazzy', 'rosbags-noetic'])
def kind(request):
    if request.param == 'rclpy':
        return RclpyKind()
    return RosbagsKind(rm.ROS2_JAZZY if request.param == 'rosbags-jazzy' else rm.ROS1_NOETIC)


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _depth_mm() -> np.ndarray:
    depth = np.random.default_rng(1).integers(300, 9000, (H, W), dtype=np.uint16)
    depth[0, :4] = 0
    return depth


# -- colour ----------------------------------------------------------------------------------


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', '8UC3', '8UC4'])
def test_colour_raw_encodings(kind, encoding):
    rgb = _rgb()
    msg = kind.image(rgb, encoding, row_padding=3)
    assert not messages.is_compressed(msg)
    np.testing.assert_array_equal(messages.decode_colour(msg), rgb)


@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
def test_colour_grey_is_replicated(kind, encoding):
    grey = _rgb()[:, :, 0]
    out = messages.decode_colour(kind.image(grey, encoding))
    assert out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


def test_colour_compressed(kind):
    rgb = _rgb()
    msg = kind.compressed(*ic.encode_compressed(rgb, 'png'))
    assert messages.is_compressed(msg)
    np.testing.assert_array_equal(messages.decode_colour(msg), rgb)
    jpeg = ic.encode_compressed(rgb, 'jpeg')
    want = ic.decode_compressed(*jpeg)  # what the codec itself makes of the lossy payload
    np.testing.assert_array_equal(messages.decode_colour(kind.compressed(*jpeg)), want)


@pytest.mark.parametrize('encoding', ['yuv422', '16UC1', 'mono16', '32FC1'])
def test_colour_refuses_other_encodings(kind, encoding):
    if encoding == 'yuv422':
        msg = kind.image(_rgb(), 'rgb8')
        msg.encoding = 'yuv422'
    elif encoding == '32FC1':
        msg = kind.image(np.ones((H, W), np.float32), encoding)
    else:
        msg = kind.image(_depth_mm(), encoding)
    with pytest.raises(FrameError, match=encoding):
        messages.decode_colour(msg)


def test_colour_refuses_16_bit_png_and_broken_payloads(kind):
    with pytest.raises(FrameError, match='8-bit colour'):
        messages.decode_colour(kind.compressed(*ic.encode_compressed(_depth_mm(), 'png')))
    with pytest.raises(FrameError, match='cannot decode'):
        messages.decode_colour(kind.compressed('jpeg', b'\xff\xd8 not a jpeg'))
    with pytest.raises(FrameError, match='needs'):  # rows declared beyond the payload
        messages.decode_colour(kind.image(_rgb(), 'rgb8', shape=(H * 2, W)))
    with pytest.raises(FrameError, match='size'):
        messages.decode_colour(kind.image(_rgb(), 'rgb8', shape=(0, W)))


# -- depth -----------------------------------------------------------------------------------


@pytest.mark.parametrize('encoding', ['16UC1', 'mono16'])
@pytest.mark.parametrize('bigendian', [False, True])
def test_depth_millimetres(kind, encoding, bigendian):
    depth = _depth_mm()
    msg = kind.image(depth, encoding, row_padding=2, bigendian=bigendian)
    out = messages.decode_depth(msg)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)
    np.testing.assert_array_equal(messages.decode_depth_mm(msg), depth)


def test_depth_metres(kind):
    metres = _depth_mm().astype(np.float32) / 1000
    metres[0, :4] = np.nan
    msg = kind.image(metres, '32FC1', bigendian=True)
    out = messages.decode_depth(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, metres)  # NaN compares equal position by position
    np.testing.assert_array_equal(messages.decode_depth_mm(msg), _depth_mm())


def test_depth_compressed(kind):
    depth = _depth_mm()
    transport = kind.compressed(*ic.encode_compressed_depth(depth))
    np.testing.assert_array_equal(messages.decode_depth(transport), depth)
    png = kind.compressed(*ic.encode_compressed(depth, 'png'))
    np.testing.assert_array_equal(messages.decode_depth(png), depth)
    metres = kind.compressed(*ic.encode_compressed_depth(depth.astype(np.float32) / 1000))
    out = messages.decode_depth(metres)
    assert out.dtype == np.float32 and np.isnan(out[0, :4]).all()
    mm = messages.decode_depth_mm(metres).astype(int)
    assert np.abs(mm - depth)[depth > 0].max() <= 10  # the transport quantises inverse depth


@pytest.mark.parametrize('encoding', ['rgb8', 'mono8', '8UC1', 'bgr8'])
def test_depth_refuses_non_depth_encodings(kind, encoding):
    array = _rgb() if encoding in ('rgb8', 'bgr8') else _rgb()[:, :, 0]
    with pytest.raises(FrameError, match=f'depth image encoding {encoding!r}'):
        messages.decode_depth(kind.image(array, encoding))


def test_depth_refuses_8_bit_and_colour_compressed(kind):
    for payload in (
        ic.encode_compressed(_rgb()[:, :, 0], 'png'),
        ic.encode_compressed(_rgb(), 'png'),
        ic.encode_compressed(_rgb(), 'jpeg'),
    ):
        with pytest.raises(FrameError, match='16-bit'):
            messages.decode_depth(kind.compressed(*payload))


# -- labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize('encoding', ['mono8', '8UC1', 'mono16', '16UC1'])
def test_labels_raw(kind, encoding):
    dtype = np.uint8 if '8' in encoding else np.uint16
    labels = np.random.default_rng(2).integers(0, 40, (H, W)).astype(dtype)
    labels[-1, -1] = 255
    out = messages.decode_labels(kind.image(labels, encoding))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, labels)


def test_labels_png_only(kind):
    labels = np.random.default_rng(2).integers(0, 40, (H, W)).astype(np.uint8)
    out = messages.decode_labels(kind.compressed(*ic.encode_compressed(labels, 'png')))
    np.testing.assert_array_equal(out, labels)
    with pytest.raises(FrameError, match='lossless'):
        messages.decode_labels(kind.compressed(*ic.encode_compressed(labels, 'jpeg')))
    with pytest.raises(FrameError, match='single-channel'):
        messages.decode_labels(kind.compressed(*ic.encode_compressed(_rgb(), 'png')))


@pytest.mark.parametrize('encoding', ['rgb8', '32FC1'])
def test_labels_refuse_other_encodings(kind, encoding):
    array = _rgb() if encoding == 'rgb8' else np.zeros((H, W), np.float32)
    with pytest.raises(FrameError, match=f'label image encoding {encoding!r}'):
        messages.decode_labels(kind.image(array, encoding))


# -- camera intrinsics -----------------------------------------------------------------------


def test_intrinsics_of_a_calibrated_camera(kind):
    msg = kind.camera_info(K, W, H)
    intrinsics = messages.camera_intrinsics(msg)
    assert (intrinsics.width, intrinsics.height) == (W, H)
    assert intrinsics.K.dtype == np.float64 and intrinsics.K.shape == (3, 3)
    np.testing.assert_array_equal(intrinsics.K, K)
    intrinsics.K[0, 0] = 1.0  # a private copy: the message keeps its matrix
    np.testing.assert_array_equal(messages.camera_intrinsics(msg).K, K)


@pytest.mark.parametrize(
    ('entry', 'value', 'match'),
    [
        ((0, 0), np.nan, 'NaN or infinite'),
        ((1, 1), np.nan, 'NaN or infinite'),
        ((0, 2), np.inf, 'NaN or infinite'),
        ((0, 0), 0.0, 'no calibration'),
        ((1, 1), -31.0, 'no calibration'),
    ],
)
def test_intrinsics_refuse_unusable_matrices(kind, entry, value, match):
    bad = K.copy()
    bad[entry] = value
    with pytest.raises(FrameError, match=match):
        messages.camera_intrinsics(kind.camera_info(bad, W, H))


@pytest.mark.parametrize(('width', 'height'), [(0, H), (W, 0), (0, 0)])
def test_intrinsics_refuse_a_zero_size(kind, width, height):
    with pytest.raises(FrameError, match='no image size'):
        messages.camera_intrinsics(kind.camera_info(K, width, height))


# Rectified images are projected by P: a calibration whose K and P differ by 3 %.
P_RECT = np.array([[31.0, 0.0, 16.2, 0.0], [0.0, 31.9, 11.0, 0.0], [0.0, 0.0, 1.0, 0.0]])


def test_intrinsics_use_p_when_it_is_set(kind):
    intrinsics = messages.camera_intrinsics(kind.camera_info(K, W, H, p=P_RECT))
    assert (intrinsics.K[0, 0], intrinsics.K[1, 1]) == (31.0, 31.9)  # fx=P[0], fy=P[5]
    assert (intrinsics.K[0, 2], intrinsics.K[1, 2]) == (16.2, 11.0)  # cx=P[2], cy=P[6]
    np.testing.assert_array_equal(intrinsics.K, P_RECT[:, :3])


def test_intrinsics_ignore_a_stereo_baseline_in_p(kind):
    right = P_RECT.copy()
    right[0, 3] = -31.0 * 0.05  # Tx = -fx * baseline
    np.testing.assert_array_equal(
        messages.camera_intrinsics(kind.camera_info(K, W, H, p=right)).K, P_RECT[:, :3]
    )


def test_intrinsics_use_k_when_p_is_all_zero(kind):
    intrinsics = messages.camera_intrinsics(kind.camera_info(K, W, H, p=np.zeros((3, 4))))
    np.testing.assert_array_equal(intrinsics.K, K)


@pytest.mark.parametrize(
    ('entry', 'value', 'match'),
    [
        ((0, 0), np.nan, 'P holds NaN or infinite'),
        ((1, 2), np.inf, 'P holds NaN or infinite'),
        ((0, 3), np.nan, 'P holds NaN or infinite'),
        ((0, 0), 0.0, 'no calibration .P focal'),
        ((1, 1), -31.9, 'no calibration .P focal'),
    ],
)
def test_intrinsics_refuse_an_unusable_projection(kind, entry, value, match):
    bad = P_RECT.copy()
    bad[entry] = value
    with pytest.raises(FrameError, match=match):
        messages.camera_intrinsics(kind.camera_info(K, W, H, p=bad))


def test_intrinsics_refuse_a_nan_k_even_when_p_is_used(kind):
    bad = K.copy()
    bad[0, 0] = np.nan
    with pytest.raises(FrameError, match='K holds NaN'):
        messages.camera_intrinsics(kind.camera_info(bad, W, H, p=P_RECT))


def test_intrinsics_of_a_message_without_p_use_k_and_without_k_are_refused():
    from types import SimpleNamespace

    no_p = SimpleNamespace(k=list(K.reshape(-1)), width=W, height=H)
    np.testing.assert_array_equal(messages.camera_intrinsics(no_p).K, K)
    with pytest.raises(FrameError, match='no matrix k'):
        messages.camera_intrinsics(SimpleNamespace(p=list(P_RECT.reshape(-1)), width=W, height=H))
