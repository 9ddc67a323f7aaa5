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

from rgbd_seg_ros.errors import ConfigError, FrameError
from rgbd_seg_ros.modes import DEPTH_ENCODINGS, DepthEncoding, as_choice

_CHANNELS: dict[DepthEncoding, int] = {'metric': 1, 'jet': 3, 'hha': 3, 'none': 0}

# Gupta et al.'s constants (saveHHA.m) are the HHA defaults; see core/hha.py for their meaning.
DEPTH_PARAM_DEFAULTS: dict[DepthEncoding, dict[str, Any]] = {
    'metric': {'max_depth_m': 10.0},
    'jet': {'min_depth_m': 0.0, 'max_depth_m': 10.0, 'per_image': False},
    'hha': {
        'disparity_scale': 310.0,
        'min_depth_m': 1.0,
        'camera_height_m': None,
        'floor_percentile': 0.0,
        'fallback_camera_height_m': 1.3,
        'min_floor_drop_m': 0.9,
        'gravity': None,
        'normal_radius_px': 5,
        'gravity_stride': 4,
        'max_height_cm': 255.0,
    },
    'none': {},
}

# matplotlib's ``jet`` segment data (``matplotlib._cm._jet_data``): knots and values per channel.
JET_KNOTS: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = (
    ((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),  # red
    ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),  # green
    ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)),  # blue
)


def depth_channels(encoding: str) -> int:
    """Number of channels the depth stream gets for ``encoding``."""
    return _CHANNELS[as_choice(encoding, DEPTH_ENCODINGS, 'depth encoding')]


def resolve_depth_params(encoding: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults of ``encoding`` updated with ``params``, validated.

    Raises ``ConfigError`` for an unknown encoding, an unknown key or a bad value.
    """
    merged = dict(DEPTH_PARAM_DEFAULTS[as_choice(encoding, DEPTH_ENCODINGS, 'depth encoding')])
    params = dict(params or {})
    unknown = sorted(set(params) - set(merged))
    if unknown:
        raise ConfigError(
            f'depth encoding {encoding!r} has no parameter(s) {unknown}; valid: {sorted(merged)}'
        )
    merged.update(params)

    def positive(key: str) -> None:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f'depth parameter {key} must be a positive number, got {value!r}')
        merged[key] = float(value)

    if encoding == 'metric':
        positive('max_depth_m')
    elif encoding == 'jet':
        positive('max_depth_m')
        lo = merged['min_depth_m']
        if isinstance(lo, bool) or not isinstance(lo, (int, float)) or lo < 0:
            raise ConfigError(f'depth parameter min_depth_m must be >= 0, got {lo!r}')
        merged['min_depth_m'] = float(lo)
        if merged['min_depth_m'] >= merged['max_depth_m']:
            raise ConfigError('depth parameter min_depth_m must be below max_depth_m')
        if not isinstance(merged['per_image'], bool):
            raise ConfigError(f'per_image must be true or false, got {merged["per_image"]!r}')
    elif encoding == 'hha':
        for key in ('disparity_scale', 'min_depth_m', 'fallback_camera_height_m', 'max_height_cm'):
            positive(key)
        drop = merged['min_floor_drop_m']
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or drop < 0:
            raise ConfigError(f'min_floor_drop_m must be >= 0, got {drop!r}')
        merged['min_floor_drop_m'] = float(drop)
        pct = merged['floor_percentile']
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
            raise ConfigError(f'floor_percentile must be in [0, 100], got {pct!r}')
        merged['floor_percentile'] = float(pct)
        if merged['camera_height_m'] is not None:
            positive('camera_height_m')
        for key in ('normal_radius_px', 'gravity_stride'):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f'{key} must be a positive integer, got {value!r}')
        gravity = merged['gravity']
        if gravity is not None and not _is_torch_tensor(gravity):
            g = np.asarray(gravity, dtype=np.float64)
            if (
                g.shape[-1:] != (3,)
                or g.ndim > 2
                or not np.all(np.isfinite(g))
                or np.any(np.linalg.norm(g.reshape(-1, 3), axis=1) == 0)
            ):
                raise ConfigError(
                    f'gravity must be a non-zero 3-vector (or N x 3), got {gravity!r}'
                )
    return merged


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.startswith('torch')


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
    return np.isfinite(depth_m) & (depth_m > 0)


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
    out = np.minimum(d, np.float32(max_depth_m)) * np.float32(1.0 / max_depth_m)
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
    return np.rint(colour.transpose(1, 2, 0) * 255.0).astype(np.uint8)


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
        from rgbd_seg_ros.core.hha import hha_encode

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
