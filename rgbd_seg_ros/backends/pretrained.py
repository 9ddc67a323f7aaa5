"""Local ImageNet weights into an encoder: all or nothing, with a report. Nothing is downloaded.

Every paper behind the backends starts its encoders from ImageNet. The files users have are the
published ones, downloaded beforehand: torchvision's ResNet state dicts, timm's ``resnetv2_50``
family for the pre-activation encoders, the ERFNet authors' ImageNet encoder, or the same tensors
as safetensors. Each encoder class says which files fit it (``Encoder.weight_files``) and maps
their key names to its own (``Encoder.imagenet_state``); this module reads the file, matches it
and loads it.

Loading is strict because a half-matching file fails silently otherwise: a ResNet-34 file in a
ResNet-18 or a GroupNorm file in a BatchNorm network would load the tensors whose names happen
to agree and leave the rest random. So every tensor of the encoder must come from the file with
its shape; a missing, unexpected or mis-shaped key is a :class:`CheckpointError` naming it. Only
two kinds of key are tolerated: the file's ImageNet classifier (``fc.*``, ``head.*``,
``classifier.*``, listed in the report as unused on purpose) and BatchNorm's
``num_batches_tracked`` counter, which older files lack.

The first convolution of an encoder that reads something else than RGB is adapted from the RGB
filters: their mean over the colour channels for one input channel (metric depth), the filters
unchanged for three (jet, HHA: the papers load the same ImageNet weights into the depth
expert), the filters repeated and rescaled for any other count.

Files are read without executing code: safetensors, or ``torch.load(weights_only=True)``, which
refuses a pickle that would call anything but the tensor rebuilders.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.errors import CheckpointError

# Keys of an ImageNet classifier: in the file, never in an encoder; reported, not loaded.
HEAD_PREFIXES = ('fc.', 'head.', 'classifier.')
# BatchNorm's step counter: files written before PyTorch 0.4.1 have none; not a weight.
OPTIONAL_SUFFIX = 'num_batches_tracked'
# Containers training scripts wrap their state dict in (checked in this order).
CONTAINER_KEYS = ('state_dict', 'model', 'state_dict_ema', 'model_ema')
_LISTED = 8  # keys named per kind of problem in an error message
_Stream = TypeVar('_Stream', bound=str)


@dataclass(frozen=True)
class LoadReport:
    """What one weight file put into one encoder (every tensor, or it raised)."""

    path: str
    layout: str  # 'torchvision', 'timm-resnetv2', 'erfnet-imagenet' or 'native'
    tensors: int  # state-dict entries copied (parameters and BN statistics)
    parameters: int  # parameter values replaced: all of the encoder's
    ignored: tuple[str, ...] = ()  # the file's classifier keys, unused on purpose
    adapted: str = ''  # how the first convolution was adapted ('' when taken as it is)

    def __str__(self) -> str:
        text = (
            f'{self.path} ({self.layout} layout): {self.tensors} tensors, '
            f'{self.parameters:,} parameters'
        )
        if self.adapted:
            text += f'; first convolution {self.adapted}'
        if self.ignored:
            text += f'; classifier keys unused: {_few(self.ignored)}'
        return text


@dataclass(frozen=True)
class WeightMatch:
    """A file's tensors matched against an encoder's state dict (nothing loaded yet)."""

    layout: str
    loadable: dict[str, Tensor] = field(repr=False)
    missing: tuple[str, ...] = ()  # encoder keys the file lacks
    unexpected: tuple[str, ...] = ()  # file keys the encoder has no place for
    mismatched: tuple[str, ...] = ()  # 'key (file shape, encoder shape)'
    ignored: tuple[str, ...] = ()  # classifier keys
    adapted: str = ''

    @property
    def ok(self) -> bool:
        """True when every encoder tensor has its value and the file has nothing left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """The keys that stop the load, by kind."""
        parts = []
        for kind, keys in (
            ('missing from the file', self.missing),
            ('unexpected in the file', self.unexpected),
            ('wrong shape', self.mismatched),
        ):
            if keys:
                parts.append(f'{kind} ({len(keys)}): {_few(keys)}')
        return '; '.join(parts)


def _few(keys: tuple[str, ...] | list[str]) -> str:
    head = ', '.join(keys[:_LISTED])
    return head + (f', ... ({len(keys)} in all)' if len(keys) > _LISTED else '')


