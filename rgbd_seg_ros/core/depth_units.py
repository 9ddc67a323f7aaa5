"""Depth images in metres: the one unit conversion, and what counts as a valid pixel.

Shared by every depth encoding (``rgbd_seg_ros.core.depth``, ``rgbd_seg_ros.core.hha``); 0 is
the one invalid value after conversion.
"""

from __future__ import annotations

import numpy as np

from rgbd_seg_ros.errors import FrameError


def depth_to_metres(depth: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Depth image -> float32 metres with every invalid pixel set to 0.

    ``uint16`` (and other integer types) are millimetres (16UC1, the dataset PNGs); floating
    types are metres (32FC1). ``scale`` overrides the unit (metres per stored unit). Zero, NaN,
    +-inf and negative values are invalid. The input is never modified.
    """
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise FrameError(f'depth must be an H x W image, got shape {depth.shape}')
    if np.issubdtype(depth.dtype, np.integer):
        factor = 0.001 if scale is None else float(scale)
        out = depth.astype(np.float32)
        out *= np.float32(factor)
        if np.issubdtype(depth.dtype, np.signedinteger):
            out[depth <= 0] = 0.0
        return out
    if np.issubdtype(depth.dtype, np.floating):
        out = depth.astype(np.float32, copy=True)
        if scale is not None:
            out *= np.float32(scale)
        # NaN compares false, so one test catches NaN, -inf, 0 and negatives; +inf separately.
        out[~(out > 0) | np.isinf(out)] = 0.0
        return out
    if depth.dtype == np.bool_:
        raise FrameError('depth cannot be boolean')
    raise FrameError(f'unsupported depth dtype {depth.dtype}')


def valid_mask(depth_m: np.ndarray) -> np.ndarray:
    """Boolean mask of usable depth (finite and > 0)."""
    depth_m = np.asarray(depth_m)
    mask: np.ndarray = np.isfinite(depth_m) & (depth_m > 0)
    return mask
