"""Sizes are bounded before decoding: what PNG and JPEG headers declare, read without a decoder.

The payloads are real encodings (OpenCV) whose headers are edited to declare other sizes, so a
16000 x 16000 image costs a few hundred bytes here; the mutation test checks the header reader
against the decoder itself: whenever both accept a payload, they agree on its size.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from rgbd_seg_ros.core import image_codec, image_header, messages
from rgbd_seg_ros.core.image_header import (
    MAX_PIXELS,
    MAX_SIDE,
    DeclaredSize,
    ImageTooLargeError,
    check_size,
    declared_size,
)
from rgbd_seg_ros.errors import FrameError


def _png(width: int = 8, height: int = 6, channels: int = 3) -> bytes:
    shape = (height, width, channels) if channels > 1 else (height, width)
    ok, data = cv2.imencode('.png', np.full(shape, 90, np.uint8))
    assert ok
    return data.tobytes()


def _jpeg(width: int = 8, height: int = 6, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    ok, data = cv2.imencode('.jpg', np.full((height, width, 3), 90, np.uint8), params)
    assert ok
    return data.tobytes()


def png_declaring(width: int, height: int) -> bytes:
    """A real small PNG whose IHDR (CRC fixed up) declares ``width`` x ``height``."""
    data = bytearray(_png())
    struct.pack_into('>II', data, 16, width, height)
    struct.pack_into('>I', data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _sof_offset(data: bytes) -> int:
    for marker in (b'\xff\xc0', b'\xff\xc2'):
        at = data.find(marker)
        if at > 0:
            return at
    raise AssertionError('no SOF marker')


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A real small JPEG whose frame header declares ``width`` x ``height``."""
    data = bytearray(_jpeg(progressive=progressive))
    struct.pack_into('>HH', data, _sof_offset(bytes(data)) + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize('progressive', [False, True])
def test_jpeg_size_is_read_from_its_frame_header(progressive):
    assert declared_size(_jpeg(40, 30, progressive)) == DeclaredSize('jpeg', 40, 30)


@pytest.mark.parametrize('channels', [1, 3, 4])
def test_png_size_is_read_from_ihdr(channels):
    assert declared_size(_png(17, 5, channels)) == DeclaredSize('png', 17, 5)


def test_png_sixteen_bit_and_numpy_payloads():
    ok, data = cv2.imencode('.png', np.zeros((7, 9), np.uint16))
    assert ok
    assert declared_size(data.reshape(-1)) == DeclaredSize('png', 9, 7)


def test_a_16000_square_png_is_refused_before_decoding(monkeypatch):
    payload = png_declaring(16000, 16000)
    assert len(payload) < 200
    decoded = []
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: decoded.append(a))  # must not be reached
    with pytest.raises(ImageTooLargeError, match='16000x16000'):
        image_codec.decode_compressed('rgb8; png compressed bgr8', payload)
    assert decoded == []


@pytest.mark.parametrize('progressive', [False, True])
def test_a_jpeg_declaring_a_huge_size_is_refused_before_decoding(monkeypatch, progressive):
    payload = jpeg_declaring(65535, 60000, progressive)
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: pytest.fail('decoder reached'))
    with pytest.raises(ImageTooLargeError, match='65535x60000'):
        image_codec.decode_compressed('jpeg', payload)


def test_compressed_depth_png_is_bounded_too():
    header = struct.pack('<iff', 0, 0.0, 0.0)
    with pytest.raises(ImageTooLargeError):
        image_codec.decode_compressed_depth(
            '16UC1; compressedDepth png', header + png_declaring(20000, 20000)
        )


def test_raw_images_share_the_bounds():
    side = 6000  # 36 Mpx: under the side bound, over the pixel bound; no payload needed
    with pytest.raises(ImageTooLargeError):
        image_codec.decode_image('mono8', side, side, side, 0, b'')
    with pytest.raises(ImageTooLargeError):
        image_codec.decode_image('mono8', 1, MAX_SIDE + 1, MAX_SIDE + 1, 0, b'')
    with pytest.raises(FrameError, match='invalid'):
        image_codec.decode_image('mono8', 0, 4, 4, 0, b'')


def test_a_caller_may_lower_the_bound_but_never_raise_it():
    check_size(100, 100, max_pixels=10_000)
    with pytest.raises(ImageTooLargeError):
        check_size(101, 100, max_pixels=10_000)
    with pytest.raises(ImageTooLargeError):
        check_size(MAX_SIDE, MAX_SIDE, max_pixels=MAX_SIDE * MAX_SIDE)
    assert MAX_PIXELS < MAX_SIDE * MAX_SIDE


