"""Image message payloads <-> numpy arrays, without cv_bridge (numpy + OpenCV only).

The functions take the *fields* of ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage``,
never the message objects; :mod:`rgbd_seg_ros.core.messages` reads those fields from rclpy and
rosbags messages alike and decides which encodings each kind of topic may use.

Conventions of the returned arrays:

* colour (``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``8UC3``, ``8UC4``): RGB uint8 HxWx3;
  alpha is dropped;
* ``mono8`` / ``8UC1``: RGB uint8 HxWx3 by default (grey replicated), or uint8 HxW with
  ``mono_as_rgb=False`` (label images);
* ``16UC1`` / ``mono16``: uint16 HxW (depth in millimetres for depth topics);
* ``32FC1``: float32 HxW (depth in metres for depth topics).

Row padding (``step`` larger than ``width * bytes_per_pixel``) and big-endian payloads are
handled. Every size, raw or declared by a compressed header, is held to the bounds of
:mod:`rgbd_seg_ros.core.image_header` before anything is decoded (a caller may lower them with
``max_pixels``). Where no reordering, byte swap or padding removal is needed, the result is a
zero-copy view of ``data`` (read-only when ``data`` is immutable, e.g. ``bytes``), so copy it
before writing into it. Every bad input raises :class:`FrameError`.
"""

from __future__ import annotations

import struct

import numpy as np

from rgbd_seg_ros.core import image_header
from rgbd_seg_ros.errors import FrameError

# encoding -> (numpy dtype with little-endian byte order, channels)
_LAYOUT: dict[str, tuple[str, int]] = {
    'rgb8': ('u1', 3),
    'bgr8': ('u1', 3),
    '8UC3': ('u1', 3),
    'rgba8': ('u1', 4),
    'bgra8': ('u1', 4),
    '8UC4': ('u1', 4),
    'mono8': ('u1', 1),
    '8UC1': ('u1', 1),
    'mono16': ('u2', 1),
    '16UC1': ('u2', 1),
    '32FC1': ('f4', 1),
}

#: Encodings :func:`decode_image` accepts (which a colour, depth or label topic may use is
#: decided in :mod:`rgbd_seg_ros.core.messages`).
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUT)

_BGR_ORDER = ('bgr8', 'bgra8', '8UC3', '8UC4')  # 8UCn follows OpenCV's BGR convention
_PNG_SIGNATURE = image_header.PNG_SIGNATURE
_JPEG_SIGNATURE = image_header.JPEG_SIGNATURE


def bytes_per_pixel(encoding: str) -> int:
    """Bytes of one pixel of ``encoding``; FrameError for an encoding we do not support."""
    dtype, channels = _layout(encoding)
    return np.dtype(dtype).itemsize * channels


def _layout(encoding: str) -> tuple[str, int]:
    try:
        return _LAYOUT[encoding]
    except KeyError:
        raise FrameError(
            f'unsupported image encoding {encoding!r} (supported: {", ".join(_LAYOUT)})'
        ) from None


