"""Parameters of the segmentation node: one table with defaults, descriptions and checks.

Defaults here equal ``config/segment.yaml`` (a test keeps them in step), so the node behaves
the same with and without a params file. Every value is validated at start and on every
change: a bad value is refused with a reason and the old value stays.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rgbd_seg_ros.core.image_header import MAX_PIXELS
from rgbd_seg_ros.modes import (
    COLOUR_TRANSPORTS,
    EXECUTOR_KINDS,
    OVERSIZE_POLICIES,
    PRECISIONS,
    RESOLUTION_POLICIES,
    RUNTIMES,
)

_DEVICE = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default, description, validator (None if valid, else the reason)."""

    name: str
    default: Any
    description: str
    check: Callable[[Any], str | None] = lambda value: None
    read_only: bool = False


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f'must be one of {", ".join(choices)}'

    return check


@dataclass(frozen=True)
class FloatRange:
    """A check for a real number in [low, high] (``(low, high]`` when ``low_open``).

    A value object rather than a closure so the bounds can also go into the parameter's
    descriptor (FloatingPointRange), where ``ros2 param describe`` shows them.
    """

    low: float
    high: float
    low_open: bool = False

    def __call__(self, value: Any) -> str | None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            return 'must be a finite number'
        if value < self.low or value > self.high or (self.low_open and value == self.low):
            bracket = '(' if self.low_open else '['
            return f'must be in {bracket}{self.low}, {self.high}]'
        return None


