"""Class colours, label colourisation, overlays and PCL-style packed RGB.

``default_palette(n)`` is deterministic: the first 20 colours are Sasha Trubetskoy's list of
20 simple, distinct colours (ordered so that the first few, which small indoor label sets give
to their most frequent classes such as wall, floor, furniture, are the most distinct),
followed by golden-ratio hues that alternate saturation and value.
"""

from __future__ import annotations

import colorsys

import numpy as np

from rgbd_seg_ros.errors import FrameError

# Trubetskoy's "20 simple, distinct colors" (2017), in his recommended order.
_BASE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (67, 99, 216),
    (245, 130, 49),
    (145, 30, 180),
    (66, 212, 244),
    (240, 50, 230),
    (191, 239, 69),
    (250, 190, 212),
    (70, 153, 144),
    (220, 190, 255),
    (154, 99, 36),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 216, 177),
    (0, 0, 117),
    (169, 169, 169),
)
UNKNOWN_COLOUR = (0, 0, 0)  # labels outside the palette (ignore index, void)
_GOLDEN = 0.618033988749895


def default_palette(n: int) -> np.ndarray:
    """``n`` distinct, deterministic RGB colours, uint8 ``n x 3``."""
    if n < 0:
        raise ValueError(f'palette size must be >= 0, got {n}')
    rows = list(_BASE_COLOURS[:n])
    i = 0
    while len(rows) < n:
        hue = (0.11 + i * _GOLDEN) % 1.0
        sat = (0.85, 0.55, 0.95, 0.7)[i % 4]
        val = (0.95, 0.75, 0.6, 0.85)[(i // 4) % 4]
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        rows.append((round(r * 255), round(g * 255), round(b * 255)))
        i += 1
    return np.asarray(rows, dtype=np.uint8).reshape(n, 3)


def _lookup_table(palette: np.ndarray, size: int) -> np.ndarray:
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut = np.empty((max(size, len(palette)), 3), dtype=np.uint8)
    lut[:] = UNKNOWN_COLOUR
    lut[: len(palette)] = palette
    return lut


def colourise(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Label image (any integer type) -> uint8 ``H x W x 3`` by table lookup.

    Labels outside the palette (the ignore index, negative values) are black.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise FrameError(f'labels must be integers, got {labels.dtype}')
    if labels.dtype in (np.uint8, np.uint16):
        lut = _lookup_table(palette, 1 << (8 * labels.dtype.itemsize))
        return np.take(lut, labels, axis=0)  # 3-4x faster than lut[labels]
    lut = _lookup_table(palette, 0)
    n = len(lut)
    inside = (labels >= 0) & (labels < n)
    index = np.where(inside, labels, 0).astype(np.intp, copy=False)
    out = np.take(lut, index, axis=0)
    out[~inside] = UNKNOWN_COLOUR
    return out


def overlay(
    rgb: np.ndarray, colour: np.ndarray, alpha: float = 0.5, mask: np.ndarray | None = None
) -> np.ndarray:
    """``(1 - alpha) * rgb + alpha * colour`` in uint8, rounded, with integer arithmetic.

    ``alpha`` is quantised to 1/256. Where ``mask`` (H x W bool) is False the RGB is kept.
    """
    rgb = np.asarray(rgb)
    colour = np.asarray(colour)
    if rgb.shape != colour.shape or rgb.dtype != np.uint8 or colour.dtype != np.uint8:
        raise FrameError(
            f'overlay needs two uint8 images of one shape, got {rgb.dtype}{rgb.shape} and '
            f'{colour.dtype}{colour.shape}'
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    a = round(alpha * 256)
    out: np.ndarray
    if a == 0:
        out = rgb.copy()
    elif a == 256:
        out = colour.copy()
    else:
        acc = rgb.astype(np.uint16) * np.uint16(256 - a)
        acc += colour.astype(np.uint16) * np.uint16(a)
        acc += np.uint16(128)
        acc >>= 8
        out = acc.astype(np.uint8)
    if mask is not None:
        keep = ~np.asarray(mask, dtype=bool)
        out[keep] = rgb[keep]
    return out


def pack_rgb_float(colours: np.ndarray) -> np.ndarray:
    """uint8 ``... x 3`` RGB -> float32 ``...`` packed the PCL way (``0x00RRGGBB`` bits).

    This is the ``rgb`` field of a PointCloud2 (RViz's RGB8 colour transformer reads it).
    """
    colours = np.asarray(colours)
    if colours.shape[-1:] != (3,) or colours.dtype != np.uint8:
        raise FrameError(f'expected uint8 ... x 3 colours, got {colours.dtype}{colours.shape}')
    c = colours.astype(np.uint32)
    packed = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    return packed.view(np.float32)


def unpack_rgb_float(packed: np.ndarray) -> np.ndarray:
    """Inverse of ``pack_rgb_float``: float32 ``...`` -> uint8 ``... x 3``."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    out = np.empty((*bits.shape, 3), dtype=np.uint8)
    out[..., 0] = (bits >> 16) & 0xFF
    out[..., 1] = (bits >> 8) & 0xFF
    out[..., 2] = bits & 0xFF
    return out