def _as_buffer(data: object) -> np.ndarray:
    """Any bytes-like payload (bytes, memoryview, array.array, ndarray) as flat uint8."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        # `data` is whatever the message carried: frombuffer's TypeError is the buffer check.
        flat: np.ndarray = np.frombuffer(data, dtype=np.uint8)  # type: ignore[call-overload]
        return flat
    except TypeError as err:
        raise FrameError(f'image data is not a byte buffer ({type(data).__name__})') from err


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool | int,
    data: object,
    *,
    mono_as_rgb: bool = True,
    max_pixels: int = image_header.MAX_PIXELS,
) -> np.ndarray:
    """Decode the payload of a raw ``sensor_msgs/Image`` (see the module docstring)."""
    dtype_code, channels = _layout(encoding)
    height, width, step = int(height), int(width), int(step)
    image_header.check_size(width, height, max_pixels)
    item = np.dtype(dtype_code).itemsize
    row_bytes = width * item * channels
    if step < row_bytes:
        raise FrameError(
            f'{encoding} image step {step} is smaller than width * pixel size = {row_bytes}'
        )
    buf = _as_buffer(data)
    needed = (height - 1) * step + row_bytes
    if buf.size < needed:
        raise FrameError(
            f'{encoding} {width}x{height} image needs {height * step} bytes (step {step}), '
            f'got {buf.size}'
        )
    if step == row_bytes:
        rows = buf[: height * row_bytes].reshape(height, row_bytes)
    else:  # drop the row padding (one copy)
        rows = np.ascontiguousarray(
            np.lib.stride_tricks.as_strided(
                buf, shape=(height, row_bytes), strides=(step, 1), writeable=False
            )
        )
    pixels = rows.view(np.dtype(('>' if is_bigendian else '<') + dtype_code))
    if is_bigendian and item > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder('<'))
    if channels == 1:
        image: np.ndarray = pixels.reshape(height, width)
        if mono_as_rgb and item == 1:
            return np.repeat(image[:, :, None], 3, axis=2)
        return image
    image = pixels.reshape(height, width, channels)
    if encoding in _BGR_ORDER:
        return np.ascontiguousarray(image[:, :, 2::-1])
    if channels == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


def _imdecode(buf: np.ndarray, what: str, expected: str, max_pixels: int) -> np.ndarray:
    """Decode a PNG or JPEG payload once its header is read and its size is within bounds.

    ``expected`` is the codec the message's format names ('' when it names none); a payload
    of the other kind is refused, so a format promising lossless PNG cannot carry a JPEG.
    """
    import cv2

    if buf.size == 0:
        raise FrameError(f'{what}: empty payload')
    try:
        declared = image_header.declared_size(buf)
    except FrameError as err:
        raise FrameError(f'{what}: cannot decode ({err})') from err
    if expected and declared.kind != expected:
        raise FrameError(f'{what}: the payload is {declared.kind}, not {expected}')
    image_header.check_size(declared.width, declared.height, max_pixels, f'{what}: declared size')
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise FrameError(f'{what}: cannot decode ({err})') from err
    if image is None:
        raise FrameError(f'{what}: cannot decode the payload (corrupt or unsupported)')
    return image


def _codec_of(fmt: str) -> str:
    text = fmt.lower()
    if 'rvl' in text:
        return 'rvl'
    if 'png' in text:
        return 'png'
    if 'jpeg' in text or 'jpg' in text:
        return 'jpeg'
    return ''


def decode_compressed(
    fmt: str,
    data: object,
    *,
    mono_as_rgb: bool = True,
    max_pixels: int = image_header.MAX_PIXELS,
) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg or png).

    ``fmt`` is the message's ``format`` field: ``jpeg``, ``png`` or image_transport's
    ``"rgb8; jpeg compressed bgr8"`` style. Colour results are RGB uint8 HxWx3; single-channel
    8-bit payloads follow ``mono_as_rgb``; 16-bit single-channel PNGs come back as uint16 HxW.
    """
    codec = _codec_of(fmt)
    if 'compresseddepth' in fmt.lower():
        raise FrameError(
            f'format {fmt!r} is compressedDepth; use decode_compressed_depth for depth topics'
        )
    if codec not in ('png', 'jpeg', ''):
        raise FrameError(f'unsupported CompressedImage format {fmt!r} (expected jpeg or png)')
    buf = _as_buffer(data)
    if not codec and not (bytes(buf[:8]) == _PNG_SIGNATURE or bytes(buf[:2]) == _JPEG_SIGNATURE):
        raise FrameError(f'unsupported CompressedImage format {fmt!r} (expected jpeg or png)')
    image = _imdecode(buf, f'CompressedImage ({fmt or "no format"})', codec, max_pixels)
    return _to_convention(image, mono_as_rgb)


