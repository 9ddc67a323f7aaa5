"""Inputs bounded before they are decoded, on the real node over real (loopback) DDS.

The test's own participant is the camera: it interleaves each kind of bad frame with good
ones, and the node must count every kind under its reason, warn about each kind (one kind's
warnings must not hide another's), never publish an output carrying a bad stamp, and keep
publishing outputs for the good frames.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from node_fixtures import HEIGHT, NODE_PARAMS, WIDTH, CompressedBytes, Streamer, small_checkpoint
from rclpy.serialization import serialize_message
from ros_frames import camera_info, frame_triple, header, intrinsics
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BASE_PARAMS = {
    **NODE_PARAMS,
    'max_input_pixels': WIDTH * HEIGHT,  # the good frames fit exactly; 2x per side does not
}
BIG_W, BIG_H = 2 * WIDTH, 2 * HEIGHT


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp('ckpt') / 'five.safetensors', seed=1)


@pytest.fixture
def start_node(launch_node, ros_peer, checkpoint):
    def start(**params):
        proc = launch_node(
            'segmentation_node', params={**BASE_PARAMS, 'checkpoint': str(checkpoint), **params}
        )
        streamer = Streamer(ros_peer, proc)
        compressed = params.get('image_transport') == 'compressed'
        streamer.wait_connected('rgb_compressed' if compressed else 'rgb')
        return proc, streamer

    return start


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _restamp(sec: int, nanosec: int, *msgs) -> None:
    for msg in msgs:
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec


def _png_declaring(width: int, height: int) -> bytes:
    _ok, png = cv2.imencode('.png', np.zeros((4, 4, 3), np.uint8))
    data = bytearray(png.tobytes())
    struct.pack_into('>II', data, 16, width, height)
    return bytes(data)


def _jpeg_declaring(width: int, height: int) -> bytes:
    _ok, jpg = cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))
    data = bytearray(jpg.tobytes())
    struct.pack_into('>HH', data, data.find(b'\xff\xc0') + 5, height, width)
    return bytes(data)


def _as_png(rgb):
    """The same frame as a lossless compressed image (the node reads the compressed topic)."""
    pixels = np.frombuffer(bytes(rgb.data), np.uint8).reshape(rgb.height, rgb.width, 3)
    _ok, png = cv2.imencode('.png', pixels[..., ::-1] if rgb.encoding == 'rgb8' else pixels)
    return CompressedImage(header=rgb.header, format='png', data=png.tobytes())


def _big_triple(rgb, stamp_ns: int, fov_scale: float = 1.0):
    big_rgb, big_depth, _ = frame_triple(stamp_ns, BIG_W, BIG_H)
    info = camera_info(intrinsics(BIG_W, BIG_H, fov_scale), BIG_W, BIG_H, stamp_ns)
    return big_rgb, big_depth, info


def _breakers(streamer: Streamer, mismatched: set[tuple[int, int]]):
    """Each takes a good triple and returns what to publish instead (a message may be bytes)."""

    def negative_stamp(rgb, depth, info):
        _restamp(-5, 0, rgb, depth, info)
        return rgb, depth, info

    def nanosec_overflow(rgb, depth, info):
        _restamp(rgb.header.stamp.sec, 1_500_000_000, rgb, depth, info)
        return rgb, depth, info

    def png_16000_square(rgb, depth, info):
        data = _png_declaring(16000, 16000)
        return CompressedImage(header=rgb.header, format='png', data=data), depth, info

    def jpeg_huge(rgb, depth, info):
        data = _jpeg_declaring(60000, 60000)
        return CompressedImage(header=rgb.header, format='jpeg', data=data), depth, info

    def raw_above_the_bound(rgb, depth, info):
        return _big_triple(rgb, streamer.stamp_ns)

    def malformed_cdr(rgb, depth, info):
        png = _as_png(rgb)
        data = bytearray(serialize_message(png))
        struct.pack_into('<I', data, len(data) - len(png.data) - 4, 0x7FFFFFFF)
        return CompressedBytes(data), depth, info

    def other_depth_frame(rgb, depth, info):
        depth.header = header(streamer.stamp_ns, 'some_other_depth_frame')
        mismatched.add(_stamp(rgb))
        return rgb, depth, info

    return [
        negative_stamp,
        nanosec_overflow,
        png_16000_square,
        jpeg_huge,
        raw_above_the_bound,
        malformed_cdr,
        other_depth_frame,
    ]


EXPECTED = {
    'skipped_invalid_stamp': 'skipping frame (invalid_stamp',
    'skipped_too_large': 'skipping frame (too_large',
    'skipped_bad_colour': 'skipping frame (bad_colour',
    'frame_id_mismatch': 'frame_id_mismatch (',
}


def test_every_bad_input_is_refused_or_noted_counted_and_good_frames_keep_flowing(start_node):
    # Compressed transport: the bad payloads come on the compressed topic, so the good frames do
    # too (lossless PNG); the frame above the bound is then a real PNG of that size.
    proc, streamer = start_node(oversize_policy='refuse', image_transport='compressed')
    labels = streamer.listen('labels', Image)

    def compressed(rgb, depth, info):
        return (_as_png(rgb) if isinstance(rgb, Image) else rgb), depth, info

    streamer.stream_until(lambda: len(labels) >= 2, 'first outputs', mutate=compressed)
    mismatched: set[tuple[int, int]] = set()
    breakers = _breakers(streamer, mismatched)
    sent = {'n': 0}

    def alternate(rgb, depth, info):
        sent['n'] += 1
        if sent['n'] % 2:
            rgb, depth, info = breakers[(sent['n'] // 2) % len(breakers)](rgb, depth, info)
        return compressed(rgb, depth, info)

    def done() -> bool:
        diag = streamer.latest_diag()
        counted = all(int(diag.get(key, 0)) >= 1 for key in EXPECTED)
        # at least one frame from another depth frame was still segmented
        processed = any(_stamp(msg) in mismatched for msg in labels)
        return counted and processed

    good_before = len(labels)
    streamer.stream_until(done, 'every kind counted while outputs flow', mutate=alternate)
    streamer.stream_until(
        lambda: len(labels) >= good_before + 5, 'more good outputs', mutate=compressed
    )
    assert proc.alive()
    diag = streamer.latest_diag()
    assert int(diag['skipped_invalid_stamp']) >= 2, diag  # both kinds of invalid stamp
    assert int(diag['skipped_too_large']) >= 1 and int(diag['skipped_bad_colour']) >= 1, diag
    for msg in labels:  # no output ever carried an invalid stamp
        sec, nanosec = _stamp(msg)
        assert sec >= 0 and 0 <= nanosec < 1_000_000_000, (sec, nanosec)
        assert (msg.height, msg.width) == (HEIGHT, WIDTH)  # nothing above the bound got through
    assert proc.interrupt() == 0
    log = proc.log()
    for key, line in EXPECTED.items():  # each reason warned: none hidden by another's throttle
        assert line in log, (key, log[-3000:])
    assert 'sequence size exceeds remaining buffer' not in log


def test_frames_above_the_bound_are_scaled_down_with_their_intrinsics(start_node):
    proc, streamer = start_node(oversize_policy='downscale')
    labels = streamer.listen('labels', Image)
    infos = streamer.listen('camera_info', CameraInfo)
    streamer.stream_until(lambda: len(labels) >= 2, 'first outputs')
    big: set[tuple[int, int]] = set()
    sent = {'n': 0}

    def alternate(rgb, depth, info):
        sent['n'] += 1
        if sent['n'] % 2:
            return rgb, depth, info
        big.add(_stamp(rgb))
        return _big_triple(rgb, streamer.stamp_ns, fov_scale=1.5)

    def big_one_published() -> bool:
        return any(_stamp(msg) in big for msg in infos) and any(
            _stamp(msg) in big for msg in labels
        )

    streamer.stream_until(big_one_published, 'outputs of a scaled-down frame', mutate=alternate)
    n = len(labels)
    streamer.stream_until(lambda: len(labels) >= n + 3, 'outputs after it')
    # /diagnostics is periodic: wait for one published after the scaled frame was counted.
    streamer.stream_until(
        lambda: int(streamer.latest_diag().get('downscaled_input', 0)) >= 1,
        'downscaled_input counted in /diagnostics',
    )
    for msg in labels:
        assert (msg.height, msg.width) == (HEIGHT, WIDTH)
    scaled = [msg for msg in infos if _stamp(msg) in big]
    K = intrinsics(BIG_W, BIG_H, 1.5)
    for msg in scaled:
        assert (msg.width, msg.height) == (WIDTH, HEIGHT)
        assert msg.k[0] == pytest.approx(K[0, 0] / 2) and msg.k[4] == pytest.approx(K[1, 1] / 2)
        assert msg.k[2] == pytest.approx((K[0, 2] + 0.5) / 2 - 0.5)
    assert proc.interrupt() == 0
