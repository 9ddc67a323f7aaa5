"""Depth encodings' parameter table: channel counts, defaults, and their validation.

The table sits below both ``rgbd_seg_ros.core.depth`` (the encoders' dispatch) and
``rgbd_seg_ros.core.hha`` (which resolves its own parameters), so neither imports the other to
read it. ``params`` is a plain dict because it travels in checkpoints as
``InputSpec.depth_params``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.modes import DEPTH_ENCODINGS, DepthEncoding, as_choice

ENCODINGS = DEPTH_ENCODINGS  # the name core.depth re-exports

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