def _to_convention(image: np.ndarray, mono_as_rgb: bool) -> np.ndarray:
    if image.ndim == 2:
        if image.dtype == np.uint8 and mono_as_rgb:
            return np.repeat(image[:, :, None], 3, axis=2)
        return image
    if image.dtype != np.uint8:
        raise FrameError(f'colour image with {image.dtype} samples is not supported')
    if image.shape[2] == 1:
        return _to_convention(image[:, :, 0], mono_as_rgb)
    # OpenCV decodes to BGR(A); image_transport compresses bgr8 even for rgb8 sources.
    return np.ascontiguousarray(image[:, :, 2::-1])


def decode_compressed_depth(
    fmt: str, data: object, *, max_pixels: int = image_header.MAX_PIXELS
) -> np.ndarray:
    """Decode compressed_depth_image_transport's payload.

    The payload is a 12-byte ``ConfigHeader`` (int32 format, float32 depthParam[2]) and a
    PNG. ``"16UC1; compressedDepth png"`` gives uint16 HxW millimetres; ``"32FC1;
    compressedDepth png"`` stores quantised inverse depth and gives float32 HxW metres with
    NaN where invalid. RVL payloads are not supported (FrameError).
    """
    text = fmt.lower()
    codec = _codec_of(fmt)
    if codec == 'rvl':
        raise FrameError(f'compressedDepth format {fmt!r} uses RVL, which is not supported')
    if codec not in ('png', ''):
        raise FrameError(f'unsupported compressedDepth format {fmt!r} (expected png)')
    buf = _as_buffer(data)
    depth_a = depth_b = None
    if bytes(buf[:8]) == _PNG_SIGNATURE:
        png = buf
    else:
        if buf.size < 12 + 8:
            raise FrameError(f'compressedDepth payload too short ({buf.size} bytes)')
        _, depth_a, depth_b = struct.unpack('<iff', bytes(buf[:12]))
        png = buf[12:]
        if bytes(png[:8]) != _PNG_SIGNATURE:
            raise FrameError('compressedDepth payload does not hold a PNG after its header')
    image = _imdecode(png, f'compressedDepth ({fmt})', 'png', max_pixels)
    if image.ndim != 2 or image.dtype != np.uint16:
        raise FrameError(
            f'compressedDepth PNG must be single-channel 16-bit, got {image.dtype} {image.shape}'
        )
    if text.startswith('32fc1'):
        if depth_a is None:
            raise FrameError('32FC1 compressedDepth payload has no quantisation header')
        inv = image.astype(np.float32)
        with np.errstate(divide='ignore', invalid='ignore'):
            depth = np.float32(depth_a) / (inv - np.float32(depth_b))
        depth[image == 0] = np.nan
        metres: np.ndarray = depth.astype(np.float32)
        return metres
    return image


def encode_image(
    array: np.ndarray,
    encoding: str,
    *,
    row_padding: int = 0,
    bigendian: bool = False,
) -> tuple[int, bytes]:
    """Inverse of :func:`decode_image`: returns ``(step, data)`` for a ``sensor_msgs/Image``.

    Colour encodings take RGB uint8 HxWx3 (alpha is set to 255); ``mono8``/``8UC1`` take
    uint8 HxW; ``16UC1``/``mono16`` uint16 HxW; ``32FC1`` float32 HxW. ``row_padding`` adds
    bytes at the end of every row and ``bigendian`` swaps multi-byte samples (both for tests
    of decoders).
    """
    dtype_code, channels = _layout(encoding)
    array = np.asarray(array)
    if channels >= 3:
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise FrameError(f'{encoding} needs RGB uint8 HxWx3, got {array.dtype} {array.shape}')
        pixels = array[:, :, ::-1] if encoding in _BGR_ORDER else array
        if channels == 4:
            alpha = np.full((*array.shape[:2], 1), 255, np.uint8)
            pixels = np.concatenate([pixels, alpha], axis=2)
    else:
        if array.ndim != 2 or array.dtype != np.dtype(dtype_code):
            raise FrameError(
                f'{encoding} needs {np.dtype(dtype_code)} HxW, got {array.dtype} {array.shape}'
            )
        pixels = array
    if bigendian:
        pixels = pixels.astype(pixels.dtype.newbyteorder('>'))
    else:
        pixels = pixels.astype(pixels.dtype.newbyteorder('<'), copy=False)
    height = pixels.shape[0]
    rows = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((height, row_padding), np.uint8)], axis=1)
    return rows.shape[1], rows.tobytes()


