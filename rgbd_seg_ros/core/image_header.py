"""The size an image declares, checked before a single pixel is decoded.

A compressed payload is small on the wire but says how large it will be once decoded: a
747 KB PNG may declare 16000 x 16000 pixels and cost gigabytes to decode before anything
could look at the result. So the declared size is read from the header (PNG's IHDR chunk,
JPEG's start-of-frame segment) and held to the same bounds raw images are, and a payload
whose header cannot be read is refused rather than handed to a decoder that would accept far
more formats (BMP, TIFF, WebP, OpenEXR, ...) than a camera topic carries.

The JPEG walk follows the segment structure the way libjpeg reads it (each marker's length
skips to the next, the first start-of-frame decides the size), so the size checked here is the
size the decoder would allocate; anything that does not follow that structure is refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rgbd_seg_ros.errors import FrameError

#: Longest side any input image may have (raw or compressed).
MAX_SIDE = 1 << 15
#: Most pixels any input image may have (raw or compressed): 33.5 Mpx holds 8K UHD
#: (7680 x 4320), and even 16-bit RGBA at this size stays near 270 MB decoded.
MAX_PIXELS = 1 << 25

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SIGNATURE = b'\xff\xd8'

Kind = Literal['png', 'jpeg']

# Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic, hierarchical);
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone (no length field): TEM and the restart markers.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_SOS, _EOI, _SOI = 0xDA, 0xD9, 0xD8


class ImageTooLargeError(FrameError):
    """An image larger than the bounds allowed (by the package, or by the node's setting)."""


@dataclass(frozen=True)
class DeclaredSize:
    """What a compressed payload's header says it holds."""

    kind: Kind
    width: int
    height: int


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS, what: str = 'image') -> None:
    """FrameError for a size that is not positive, ImageTooLarge beyond the bounds.

    ``max_pixels`` may lower the package's bound (a node's own limit), never raise it.
    """
    if width <= 0 or height <= 0:
        raise FrameError(f'invalid {what} size {width}x{height}')
    limit = min(max_pixels, MAX_PIXELS)
    if width > MAX_SIDE or height > MAX_SIDE or width * height > limit:
        raise ImageTooLargeError(
            f'{what} {width}x{height} is larger than allowed (at most {MAX_SIDE} per side '
            f'and {limit} pixels)'
        )


def declared_size(payload: bytes | np.ndarray) -> DeclaredSize:
    """The kind and size a PNG or JPEG payload declares; FrameError for anything else."""
    head = bytes(payload[:8])
    if head == PNG_SIGNATURE:
        return _png_size(payload)
    if head[:2] == JPEG_SIGNATURE:
        return _jpeg_size(payload)
    raise FrameError('payload is neither PNG nor JPEG (unknown signature)')


def _png_size(payload: bytes | np.ndarray) -> DeclaredSize:
    # The IHDR chunk must come first: length 13, type, width, height (big-endian uint32).
    chunk = bytes(payload[8:24])
    if len(chunk) < 16:
        raise FrameError('PNG payload is too short to hold its header')
    length, kind, width, height = struct.unpack('>I4sII', chunk)
    if length != 13 or kind != b'IHDR':
        raise FrameError('PNG payload does not start with an IHDR chunk')
    if width == 0 or height == 0 or width >= 1 << 31 or height >= 1 << 31:
        raise FrameError(f'PNG header declares an invalid size {width}x{height}')
    return DeclaredSize('png', width, height)


def _jpeg_size(payload: bytes | np.ndarray) -> DeclaredSize:
    # A view, not a copy, of what may be a large payload.
    if isinstance(payload, np.ndarray):
        data = np.ascontiguousarray(payload).reshape(-1).view(np.uint8).data
    else:
        data = memoryview(payload)
    pos, end = 2, len(data)
    while pos < end:
        if data[pos] != 0xFF:
            raise FrameError(f'JPEG payload has no marker where one must be (byte {pos})')
        while pos < end and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (_SOS, _EOI, _SOI, 0x00):
            raise FrameError(f'JPEG payload has no frame header before marker 0x{marker:02X}')
        if pos + 2 > end:
            break
        (length,) = struct.unpack_from('>H', data, pos)
        if length < 2:
            raise FrameError(f'JPEG segment 0x{marker:02X} has an invalid length {length}')
        if marker in _SOF_MARKERS:
            if length < 8 or pos + 7 > end:
                raise FrameError('JPEG frame header is truncated')
            height, width = struct.unpack_from('>HH', data, pos + 3)
            if width == 0 or height == 0:
                # Height 0 defers it to a DNL marker after the first scan: unbounded up front.
                raise FrameError(f'JPEG frame header declares {width}x{height}')
            return DeclaredSize('jpeg', width, height)
        pos += length
    raise FrameError('JPEG payload ends before its frame header')
