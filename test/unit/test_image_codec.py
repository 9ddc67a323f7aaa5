"""rgbd_seg_ros.core.image_codec: raw, compressed and compressedDepth payloads."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from rgbd_seg_ros.core import image_codec as ic
from rgbd_seg_ros.errors import FrameError

H, W = 48, 64


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', '8UC3'])
@pytest.mark.parametrize('padding', [0, 5])
def test_colour_roundtrip(rgb, encoding, padding):
    step, data = ic.encode_image(rgb, encoding, row_padding=padding)
    assert step == W * ic.bytes_per_pixel(encoding) + padding
    out = ic.decode_image(encoding, H, W, step, False, data)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


def test_bgr_byte_order_is_real(rgb):
    raw = np.ascontiguousarray(rgb[:, :, ::-1]).tobytes()
    np.testing.assert_array_equal(ic.decode_image('bgr8', H, W, W * 3, 0, raw), rgb)
    np.testing.assert_array_equal(ic.decode_image('rgb8', H, W, W * 3, 0, rgb.tobytes()), rgb)


def test_rgb8_is_zero_copy_view():
    buf = np.arange(H * W * 3, dtype=np.uint64).astype(np.uint8)
    out = ic.decode_image('rgb8', H, W, W * 3, False, buf)
    assert np.shares_memory(out, buf)


def test_mono8_as_rgb_and_as_labels():
    grey = np.arange(H * W, dtype=np.uint32).reshape(H, W).astype(np.uint8)
    step, data = ic.encode_image(grey, 'mono8', row_padding=3)
    colour = ic.decode_image('mono8', H, W, step, False, data)
    assert colour.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(colour[:, :, c], grey)
    labels = ic.decode_image('mono8', H, W, step, False, data, mono_as_rgb=False)
    np.testing.assert_array_equal(labels, grey)


@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('padding', [0, 2, 3])
@pytest.mark.parametrize('encoding', ['16UC1', 'mono16'])
def test_uint16_roundtrip(encoding, bigendian, padding):
    depth = np.random.default_rng(1).integers(0, 65536, (H, W), dtype=np.uint16)
    step, data = ic.encode_image(depth, encoding, row_padding=padding, bigendian=bigendian)
    out = ic.decode_image(encoding, H, W, step, bigendian, data)
    assert out.dtype == np.uint16 and out.dtype.byteorder in ('=', '<', '|')
    np.testing.assert_array_equal(out, depth)


def test_bigendian_bytes_are_interpreted_as_such():
    data = struct.pack('>2H', 1000, 2)
    np.testing.assert_array_equal(ic.decode_image('16UC1', 1, 2, 4, True, data), [[1000, 2]])
    data = struct.pack('>f', 1.5)
    np.testing.assert_array_equal(ic.decode_image('32FC1', 1, 1, 4, 1, data), [[1.5]])


@pytest.mark.parametrize('bigendian', [False, True])
def test_float_depth_roundtrip_keeps_nan(bigendian):
    depth = np.random.default_rng(2).uniform(0.3, 9.0, (H, W)).astype(np.float32)
    depth[0, 0] = np.nan
    depth[1, 1] = np.inf
    step, data = ic.encode_image(depth, '32FC1', row_padding=4, bigendian=bigendian)
    out = ic.decode_image('32FC1', H, W, step, bigendian, data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, depth)


def test_accepts_memoryview_and_array_array():
    import array

    depth = np.full((2, 3), 7, np.uint16)
    step, data = ic.encode_image(depth, '16UC1')
    for buf in (memoryview(data), array.array('B', data), bytearray(data)):
        np.testing.assert_array_equal(ic.decode_image('16UC1', 2, 3, step, 0, buf), depth)


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (('yuv422', H, W, W * 2, 0, b'\0' * (H * W * 2)), 'unsupported image encoding'),
        (('rgb8', H, W, W * 2, 0, b'\0' * (H * W * 3)), 'step'),
        (('rgb8', H, W, W * 3, 0, b'\0' * 10), 'needs'),
        (('rgb8', 0, W, W * 3, 0, b''), 'size'),
        (('16UC1', H, W, W * 2, 0, object()), 'byte buffer'),
    ],
)
def test_bad_raw_images(args, message):
    with pytest.raises(FrameError, match=message):
        ic.decode_image(*args)


def test_png_compressed_is_lossless(rgb):
    fmt, data = ic.encode_compressed(rgb, 'png')
    np.testing.assert_array_equal(ic.decode_compressed(fmt, data), rgb)
    np.testing.assert_array_equal(ic.decode_compressed('png', data), rgb)
    np.testing.assert_array_equal(ic.decode_compressed('', data), rgb)  # sniffed


def test_jpeg_compressed_is_close(rgb):
    smooth = np.zeros((H, W, 3), np.uint8)
    smooth[:, :, 0] = 200
    smooth[:, :, 2] = np.linspace(0, 255, W).astype(np.uint8)
    fmt, data = ic.encode_compressed(smooth, 'jpeg', quality=98)
    assert 'jpeg' in fmt
    out = ic.decode_compressed(fmt, data)
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - smooth).mean() < 3  # RGB order kept (no channel swap)


def test_compressed_mono_and_16bit():
    grey = np.random.default_rng(3).integers(0, 256, (H, W), dtype=np.uint8)
    fmt, data = ic.encode_compressed(grey, 'png')
    np.testing.assert_array_equal(ic.decode_compressed(fmt, data, mono_as_rgb=False), grey)
    assert ic.decode_compressed(fmt, data).shape == (H, W, 3)
    ids = np.random.default_rng(3).integers(0, 900, (H, W), dtype=np.uint16)
    fmt, data = ic.encode_compressed(ids, 'png')
    np.testing.assert_array_equal(ic.decode_compressed(fmt, data), ids)


def test_bad_compressed():
    with pytest.raises(FrameError, match='cannot decode'):
        ic.decode_compressed('jpeg', b'\xff\xd8garbage')
    with pytest.raises(FrameError, match='empty'):
        ic.decode_compressed('png', b'')
    with pytest.raises(FrameError, match='unsupported'):
        ic.decode_compressed('tiff', b'II*\0')
    with pytest.raises(FrameError, match='compressedDepth'):
        ic.decode_compressed('16UC1; compressedDepth png', b'')


def test_compressed_depth_16uc1():
    depth = np.random.default_rng(4).integers(0, 10000, (H, W), dtype=np.uint16)
    fmt, data = ic.encode_compressed_depth(depth)
    assert fmt == '16UC1; compressedDepth png'
    out = ic.decode_compressed_depth(fmt, data)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)
    # Old payloads without the 12-byte header are bare PNGs.
    np.testing.assert_array_equal(ic.decode_compressed_depth(fmt, data[12:]), depth)


def test_compressed_depth_32fc1_inverse_quantisation():
    depth = np.random.default_rng(5).uniform(0.5, 8.0, (H, W)).astype(np.float32)
    depth[0, :4] = np.nan
    depth[1, :4] = 0.0
    fmt, data = ic.encode_compressed_depth(depth)
    out = ic.decode_compressed_depth(fmt, data)
    assert out.dtype == np.float32
    assert np.isnan(out[0, :4]).all() and np.isnan(out[1, :4]).all()
    valid = np.isfinite(depth) & (depth > 0)
    # Quantisation step at 8 m with the default parameters is about 6.4 mm.
    assert np.abs(out[valid] - depth[valid]).max() < 0.01


def test_bad_compressed_depth():
    with pytest.raises(FrameError, match='RVL'):
        ic.decode_compressed_depth('16UC1; compressedDepth rvl', b'\0' * 20)
    with pytest.raises(FrameError, match='too short'):
        ic.decode_compressed_depth('16UC1; compressedDepth png', b'\0' * 5)
    with pytest.raises(FrameError, match='PNG'):
        ic.decode_compressed_depth('16UC1; compressedDepth png', b'\0' * 40)
    _, rgb_png = ic.encode_compressed(np.zeros((4, 4, 3), np.uint8), 'png')
    with pytest.raises(FrameError, match='16-bit'):
        ic.decode_compressed_depth('16UC1; compressedDepth png', rgb_png)


def test_encode_rejects_wrong_arrays():
    with pytest.raises(FrameError):
        ic.encode_image(np.zeros((4, 4), np.uint8), 'rgb8')
    with pytest.raises(FrameError):
        ic.encode_image(np.zeros((4, 4), np.float32), '16UC1')


def test_depth_to_millimetres():
    metres = np.array([[0.0, np.nan, np.inf, -1.0], [0.0004, 0.0006, 1.2344, 70.0]], np.float32)
    np.testing.assert_array_equal(ic.depth_to_millimetres(metres), [[0, 0, 0, 0], [0, 1, 1234, 0]])
    mm = np.array([[1, 2]], np.uint16)
    assert ic.depth_to_millimetres(mm) is mm
    with pytest.raises(FrameError):
        ic.depth_to_millimetres(np.zeros((2, 2), np.int32))
