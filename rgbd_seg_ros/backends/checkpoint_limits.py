"""The bounds a checkpoint's metadata must respect, in one place.

A checkpoint's metadata decides what is allocated before a single frame is seen: the class
count sizes the classifier and the palette, the fixed resolution sizes every activation, and
the normalisation constants become divisors. A file is refused before anything is built when
its metadata falls outside these bounds (README "Reliability", doc/design.md §3.2); the
bounds are wide enough for every model this project trains and narrow enough that no
metadata can ask for gigabytes or turn every output into NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Labels are published as mono16 images: a label id, and so a class count, fits 16 bits.
MAX_CLASSES = 65535
MAX_LABEL_ID = 65535
# Network input size for a fixed resolution (from the checkpoint or the node's parameters).
MIN_INPUT_SIDE = 8
MAX_INPUT_SIDE = 2048
MAX_INPUT_PIXELS = 2048 * 1536
# rgb_std divides every pixel and rgb_mean shifts it (both on [0, 1] RGB).
RGB_STD_RANGE = (1e-3, 1e3)
RGB_MEAN_LIMIT = 1e3
# Every non-zero number in depth_params (metres, centimetres, pixels, a percentile) lies in
# this magnitude range: max_depth_m = 1e-300 would divide depth by almost nothing.
DEPTH_PARAM_RANGE = (1e-3, 1e4)
# The weights, all tensors together: the largest backend here is under 1 GiB in float32; a
# sparse file declaring more would be read into memory whole.
MAX_WEIGHT_BYTES = 4 * 1024**3
# The metadata document: size of the safetensors header and nesting depth of the JSON.
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 64

__all__ = [
    'DEPTH_PARAM_RANGE',
    'MAX_CLASSES',
    'MAX_HEADER_BYTES',
    'MAX_INPUT_PIXELS',
    'MAX_INPUT_SIDE',
    'MAX_JSON_DEPTH',
    'MAX_LABEL_ID',
    'MAX_WEIGHT_BYTES',
    'MIN_INPUT_SIDE',
    'RGB_MEAN_LIMIT',
    'RGB_STD_RANGE',
    'check_class_count',
    'check_depth_params',
    'check_input_size',
    'check_plain_json',
    'check_rgb_normalisation',
    'check_weight_bytes',
]


def check_class_count(count: int) -> None:
    """``ValueError`` unless 1 <= count <= MAX_CLASSES."""
    if not 1 <= count <= MAX_CLASSES:
        raise ValueError(f'{count} classes is outside 1..{MAX_CLASSES} (labels are 16-bit)')


def check_input_size(height: int, width: int, what: str = 'input size') -> None:
    """``ValueError`` unless a network input of ``height`` x ``width`` is within bounds."""
    if not (
        MIN_INPUT_SIDE <= height <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= width <= MAX_INPUT_SIDE
    ):
        raise ValueError(
            f'{what} {height}x{width}: each side must be in {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE}'
        )
    if height * width > MAX_INPUT_PIXELS:
        raise ValueError(
            f'{what} {height}x{width} has {height * width} pixels, more than {MAX_INPUT_PIXELS}'
        )


def check_weight_bytes(total: int) -> None:
    """``ValueError`` when the tensors of a file add up to more than MAX_WEIGHT_BYTES."""
    if total > MAX_WEIGHT_BYTES:
        raise ValueError(
            f'its tensors hold {total} bytes, more than {MAX_WEIGHT_BYTES} (no model here needs '
            'that much)'
        )


def check_rgb_normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """``ValueError`` unless every std is in RGB_STD_RANGE and every |mean| <= RGB_MEAN_LIMIT."""
    low, high = RGB_STD_RANGE
    if not all(low <= s <= high for s in std):
        raise ValueError(f'input_spec.rgb_std must lie in [{low:g}, {high:g}], got {std!r}')
    if not all(abs(m) <= RGB_MEAN_LIMIT for m in mean):
        raise ValueError(
            f'input_spec.rgb_mean must lie in [-{RGB_MEAN_LIMIT:g}, {RGB_MEAN_LIMIT:g}], '
            f'got {mean!r}'
        )


def check_depth_params(params: Mapping[str, Any]) -> None:
    """``ValueError`` unless every number in ``params`` is finite and 0 or of a magnitude in
    DEPTH_PARAM_RANGE (vectors such as ``gravity`` are checked for finiteness only)."""
    low, high = DEPTH_PARAM_RANGE
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value) or (value != 0 and not low <= abs(value) <= high):
            raise ValueError(
                f'input_spec.depth_params.{key} = {value!r}: must be finite and 0 or of a '
                f'magnitude in [{low:g}, {high:g}]'
            )


def check_plain_json(value: Any, where: str = 'metadata', depth: int = 0) -> None:
    """``ValueError`` unless ``value`` is made only of what JSON holds (objects with string
    keys, lists, strings, numbers, booleans, null), nested at most MAX_JSON_DEPTH deep:
    a torch container can unpickle bytes or tensors into its metadata, which no JSON reader
    of the file can take."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f'{where} is nested more than {MAX_JSON_DEPTH} levels deep')
    if value is None or isinstance(value, (str, bool, int, float)):
        return  # NaN included: a metric of a class absent from the split is NaN
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f'{where} has a {type(key).__name__} key; keys must be strings')
            check_plain_json(item, f'{where}.{key}', depth + 1)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_plain_json(item, f'{where}[{index}]', depth + 1)
        return
    raise ValueError(f'{where} holds a {type(value).__name__}, which JSON cannot hold')
