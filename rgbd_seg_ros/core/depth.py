"""Depth images: unit conversion, validity, and the encodings a network's depth stream reads.

Conventions (shared with the torch twin in ``rgbd_seg_ros.inference.depth_encoding``):

* Depth in metres, float32, **0 = invalid**. ``depth_to_metres`` maps 16UC1 millimetres and
  32FC1 metres to that form; 0, NaN, +-inf and negative values become 0.
* Every encoding returns float32 ``C x H x W`` with values in ``[0, 1]`` and invalid pixels 0:

  ``'metric'`` (1 channel)
      ``min(depth, max_depth_m) / max_depth_m``.
  ``'jet'`` (3 channels)
      depth clipped to ``[min_depth_m, max_depth_m]`` (fixed range; ``per_image=True`` uses the
      image's own valid min/max instead, the SSMA paper's implied normalisation), mapped through
      matplotlib's ``jet`` colour map evaluated as its continuous piecewise-linear segment data
      (matplotlib's 256-entry lookup table differs by at most one LUT step, about 0.016).
      Invalid pixels are black, a colour ``jet`` never produces.
  ``'hha'`` (3 channels)
      Gupta et al. 2014, see ``rgbd_seg_ros.core.hha``.
  ``'none'`` (0 channels)
      RGB-only networks.

* ``params`` is a plain dict (it travels in checkpoints as ``InputSpec.depth_params``);
  unknown keys are a ``ConfigError`` naming the valid ones, missing keys take the defaults in
  ``DEPTH_PARAM_DEFAULTS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rgbd_seg_ros.core.depth_params import (
    DEPTH_PARAM_DEFAULTS,
    ENCODINGS,
    depth_channels,
    resolve_depth_params,
)
from rgbd_seg_ros.core.depth_units import depth_to_metres, valid_mask
from rgbd_seg_ros.core.hha import hha_encode
from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.modes import DepthEncoding

# Callers read the parameter table and the unit conversion through this module.
__all__ = [
    'DEPTH_PARAM_DEFAULTS',
    'ENCODINGS',
    'JET_KNOTS',
    'depth_channels',
    'depth_to_metres',
    'encode_depth',
    'encode_depth_numpy',
    'encode_jet',
    'encode_metric',
    'jet_colormap',
    'jet_uint8',
    'resolve_depth_params',
    'valid_mask',
]

# matplotlib's ``jet`` segment data (``matplotlib._cm._jet_data``): knots and values per channel.
JET_KNOTS: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = (
    ((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),  # red
    ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),  # green
    ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)),  # blue
)


def _sanitised(depth_m: np.ndarray) -> np.ndarray:
    depth_m = np.asarray(depth_m)
    if depth_m.ndim == 3 and depth_m.shape[0] == 1:
        depth_m = depth_m[0]
    if depth_m.ndim != 2:
        raise FrameError(f'depth must be an H x W image, got shape {depth_m.shape}')
    if depth_m.dtype == np.float32 and bool(np.all(valid_mask(depth_m) | (depth_m == 0))):
        return depth_m
    return depth_to_metres(depth_m.astype(np.float32, copy=False))


def encode_metric(depth_m: np.ndarray, max_depth_m: float = 10.0) -> np.ndarray:
    """Normalised metric depth, 1 x H x W float32 in [0, 1], invalid = 0."""
    d = _sanitised(depth_m)
    out: np.ndarray = np.minimum(d, np.float32(max_depth_m)) * np.float32(1.0 / max_depth_m)
    return out[None].astype(np.float32, copy=False)


def jet_colormap(t: np.ndarray) -> np.ndarray:
    """matplotlib ``jet`` on ``t`` in [0, 1] (clipped): float32 ``... x 3`` in [0, 1]."""
    t = np.clip(np.asarray(t, dtype=np.float32), 0.0, 1.0)
    out = np.empty((*t.shape, 3), dtype=np.float32)
    for channel, (knots, values) in enumerate(JET_KNOTS):
        out[..., channel] = np.interp(t, knots, values)
    return out


def encode_jet(
    depth_m: np.ndarray,
    min_depth_m: float = 0.0,
    max_depth_m: float = 10.0,
    per_image: bool = False,
) -> np.ndarray:
    """Jet-colourised depth, 3 x H x W float32 in [0, 1], invalid = 0 (black)."""
    d = _sanitised(depth_m)
    valid = d > 0
    lo, hi = float(min_depth_m), float(max_depth_m)
    if per_image and valid.any():
        lo, hi = float(d[valid].min()), float(d[valid].max())
    span = max(hi - lo, 1e-6)
    t = (d - np.float32(lo)) * np.float32(1.0 / span)
    colour = jet_colormap(t)
    colour[~valid] = 0.0
    return np.ascontiguousarray(colour.transpose(2, 0, 1))


def jet_uint8(
    depth_m: np.ndarray,
    min_depth_m: float = 0.0,
    max_depth_m: float = 10.0,
    per_image: bool = False,
) -> np.ndarray:
    """Jet-colourised depth as an H x W x 3 uint8 RGB image (for viewing and saving)."""
    colour = encode_jet(depth_m, min_depth_m, max_depth_m, per_image)
    rounded: np.ndarray = np.rint(colour.transpose(1, 2, 0) * 255.0)
    return rounded.astype(np.uint8)


def encode_depth_numpy(
    depth_m: np.ndarray,
    K: np.ndarray | None,
    encoding: DepthEncoding,
    params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Encode one depth image (metres, 0 = invalid) as the network's depth input.

    Returns float32 ``C x H x W`` with ``C = depth_channels(encoding)``. ``K`` (3x3 intrinsics)
    is needed by ``'hha'`` only.
    """
    p = resolve_depth_params(encoding, params)
    if encoding == 'metric':
        return encode_metric(depth_m, p['max_depth_m'])
    if encoding == 'jet':
        return encode_jet(depth_m, p['min_depth_m'], p['max_depth_m'], p['per_image'])
    if encoding == 'hha':
        if K is None:
            raise FrameError("depth encoding 'hha' needs the camera intrinsics K")
        return hha_encode(_sanitised(depth_m), K, p)
    d = _sanitised(depth_m)
    return np.zeros((0, *d.shape), dtype=np.float32)


def encode_depth(depth_m: np.ndarray, K: np.ndarray | None, spec: Any) -> np.ndarray:
    """``encode_depth_numpy`` driven by an InputSpec-like object (``depth_encoding``,
    ``depth_params`` attributes or keys)."""
    if isinstance(spec, Mapping):
        encoding, params = spec['depth_encoding'], spec.get('depth_params', {})
    else:
        encoding, params = spec.depth_encoding, spec.depth_params
    return encode_depth_numpy(depth_m, K, encoding, params)