def test_message_readers_pass_the_lowered_bound_to_every_path():
    class Compressed:
        format = 'png'
        data = _png(20, 10)

    class Raw:
        encoding, height, width, step, is_bigendian = 'rgb8', 10, 20, 60, 0
        data = bytes(600)

    for msg in (Compressed(), Raw()):
        assert messages.decode_colour(msg, max_pixels=200).shape == (10, 20, 3)
        with pytest.raises(ImageTooLargeError):
            messages.decode_colour(msg, max_pixels=199)


def test_formats_other_than_png_and_jpeg_are_refused_unread(monkeypatch):
    ok, bmp = cv2.imencode('.bmp', np.zeros((4, 4, 3), np.uint8))
    assert ok
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: pytest.fail('decoder reached'))
    for fmt in ('png', 'jpeg', 'rgb8; png compressed bgr8'):
        with pytest.raises(FrameError, match='neither PNG nor JPEG'):
            image_codec.decode_compressed(fmt, bmp.tobytes())


def test_a_payload_of_the_other_kind_than_its_format_is_refused():
    with pytest.raises(FrameError, match='is jpeg, not png'):
        image_codec.decode_compressed('png', _jpeg())
    with pytest.raises(FrameError, match='is png, not jpeg'):
        image_codec.decode_compressed('jpeg', _png())


@pytest.mark.parametrize(
    'payload',
    [
        b'\x89PNG\r\n\x1a\n',  # signature only
        b'\x89PNG\r\n\x1a\n' + struct.pack('>I4sII', 13, b'IDAT', 8, 8),  # IHDR not first
        b'\x89PNG\r\n\x1a\n' + struct.pack('>I4sII', 12, b'IHDR', 8, 8),  # wrong length
        png_declaring(0, 8),
        png_declaring(8, 1 << 31),
        b'\xff\xd8',  # SOI only
        b'\xff\xd8\xff\xd9',  # EOI before any frame
        b'\xff\xd8\xff\xda\x00\x08' + bytes(6),  # scan before any frame
        b'\xff\xd8\xff\xe0\x00\x01',  # segment length below 2
        b'\xff\xd8\xff\xe0\x00\x10JFIF',  # segment runs past the end
        b'\xff\xd8\x00\xff\xc0',  # garbage where a marker must be
        b'\xff\xd8\xff\xc0\x00\x11\x08',  # truncated frame header
        jpeg_declaring(8, 0),  # height deferred to a DNL marker
        b'GIF89a' + bytes(10),
        b'',
    ],
)
def test_malformed_headers_are_refused(payload):
    with pytest.raises(FrameError):
        declared_size(payload)


def test_fill_bytes_and_restart_markers_before_the_frame_are_walked():
    data = _jpeg(12, 10)
    at = _sof_offset(data)
    padded = data[:at] + b'\xff\xff\xff\xd0' + data[at:]
    assert declared_size(padded) == DeclaredSize('jpeg', 12, 10)


def _decoded_size(payload: bytes) -> tuple[int, int] | None:
    try:
        image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    return None if image is None else (image.shape[1], image.shape[0])


@pytest.mark.parametrize('seed', range(4))
def test_mutated_headers_never_escape_and_agree_with_the_decoder(seed):
    """Random byte edits, truncations and splices in the header region of real payloads:
    the reader raises FrameError or reports a size, and whenever the decoder also accepts the
    payload, the size it decodes is the size the header reader reported (so the check can be
    trusted to bound what the decoder allocates)."""
    rng = np.random.default_rng(seed)
    sources = [_png(23, 11), _png(5, 9, 1), _jpeg(31, 17), _jpeg(16, 8, progressive=True)]
    checked = 0
    for _ in range(400):
        data = bytearray(sources[int(rng.integers(len(sources)))])
        region = min(len(data), 200)
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(3))
            at = int(rng.integers(2, region))
            if kind == 0:
                data[at] = int(rng.integers(256))
            elif kind == 1:
                data = data[:at]
                region = min(region, len(data))
                if region <= 2:
                    break
            else:
                data[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 6)), dtype=np.uint8))
        payload = bytes(data)
        try:
            declared = declared_size(payload)
        except FrameError:
            continue
        assert 0 < declared.width < 1 << 31 and 0 < declared.height < 1 << 31
        if declared.width * declared.height > 4096:  # enlarged by the edit: do not decode it
            continue
        decoded = _decoded_size(payload)
        if decoded is not None:
            assert decoded == (declared.width, declared.height), payload[:40]
            checked += 1
    assert checked > 0


def test_the_bounds_are_those_the_module_documents():
    assert image_header.MAX_SIDE == 32768 and image_header.MAX_PIXELS == 33_554_432