def encode_compressed(
    array: np.ndarray, codec: str = 'jpeg', quality: int = 95
) -> tuple[str, bytes]:
    """RGB uint8 HxWx3 (or uint8/uint16 HxW) to a CompressedImage ``(format, data)`` pair."""
    import cv2

    array = np.asarray(array)
    if codec not in ('jpeg', 'png'):
        raise FrameError(f'unsupported codec {codec!r} (jpeg or png)')
    if array.ndim == 3:
        image = np.ascontiguousarray(array[:, :, ::-1])
        fmt = f'rgb8; {codec} compressed bgr8'
    else:
        image = array
        fmt = f'{"mono16" if array.dtype == np.uint16 else "mono8"}; {codec} compressed '
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if codec == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if codec == 'jpeg' else '.png', image, params)
    if not ok:
        raise FrameError(f'cannot encode {array.dtype} {array.shape} as {codec}')
    return fmt, encoded.tobytes()


def encode_compressed_depth(
    depth: np.ndarray, *, depth_max: float = 10.0, depth_quantization: float = 100.0
) -> tuple[str, bytes]:
    """Depth to compressed_depth_image_transport's ``(format, data)``.

    uint16 millimetres become ``"16UC1; compressedDepth png"``; float32 metres become
    ``"32FC1; compressedDepth png"`` with the transport's inverse-depth quantisation
    (``depth_max`` and ``depth_quantization`` are the transport's parameters).
    """
    import cv2

    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise FrameError(f'depth must be HxW, got {depth.shape}')
    if depth.dtype == np.uint16:
        header = struct.pack('<iff', 0, 0.0, 0.0)
        image, fmt = depth, '16UC1; compressedDepth png'
    elif depth.dtype == np.float32:
        quant_a = depth_quantization * (depth_quantization + 1.0)
        quant_b = 1.0 - quant_a / depth_max
        valid = np.isfinite(depth) & (depth > 0) & (depth < depth_max)
        inv = np.zeros(depth.shape, np.uint16)
        inv[valid] = np.round(quant_a / depth[valid] + quant_b).astype(np.uint16)
        header = struct.pack('<iff', 0, quant_a, quant_b)
        image, fmt = inv, '32FC1; compressedDepth png'
    else:
        raise FrameError(f'depth must be uint16 mm or float32 m, got {depth.dtype}')
    ok, encoded = cv2.imencode('.png', image)
    if not ok:
        raise FrameError('cannot encode the depth image as PNG')
    return fmt, header + encoded.tobytes()


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """uint16 mm (returned as is) or float metres to uint16 mm.

    Invalid values (NaN, inf, zero, negative, and anything beyond 65.535 m) become 0, the
    dataset layout's "no depth". Rounding is to the nearest millimetre.
    """
    depth = np.asarray(depth)
    if depth.dtype == np.uint16:
        return depth
    if depth.dtype.kind != 'f':
        raise FrameError(f'depth must be uint16 millimetres or float metres, got {depth.dtype}')
    with np.errstate(invalid='ignore', over='ignore'):
        mm = np.rint(depth.astype(np.float64) * 1000.0)
        valid = np.isfinite(mm) & (mm > 0) & (mm <= 65535)
    return np.where(valid, mm, 0).astype(np.uint16)