def _is_safetensors(head: bytes, size: int) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header."""
    if len(head) < 9 or head[8:9] != b'{':
        return False
    return 0 < int.from_bytes(head[:8], 'little') <= size - 8


def read_weight_file(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weight file, unwrapped from a training container and DDP's
    ``module.`` prefix. Tells safetensors from torch files by their first bytes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'encoder weight file not found: {path}')
    size = path.stat().st_size
    with open(path, 'rb') as stream:
        head = stream.read(16)
    try:
        if _is_safetensors(head, size):
            data: object = load_file(str(path))
        else:
            data = torch.load(str(path), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f'{path}: refused, the file is a pickle that needs more than tensors to load '
            f'(it could run code; only weights_only files are read): {first}'
        ) from err
    except (SafetensorError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(
            f'{path}: not a readable weight file (truncated or another format): {err}'
        ) from err
    for key in CONTAINER_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data:
        raise CheckpointError(f'{path}: holds no state dict (a mapping of names to tensors)')
    not_tensors = sorted(str(k) for k, v in data.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise CheckpointError(f'{path}: entries that are not tensors: {_few(not_tensors)}')
    out: dict[str, Tensor] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        out[key.removeprefix('module.')] = value
    return out


def first_conv_key(encoder: nn.Module) -> str:
    """State-dict key of the encoder's first convolution weight (the one reading the input)."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Conv2d):
            return f'{name}.weight'
    raise CheckpointError(f'{type(encoder).__name__} has no convolution')


def adapt_first_conv(weight: Tensor, in_channels: int) -> tuple[Tensor, str]:
    """RGB filters ``[O, 3, k, k]`` for ``in_channels`` inputs, and how (see module doc)."""
    src = weight.shape[1]
    if in_channels == src:
        return weight, ''
    if in_channels == 1:
        return weight.mean(dim=1, keepdim=True), f'mean over its {src} input channels'
    reps = -(-in_channels // src)
    tiled = weight.repeat(1, reps, 1, 1)[:, :in_channels] * (src / in_channels)
    return tiled, f'{src} input channels repeated to {in_channels}, scaled by {src}/{in_channels}'


def match_weights(encoder: Encoder, state: Mapping[str, Tensor]) -> WeightMatch:
    """Match ``state`` (a file's tensors) against ``encoder``'s keys and shapes."""
    renamed, layout = encoder.imagenet_state(state)
    target = encoder.state_dict()
    stem = first_conv_key(encoder)
    loadable: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    ignored: list[str] = []
    adapted = ''
    for key, source in renamed.items():
        if key not in target:
            (ignored if key.startswith(HEAD_PREFIXES) else unexpected).append(key)
            continue
        want = target[key].shape
        value = source
        if key == stem and value.shape != want and _adaptable(value, want):
            value, adapted = adapt_first_conv(value, want[1])
        if value.shape != want:
            mismatched.append(f'{key} (file {tuple(value.shape)}, encoder {tuple(want)})')
            continue
        loadable[key] = value
    shapes_wrong = {m.split(' ', 1)[0] for m in mismatched}
    missing = [
        k
        for k in target
        if k not in loadable and k not in shapes_wrong and not k.endswith(OPTIONAL_SUFFIX)
    ]
    return WeightMatch(
        layout=layout,
        loadable=loadable,
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
        ignored=tuple(ignored),
        adapted=adapted,
    )


def _adaptable(value: Tensor, want: torch.Size) -> bool:
    """Only the input channels of the first convolution may differ."""
    return value.dim() == 4 and value.shape[0] == want[0] and value.shape[2:] == want[2:]


def check_encoder_weights(encoder: Encoder, path: str | Path) -> WeightMatch:
    """Match the file at ``path`` against ``encoder`` (which may live on the meta device);
    ``CheckpointError`` naming every key that does not fit."""
    state = read_weight_file(path)
    found = match_weights(encoder, state)
    if not found.ok:
        name = getattr(encoder, 'name', type(encoder).__name__)
        raise CheckpointError(
            f'{path} does not fit encoder {name} ({found.layout} layout): {found.problems()}. '
            f'This encoder loads {encoder.weight_files}'
        )
    return found


def load_encoder_weights(encoder: Encoder, path: str | Path) -> LoadReport:
    """Replace every tensor of ``encoder`` with the file's (see module doc); the report says
    what was loaded, a :class:`CheckpointError` what did not fit."""
    found = check_encoder_weights(encoder, path)
    target = encoder.state_dict()
    with torch.no_grad():
        for key, value in found.loadable.items():
            target[key].copy_(value.to(dtype=target[key].dtype))
    parameters = sum(p.numel() for p in encoder.parameters())
    return LoadReport(
        path=str(path),
        layout=found.layout,
        tensors=len(found.loadable),
        parameters=parameters,
        ignored=found.ignored,
        adapted=found.adapted,
    )


def load_stream_weights(
    streams: Mapping[_Stream, Encoder], files: Mapping[str, str | None]
) -> dict[_Stream, LoadReport]:
    """Load ``files[name]`` into ``streams[name]`` for every stream that has a file (a stream
    without one, or a file for a stream this network lacks, is left to the caller)."""
    reports: dict[_Stream, LoadReport] = {}
    for name, encoder in streams.items():
        path = files.get(name)
        if path:
            reports[name] = load_encoder_weights(encoder, path)
    return reports


__all__ = [
    'LoadReport',
    'WeightMatch',
    'adapt_first_conv',
    'check_encoder_weights',
    'first_conv_key',
    'load_encoder_weights',
    'load_stream_weights',
    'match_weights',
    'read_weight_file',
]
