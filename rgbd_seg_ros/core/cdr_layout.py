"""Every length in a serialised input message checked against its buffer, before deserialising.

The node takes its inputs as CDR bytes and deserialises only the triple it segments. The C
deserialiser refuses a sequence whose length runs past the buffer, but first writes a line to
stderr for it ("sequence size exceeds remaining buffer"), unthrottled and outside the node's
logging: one line per malformed message at camera rate. Walking the fields here first turns
such a message into an ordinary skip, counted and throttled by reason like any other.

Only the layouts of the node's inputs (Image, CompressedImage, CameraInfo) are described, in
plain CDR (XCDR1: primitives aligned to their size from the end of the 4-byte encapsulation
header, strings and sequences as a uint32 count then their elements), which is what ROS 2's
Fast DDS middleware writes and ``ros/conversions.py`` already requires for the stamp.
"""

from __future__ import annotations

import struct

from rgbd_seg_ros.errors import FrameError

# Field kinds: a primitive by its size in bytes, 'string', a sequence of a primitive
# ('seq1', 'seq8'), or a fixed array of a primitive ('arr8x9': nine 8-byte values).
_HEADER = ('4', '4', 'string')  # stamp.sec, stamp.nanosec, frame_id
LAYOUTS: dict[str, tuple[str, ...]] = {
    'Image': (*_HEADER, '4', '4', 'string', '1', '4', 'seq1'),
    'CompressedImage': (*_HEADER, 'string', 'seq1'),
    'CameraInfo': (
        *_HEADER,
        '4',  # height
        '4',  # width
        'string',  # distortion_model
        'seq8',  # d
        'arr8x9',  # k
        'arr8x9',  # r
        'arr8x12',  # p
        '4',  # binning_x
        '4',  # binning_y
        '4',  # roi.x_offset
        '4',  # roi.y_offset
        '4',  # roi.height
        '4',  # roi.width
        '1',  # roi.do_rectify
    ),
}
_ORIGIN = 4  # alignment counts from the end of the encapsulation header


class _Cursor:
    def __init__(self, data: bytes | memoryview, type_name: str) -> None:
        self.data = data
        self.pos = _ORIGIN
        self.order = '<' if data[1] == 1 else '>'
        self.type_name = type_name

    def take(self, size: int, align: int, what: str) -> int:
        """Skip ``size`` bytes aligned to ``align``; return where they start."""
        self.pos += (-(self.pos - _ORIGIN)) % align
        start = self.pos
        if start + size > len(self.data):
            raise FrameError(
                f'malformed {self.type_name}: {what} needs {size} bytes at offset {start}, '
                f'the message has {len(self.data)}'
            )
        self.pos = start + size
        return start

    def count(self, what: str) -> int:
        at = self.take(4, 4, f'the length of {what}')
        (value,) = struct.unpack_from(self.order + 'I', self.data, at)
        return int(value)


def check_lengths(type_name: str, data: bytes | memoryview) -> None:
    """FrameError when a length in ``data`` (a serialised ``type_name``) runs past its end.

    Types without a layout here are left to the deserialiser.
    """
    _walk(type_name, data)


def split_payload(type_name: str, data: bytes) -> tuple[bytes, memoryview] | None:
    """``data`` as (the message with an empty pixel sequence, a view of the pixel bytes).

    Image and CompressedImage end in their ``data`` sequence, so the bytes before its length
    plus a zero length are the same message without pixels: the real deserialiser reads the
    header, sizes and encoding from those few bytes, and the pixels (most of the message)
    are read in place instead of copied into the message and again out of it. None for a type
    that does not end in a byte sequence. Lengths are checked as by ``check_lengths``.
    """
    end = _walk(type_name, data)
    if end is None or LAYOUTS[type_name][-1] != 'seq1':
        return None
    length_at, start, stop = end
    empty = struct.pack('<I' if data[1] == 1 else '>I', 0)
    return bytes(data[:length_at]) + empty, memoryview(data)[start:stop]


def _walk(type_name: str, data: bytes | memoryview) -> tuple[int, int, int] | None:
    """Check every length; return where the last field's length and its elements are."""
    layout = LAYOUTS.get(type_name)
    if layout is None:
        return None
    if len(data) < _ORIGIN or data[0] != 0 or data[1] not in (0, 1):
        raise FrameError(f'malformed {type_name}: not plain CDR ({len(data)} bytes)')
    cursor = _Cursor(data, type_name)
    length_at = start = stop = 0
    for index, kind in enumerate(layout):
        what = f'field {index}'
        length_at = cursor.pos
        if kind == 'string':
            cursor.take(cursor.count(what), 1, f'string {what}')
        elif kind.startswith('seq'):
            size = int(kind[3:])
            count = cursor.count(what)
            length_at = cursor.pos - 4
            start = cursor.take(count * size, size, f'sequence {what}')
            stop = cursor.pos
        elif kind.startswith('arr'):
            size, length = (int(part) for part in kind[3:].split('x'))
            cursor.take(size * length, size, f'array {what}')
        else:
            cursor.take(int(kind), int(kind), what)
    return length_at, start, stop
