"""The closed sets of choices every layer shares: precision, runtime, depth encoding, encoder
stream, resolution policy, the node's oversize policy, and the benchmark's execution modes.

Each set is written once, as a ``typing.Literal`` alias; the tuple beside it (for argparse
``choices``, parameter checks and error messages) is derived from the alias with
``typing.get_args``, so the two cannot drift apart. Literal rather than ``StrEnum``: these values
travel as plain strings through ROS parameters, YAML recipes, checkpoint JSON and the command
line, and a Literal keeps them plain ``str`` at every boundary (no conversion in and out, and
``yaml.safe_dump`` or rclpy take them as they are) while a type checker still rejects a
misspelt one; ``StrEnum`` would also need Python 3.11, and the package supports 3.10.

Tuples keep the order of their alias (the first value is the default where there is one).
Mappings keyed by a mode (torch dtypes, channel counts) live with the code that needs them,
typed ``dict[Alias, ...]``, and cover every value (``test/unit/test_modes.py`` checks both).
``as_choice`` turns a string from outside (a file, a parameter) into the typed value or a
``ConfigError`` worded the same everywhere. The module imports only ``errors``, so every layer,
``core`` included, may use it.
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

from rgbd_seg_ros.errors import ConfigError

_Choice = TypeVar('_Choice', bound=str)

# Arithmetic of a forward pass; fp16 and bf16 are CUDA autocast, the CPU always runs fp32.
Precision = Literal['fp32', 'fp16', 'bf16']
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

# What runs the engine's forward pass: torch, or the model's ONNX export in ONNX Runtime (CPU);
# 'auto' is ONNX Runtime on a CPU where it is installed and the model exports, torch otherwise.
# 'auto' is the node's default; an Engine built by library code (eval, the quality gate, the
# pseudo-labeller) defaults to 'torch', which needs no export per input size.
Runtime = Literal['auto', 'torch', 'onnxruntime']
RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)

# How the depth stream's input is made from depth in metres (``core.depth``). Not to be confused
# with the sensor_msgs/Image encodings of depth images (``core.image_codec``).
DepthEncoding = Literal['metric', 'jet', 'hha', 'none']
DEPTH_ENCODINGS: tuple[DepthEncoding, ...] = get_args(DepthEncoding)

# The input stream an encoder reads: the names under which backends list their ImageNet
# trunks (``SegBackend.encoder_streams``) and recipes give their weight files
# (``model.encoder_weights``).
EncoderStream = Literal['rgb', 'depth']
ENCODER_STREAMS: tuple[EncoderStream, ...] = get_args(EncoderStream)

# The input size a model was trained for, as its checkpoint's input spec and the training
# configuration record it: the camera's own size, or a fixed height x width.
SpecResolution = Literal['native', 'fixed']
SPEC_RESOLUTIONS: tuple[SpecResolution, ...] = get_args(SpecResolution)

# The network input size the engine (and the node's resolution_policy parameter) uses:
# 'checkpoint' follows the checkpoint's spec, the others override it.
ResolutionPolicy = Literal['checkpoint', SpecResolution]
RESOLUTION_POLICIES: tuple[ResolutionPolicy, ...] = get_args(ResolutionPolicy)

# What the node does with a frame larger than its input bound (``max_input_pixels``): scale it
# down to the bound, or refuse it; either is counted.
OversizePolicy = Literal['downscale', 'refuse']
OVERSIZE_POLICIES: tuple[OversizePolicy, ...] = get_args(OversizePolicy)

# What runs a node's callbacks (the segmentation node's ``executor`` parameter): rclpy's
# EventsExecutor (C++; ``rclpy.experimental`` in Jazzy's later releases), or the Python
# SingleThreadedExecutor; 'auto' is the EventsExecutor where this rclpy has one.
ExecutorKind = Literal['auto', 'events', 'single']
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = get_args(ExecutorKind)

# How ``rgbd-seg bench`` executes a forward (``tools.runners``); onnxruntime runs the fp32 export.
BenchMode = Literal['eager', 'compile', 'cudagraph', 'compile_cudagraph', 'onnxruntime']
BENCH_MODES: tuple[BenchMode, ...] = get_args(BenchMode)
# The modes that replay CUDA graphs, and so run on CUDA devices only.
CUDA_GRAPH_MODES: tuple[BenchMode, ...] = ('cudagraph', 'compile_cudagraph')


def as_choice(value: object, choices: tuple[_Choice, ...], what: str) -> _Choice:
    """``value`` as one of ``choices``; a ``ConfigError`` naming ``what`` and the valid ones."""
    if value not in choices:
        raise ConfigError(f'{what} must be one of {", ".join(choices)}; {value!r} is not valid')
    return choices[choices.index(value)]


__all__ = [
    'BENCH_MODES',
    'CUDA_GRAPH_MODES',
    'DEPTH_ENCODINGS',
    'EXECUTOR_KINDS',
    'PRECISIONS',
    'RESOLUTION_POLICIES',
    'RUNTIMES',
    'SPEC_RESOLUTIONS',
    'BenchMode',
    'DepthEncoding',
    'ExecutorKind',
    'Precision',
    'ResolutionPolicy',
    'Runtime',
    'SpecResolution',
    'as_choice',
]

# How the node's colour input arrives (its ``image_transport`` parameter): image_transport's
# transport names; 'compressed' is read from ``<colour topic>/compressed``.
ColourTransport = Literal['raw', 'compressed']
COLOUR_TRANSPORTS: tuple[ColourTransport, ...] = get_args(ColourTransport)