@dataclass(frozen=True)
class IntRange:
    """A check for an integer >= low and, when given, <= high; the bounds go into the
    descriptor (IntegerRange), where ``ros2 param describe`` shows them."""

    low: int
    high: int | None = None

    def __call__(self, value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= self.low
        if self.high is None:
            return None if ok else f'must be an integer >= {self.low}'
        ok = ok and value <= self.high
        return None if ok else f'must be an integer in [{self.low}, {self.high}]'


def _in_range(low: float, high: float, low_open: bool = False) -> FloatRange:
    return FloatRange(low, high, low_open)


def _device(value: Any) -> str | None:
    return (
        None
        if isinstance(value, str) and _DEVICE.match(value)
        else ("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    )


def _int_at_least(low: int) -> IntRange:
    return IntRange(low)


def _int_in(low: int, high: int) -> IntRange:
    return IntRange(low, high)


def _is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else 'must be true or false'


def _is_str(value: Any) -> str | None:
    return None if isinstance(value, str) else 'must be a string'


OUTPUTS: tuple[str, ...] = ('labels', 'color', 'overlay', 'confidence', 'points', 'camera_info')

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        'checkpoint',
        '',
        'Path of the model checkpoint (.safetensors or .pt). Empty: the '
        'embedded default model. Setting it hot-swaps the model; a bad file is refused.',
        _is_str,
    ),
    ParamSpec(
        'device',
        'auto',
        "Where the model runs: 'auto' (first CUDA device, else CPU), 'cpu', 'cuda' or 'cuda:N'.",
        _device,
    ),
    ParamSpec(
        'cpu_threads',
        0,
        'Intra-op threads torch uses on the CPU. 0: one fewer than the '
        'cores the process may use (at least 1), so the middleware and the camera driver '
        'keep a core and the node does not stall on thread barriers.',
        _int_at_least(0),
    ),
    ParamSpec(
        'runtime',
        'auto',
        "What runs the forward pass: 'auto' (ONNX Runtime on a CPU where it is installed, "
        "torch on CUDA or where an input size does not export), 'torch', or 'onnxruntime' "
        '(CPU only). ONNX Runtime exports the model once per input size (a fixed-size model '
        'while it loads), which takes seconds; measured 1.1-3x faster than torch on a 2-core '
        'CPU.',
        _one_of(*RUNTIMES),
    ),
    ParamSpec(
        'precision',
        'fp32',
        'Arithmetic of the forward pass: fp32, fp16 or bf16 (fp16/bf16 only take effect on CUDA).',
        _one_of(*PRECISIONS),
    ),
    ParamSpec(
        'resolution_policy',
        'checkpoint',
        "Network input size: 'checkpoint' (the size "
        "the model was trained for), 'native' (the camera's), or 'fixed' "
        '(input_height x input_width). Outputs always have the camera size.',
        _one_of(*RESOLUTION_POLICIES),
    ),
    ParamSpec(
        'input_height',
        480,
        "Network input height for resolution_policy 'fixed'.",
        _int_at_least(16),
    ),
    ParamSpec(
        'input_width', 640, "Network input width for resolution_policy 'fixed'.", _int_at_least(16)
    ),
    ParamSpec(
        'max_input_pixels',
        0,
        'Largest frame (width x height, in pixels) the node works on; larger ones follow '
        'oversize_policy. 0: automatic, from the model: 4x its input pixels (at least 640x480) '
        'when its input size is fixed, 1920x1200 when it runs at the camera size. At most '
        f'{MAX_PIXELS}, the bound on any image.',
        _int_in(0, MAX_PIXELS),
    ),
    ParamSpec(
        'oversize_policy',
        'downscale',
        "A frame above max_input_pixels: 'downscale' (scaled down, intrinsics with it, and "
        "counted as downscaled_input) or 'refuse' (skipped as too_large before it is decoded).",
        _one_of(*OVERSIZE_POLICIES),
    ),
    ParamSpec(
        'slop',
        0.02,
        'Largest stamp difference (s) between colour, depth and '
        'camera_info that still pairs them.',
        _in_range(0.0, 10.0),
    ),
    ParamSpec(
        'queue_size', 5, 'Messages kept per input while waiting for a match.', _int_at_least(1)
    ),
    ParamSpec(
        'depth_timeout',
        0.5,
        'Seconds without any depth message after which a model that runs without depth '
        '(depth_gating with the predicted or hybrid gate, colour-only models) is fed colour and '
        'camera_info alone: labels, colour, overlay and confidence, no cloud. Other models '
        'wait for depth.',
        _in_range(0.0, 60.0, low_open=True),
    ),
    ParamSpec(
        'wait_for_fresh_frame',
        True,
        'When the model is slower than the camera and the '
        'newest frame is older than a third of the camera period once the worker is free, '
        'wait (at most 1.5 periods) for the next frame instead: this lowers the average '
        'age of the published semantics, at the cost of a few percent of output rate.',
        _is_bool,
    ),
    *(
        ParamSpec(
            f'publish.{name}',
            True,
            f'Publish segmentation/{name} (computed only while someone subscribes).',
            _is_bool,
        )
        for name in OUTPUTS
    ),
    ParamSpec(
        'overlay_alpha',
        0.5,
        'Weight of the class colours in the overlay image.',
        _in_range(0.0, 1.0),
    ),
    ParamSpec(
        'points.stride',
        1,
        'Keep every n-th pixel in both directions for the cloud.',
        _int_at_least(1),
    ),
    ParamSpec(
        'points.max_range',
        10.0,
        'Points farther than this (m) are left out.',
        _in_range(0.0, 1000.0, low_open=True),
    ),
    ParamSpec(
        'points.min_confidence',
        0.0,
        'Points whose class confidence is lower are left out.',
        _in_range(0.0, 1.0),
    ),
    ParamSpec(
        'points.organized',
        False,
        'Organised cloud (image grid, NaN for dropped points) instead of a dense list.',
        _is_bool,
    ),
    ParamSpec(
        'intrinsics_tolerance',
        0.02,
        'Relative disagreement allowed between the colour '
        'camera_info and the depth image geometry before a frame is refused.',
        _in_range(0.0, 1.0),
    ),
    ParamSpec(
        'image_transport',
        'raw',
        "How the colour image arrives: 'raw' (sensor_msgs/Image on the colour topic) or "
        "'compressed' (CompressedImage on <colour topic>/compressed, after remapping).",
        _one_of(*COLOUR_TRANSPORTS),
        read_only=True,
    ),
    ParamSpec(
        'executor',
        'auto',
        "What runs the node's callbacks (taking the inputs, pairing them, timers, services): "
        "'events' (rclpy's EventsExecutor, C++, where this rclpy has one), 'single' (rclpy's "
        "SingleThreadedExecutor), 'auto' (events where available). Outputs are the same.",
        _one_of(*EXECUTOR_KINDS),
        read_only=True,
    ),
    ParamSpec(
        'diagnostics_period',
        1.0,
        'Seconds between /diagnostics messages.',
        _in_range(0.05, 60.0),
        read_only=True,
    ),
    ParamSpec(
        'health.stale_after',
        3.0,
        'Seconds without a message on an input (colour, depth, camera_info) after which '
        '/diagnostics reports ERROR; also how long pairs or outputs may stop before they count '
        'as stopped.',
        _in_range(0.1, 3600.0),
    ),
    ParamSpec(
        'health.min_input_rate',
        5.0,
        'Input rate (Hz) below which /diagnostics reports WARN; 0: no rate check.',
        _in_range(0.0, 1000.0),
    ),
    ParamSpec(
        'health.min_pairing_ratio',
        0.5,
        'Pairs per second over the slowest input rate below which /diagnostics reports WARN '
        '(stamps that no longer match); 0: no check.',
        _in_range(0.0, 1.0),
    ),
    ParamSpec(
        'health.min_output_ratio',
        0.5,
        'Segmented frames per second over pairs per second below which /diagnostics reports '
        'WARN while somebody subscribes (the model or decoding falls behind); 0: no check.',
        _in_range(0.0, 1.0),
    ),
)

BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMS}


def validate(name: str, value: Any) -> str | None:
    """Reason why ``value`` is not acceptable for ``name``, or None when it is."""
    spec = BY_NAME.get(name)
    if spec is None:
        return None  # not ours (use_sim_time and friends)
    value = coerce(name, value)
    if type(value) is not type(spec.default):
        return f'{name} must be of type {type(spec.default).__name__}'
    reason = spec.check(value)
    return f'{name} {reason}' if reason else None


def coerce(name: str, value: Any) -> Any:
    """An integer given for a real-valued parameter as that real (``max_range: 5`` in YAML)."""
    spec = BY_NAME.get(name)
    if spec is None or not isinstance(spec.default, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
