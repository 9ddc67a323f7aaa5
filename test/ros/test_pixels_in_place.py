"""Image pixels read in place from the bytes they arrived in (core/cdr_layout.split_payload).

The split is checked against rclpy's own deserialiser on messages hypothesis makes, and
against hostile bytes: every truncation of a message is a FrameError, never a crash.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from ros_frames import camera_info, frame_triple, header, intrinsics
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from rgbd_seg_ros.core import cdr_layout
from rgbd_seg_ros.core.messages import is_compressed
from rgbd_seg_ros.core.pairing import Stamped, Triple
from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.ros import conversions, frame_input
from rgbd_seg_ros.ros.conversions import image_msg

IMAGE_FIELDS = ('height', 'width', 'encoding', 'is_bigendian', 'step')
# Deterministic, no example database, no per-example deadline: CI machines are slow.
PROPERTY = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# stamp.sec is an int32 (rclpy's setter here accepts larger ints; a camera cannot send them).
stamps = st.integers(0, (2**31 - 1) * 1_000_000_000 + 999_999_999)
text = st.text(st.characters(codec='utf-8', exclude_characters='\x00'), max_size=40)


@st.composite
def images(draw: st.DrawFn) -> Image:
    msg = Image()
    msg.header = header(draw(stamps), draw(text))
    msg.height = draw(st.integers(0, 2**32 - 1))
    msg.width = draw(st.integers(0, 2**32 - 1))
    msg.encoding = draw(text)
    msg.is_bigendian = draw(st.integers(0, 255))
    msg.step = draw(st.integers(0, 2**32 - 1))
    msg.data = draw(st.binary(max_size=300))
    return msg


@st.composite
def compressed_images(draw: st.DrawFn) -> CompressedImage:
    return CompressedImage(
        header=header(draw(stamps), draw(text)),
        format=draw(text),
        data=draw(st.binary(max_size=300)),
    )


def _in_place(msg: Image | CompressedImage) -> tuple[object, bytes]:
    data = serialize_message(msg)
    return frame_input._deserialize_in_place(type(msg), data), data


@PROPERTY
@given(images())
def test_an_image_read_in_place_equals_rclpys_deserialisation(msg):
    view, data = _in_place(msg)
    full = conversions.deserialize(Image, data)
    assert view.header == full.header
    for name in IMAGE_FIELDS:
        assert getattr(view, name) == getattr(full, name)
    assert bytes(view.data) == bytes(full.data)
    assert isinstance(view.data, memoryview) and view.data.obj is data  # not a copy


@PROPERTY
@given(compressed_images())
def test_a_compressed_image_read_in_place_equals_rclpys_deserialisation(msg):
    view, data = _in_place(msg)
    full = conversions.deserialize(CompressedImage, data)
    assert (view.header, view.format) == (full.header, full.format)
    assert bytes(view.data) == bytes(full.data)
    assert is_compressed(view)


@settings(PROPERTY, max_examples=60)
@given(images(), st.data())
def test_every_truncation_is_a_frame_error(msg, data):
    whole = serialize_message(msg)
    cut = data.draw(st.integers(0, len(whole) - 1))
    try:
        frame_input._deserialize_in_place(Image, whole[:cut])
    except FrameError:
        return
    # A cut inside the trailing alignment bytes loses nothing the message holds.
    assert cut >= _end_of_pixels(whole)


def _end_of_pixels(data: bytes) -> int:
    split = cdr_layout.split_payload('Image', data)
    assert split is not None
    pixels = np.frombuffer(split[1], np.uint8)
    return pixels.ctypes.data - np.frombuffer(data, np.uint8).ctypes.data + pixels.size


def test_camera_info_has_no_pixels_and_is_deserialised_whole():
    info = camera_info(intrinsics(64, 48), 64, 48, 5)
    data = serialize_message(info)
    assert cdr_layout.split_payload('CameraInfo', data) is None
    assert frame_input._deserialize_in_place(CameraInfo, data) == info


def test_lengths_past_the_end_are_refused_before_any_split():
    data = bytearray(serialize_message(frame_triple(5)[0]))
    data[-64 * 48 * 3 - 4 : -64 * 48 * 3] = (1 << 30).to_bytes(4, 'little')
    with pytest.raises(FrameError, match='malformed Image'):
        cdr_layout.split_payload('Image', bytes(data))


def _serialised_triple(colour, depth, info) -> Triple:
    return Triple(
        *(Stamped(5, (type(msg), serialize_message(msg))) for msg in (colour, depth, info))
    )


@pytest.mark.parametrize(
    ('colour_encoding', 'depth_encoding'),
    [('rgb8', '16UC1'), ('bgr8', '32FC1'), ('mono8', 'mono16'), ('bgra8', '16UC1')],
)
def test_a_serialised_triple_decodes_as_its_messages_do(colour_encoding, depth_encoding):
    rng = np.random.default_rng(3)
    h = header(5)
    channels = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'bgra8': 4}[colour_encoding]
    colour = rng.integers(0, 256, (48, 64, channels), dtype=np.uint8).squeeze()
    depth = (
        rng.random((48, 64), dtype=np.float32) * 5
        if depth_encoding == '32FC1'
        else rng.integers(0, 9000, (48, 64), dtype=np.uint16)
    )
    messages = (
        image_msg(colour, colour_encoding, h),
        image_msg(depth, depth_encoding, h),
        camera_info(intrinsics(64, 48), 64, 48, 5),
    )
    from_bytes = frame_input.frame_arrays(
        *frame_input.deserialize_triple(_serialised_triple(*messages)), tolerance=0.01
    )
    from_messages = frame_input.frame_arrays(*messages, tolerance=0.01)
    np.testing.assert_array_equal(from_bytes.rgb, from_messages.rgb)
    np.testing.assert_array_equal(from_bytes.depth, from_messages.depth)
    np.testing.assert_array_equal(from_bytes.K, from_messages.K)
    assert from_bytes.depth.dtype == from_messages.depth.dtype


def test_rgb8_and_16uc1_pixels_are_not_copied():
    triple = _serialised_triple(*frame_triple(5))
    arrays = frame_input.frame_arrays(*frame_input.deserialize_triple(triple), tolerance=0.01)
    for array, stamped in ((arrays.rgb, triple.rgb), (arrays.depth, triple.depth)):
        assert np.shares_memory(array, np.frombuffer(stamped.payload[1], np.uint8))
        assert not array.flags.writeable


def test_a_message_read_in_place_can_be_copied():
    """copy.copy makes the instance without __init__; its fields must still read through."""
    import copy

    triple = _serialised_triple(*frame_triple(6))
    colour, _, _ = frame_input.deserialize_triple(triple)
    assert isinstance(colour, frame_input.PixelsInPlace)
    duplicate = copy.copy(colour)
    assert (duplicate.height, duplicate.width, duplicate.encoding) == (
        colour.height,
        colour.width,
        colour.encoding,
    )
    assert duplicate.data is colour.data
    bare = frame_input.PixelsInPlace.__new__(frame_input.PixelsInPlace)
    assert not hasattr(bare, 'height')  # AttributeError, not a RecursionError
