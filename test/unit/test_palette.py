"""Palettes, colourisation, overlays and PCL-style packed RGB."""

from __future__ import annotations

import numpy as np
import pytest

from rgbd_seg_ros.core.palette import (
    UNKNOWN_COLOUR,
    colourise,
    default_palette,
    overlay,
    pack_rgb_float,
    unpack_rgb_float,
)
from rgbd_seg_ros.errors import FrameError


def test_default_palette_is_deterministic_distinct_and_prefix_stable() -> None:
    big = default_palette(300)
    assert big.dtype == np.uint8 and big.shape == (300, 3)
    np.testing.assert_array_equal(default_palette(300), big)
    np.testing.assert_array_equal(default_palette(40), big[:40])
    assert default_palette(0).shape == (0, 3)
    assert len({tuple(c) for c in big}) == 300
    # the first entries (the common classes of small label sets) are far apart
    first = big[:20].astype(int)
    dist = np.sqrt(((first[:, None] - first[None]) ** 2).sum(-1))
    assert dist[np.triu_indices(20, 1)].min() > 40
    assert not (first == 0).all(axis=1).any()  # black is kept for unknown labels
    with pytest.raises(ValueError):
        default_palette(-1)


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.int32, np.int64])
def test_colourise_lookup_and_out_of_range(dtype) -> None:
    palette = default_palette(5)
    labels = np.array([[0, 1, 2], [4, 255, 3]], dtype=dtype)
    out = colourise(labels, palette)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 0], palette[0])
    np.testing.assert_array_equal(out[1, 0], palette[4])
    np.testing.assert_array_equal(out[1, 1], UNKNOWN_COLOUR)  # ignore index
    if np.issubdtype(dtype, np.signedinteger):
        out = colourise(np.array([[-1, 1]], dtype=dtype), palette)
        np.testing.assert_array_equal(out[0, 0], UNKNOWN_COLOUR)
    with pytest.raises(FrameError):
        colourise(np.zeros((2, 2), np.float32), palette)


def test_colourise_large_palette_uint16() -> None:
    palette = default_palette(1000)
    labels = np.arange(1200, dtype=np.uint16).reshape(30, 40)
    out = colourise(labels, palette)
    np.testing.assert_array_equal(out.reshape(-1, 3)[:1000], palette)
    assert (out.reshape(-1, 3)[1000:] == 0).all()


def test_overlay_integer_blend() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    colour = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for alpha in (0.0, 0.25, 0.5, 0.6, 1.0):
        out = overlay(rgb, colour, alpha)
        assert out.dtype == np.uint8
        expected = rgb.astype(float) * (1 - alpha) + colour.astype(float) * alpha
        assert np.abs(out.astype(float) - expected).max() <= 1.0
    np.testing.assert_array_equal(overlay(rgb, colour, 0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, colour, 1.0), colour)
    white = np.full((1, 1, 3), 255, np.uint8)
    assert overlay(white, white, 0.3)[0, 0, 0] == 255  # no overflow
    mask = np.zeros((7, 9), bool)
    mask[2:4] = True
    masked = overlay(rgb, colour, 0.5, mask=mask)
    np.testing.assert_array_equal(masked[~mask], rgb[~mask])
    np.testing.assert_array_equal(masked[mask], overlay(rgb, colour, 0.5)[mask])
    with pytest.raises(FrameError):
        overlay(rgb, colour[:3], 0.5)
    with pytest.raises(ValueError):
        overlay(rgb, colour, 1.5)


def test_pack_rgb_float_is_pcl_layout() -> None:
    colours = np.array(
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3], [255, 255, 255]], dtype=np.uint8
    )
    packed = pack_rgb_float(colours)
    assert packed.dtype == np.float32 and packed.shape == (5,)
    bits = packed.view(np.uint32)
    assert [hex(b) for b in bits] == ['0xff0000', '0xff00', '0xff', '0x10203', '0xffffff']
    assert np.isfinite(packed).all()  # alpha byte 0: never NaN/inf
    np.testing.assert_array_equal(unpack_rgb_float(packed), colours)
    image = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert pack_rgb_float(image).shape == (4, 5)
    np.testing.assert_array_equal(unpack_rgb_float(pack_rgb_float(image)), image)
    with pytest.raises(FrameError):
        pack_rgb_float(colours.astype(np.int32))
