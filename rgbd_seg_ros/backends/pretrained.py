"""Load local ImageNet weights into an encoder, with a clear report. Nothing is downloaded.

Accepted files (``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``, or
``.safetensors``), optionally wrapped in ``{'state_dict': ...}`` / ``{'model': ...}`` and with
``module.`` prefixes:

- a torchvision ``ResNet`` state dict (``resnet18-f37072fd.pth`` ...) for ``resnet18/34/50/101``:
  keys are identical, ``fc.*`` is ignored;
- a timm ``resnetv2_50`` / ``resnetv2_101`` state dict (e.g. ``resnetv2_50.a1h_in1k``) for
  ``preact_resnet50/101``: timm's pre-activation norms are renamed to this package's layout
  (``stages.0.blocks.0.norm1`` -> ``stem.norm``, ``stages.<s>.blocks.0.norm1`` ->
  ``stages.<s-1>.norm``, ``norm`` -> last ``stages.<n>.norm``), ``head.*`` is ignored;
- a state dict saved from the encoder itself.

A stem conv for a different number of input channels (1-channel depth, ...) is adapted from the
RGB weights (summed for 1 channel, else tiled and rescaled) and listed in ``adapted``.
Multiscale units keep the plain 3x3 weight shape, so their weights split along the output
channels automatically (first half -> r1, second half -> r2).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from rgbd_seg_ros.backends.preact_resnet import PreActResNet
from rgbd_seg_ros.errors import CheckpointError

# Source keys that belong to an ImageNet classifier, never to an encoder.
_HEAD_PATTERNS = (re.compile(r'^fc\.'), re.compile(r'^head\.'), re.compile(r'^classifier\.'))
_OPTIONAL_SUFFIX = 'num_batches_tracked'


@dataclass
class LoadReport:
    """What happened when loading a pretrained file into an encoder."""

    missing: list[str] = field(default_factory=list)  # encoder keys the file lacks (kept as init)
    unexpected: list[str] = field(default_factory=list)  # file keys the encoder has no use for
    mismatched: list[str] = field(default_factory=list)  # same key, different shape (skipped)
    adapted: list[str] = field(default_factory=list)  # loaded after input-channel adaptation
    ignored: list[str] = field(default_factory=list)  # classifier head keys, dropped on purpose
    loaded: int = 0  # number of tensors copied
    source_layout: str = ''  # 'torchvision', 'timm-resnetv2' or 'native'

    @property
    def ok(self) -> bool:
        """True when every encoder tensor was loaded and the file had nothing left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            head = ', '.join(keys[:8])
            return head + (f', ... ({len(keys)} in all)' if len(keys) > 8 else '')

        lines = [f'loaded {self.loaded} tensors ({self.source_layout} layout)']
        for name in ('missing', 'unexpected', 'mismatched', 'adapted', 'ignored'):
            keys = getattr(self, name)
            if keys:
                lines.append(f'{name} ({len(keys)}): {few(keys)}')
        return '; '.join(lines)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a weight file without executing code; unwrap common containers and prefixes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'pretrained weight file not found: {path}')
    try:
        if path.suffix == '.safetensors':
            data: object = load_file(str(path))
        else:
            data = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as err:  # corrupt or foreign file
        raise CheckpointError(f'cannot read pretrained weights {path}: {err}') from err
    for key in ('state_dict', 'model', 'state_dict_ema', 'model_ema'):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f'{path} does not hold a state dict of tensors')
    out = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        if key.startswith('module.'):
            key = key[len('module.') :]
        out[key] = value
    return out


def _timm_to_native(state: dict[str, Tensor], num_stages: int) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    pattern = re.compile(r'^stages\.(\d+)\.blocks\.0\.norm1\.(.+)$')
    for key, value in state.items():
        m = pattern.match(key)
        new_key = key
        if m:
            s, rest = int(m.group(1)), m.group(2)
            new_key = 'stem.norm.' + rest if s == 0 else f'stages.{s - 1}.norm.{rest}'
        elif key.startswith('norm.'):
            new_key = f'stages.{num_stages - 1}.' + key
        out[new_key] = value
    return out


def _adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """RGB stem weights [O,3,k,k] -> [O,in_channels,k,k] (sum for 1 channel, else tile)."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    src = weight.shape[1]
    reps = math.ceil(in_channels / src)
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (src / in_channels)


def convert_state_dict(
    encoder: nn.Module, state: dict[str, Tensor]
) -> tuple[dict[str, Tensor], LoadReport]:
    """Map ``state`` onto ``encoder``'s keys; returns the loadable dict and the report."""
    report = LoadReport()
    if (
        isinstance(encoder, PreActResNet)
        and 'stem.norm.weight' not in state
        and any(k.startswith('stages.0.blocks.0.norm1.') for k in state)
    ):
        state = _timm_to_native(state, len(encoder.stages))
        report.source_layout = 'timm-resnetv2'
    elif isinstance(encoder, PreActResNet):
        report.source_layout = 'native'
    else:
        report.source_layout = 'torchvision'
    target = encoder.state_dict()
    stem_key = 'stem.conv.weight' if 'stem.conv.weight' in target else 'conv1.weight'
    loadable: dict[str, Tensor] = {}
    for key, source in state.items():
        value = source
        if any(p.match(key) for p in _HEAD_PATTERNS) and key not in target:
            report.ignored.append(key)
            continue
        if key not in target:
            report.unexpected.append(key)
            continue
        want = target[key].shape
        if value.shape != want:
            if (
                key == stem_key
                and value.dim() == 4
                and value.shape[0] == want[0]
                and value.shape[2:] == want[2:]
            ):
                value = _adapt_input_conv(value, want[1])
                report.adapted.append(key)
            else:
                report.mismatched.append(f'{key} (file {tuple(value.shape)}, model {tuple(want)})')
                continue
        loadable[key] = value.to(target[key].dtype)
    report.missing = [
        k
        for k in target
        if k not in loadable
        and not k.endswith(_OPTIONAL_SUFFIX)
        and not any(m.startswith(k + ' ') for m in report.mismatched)
    ]
    report.loaded = len(loadable)
    return loadable, report


def load_pretrained(encoder: nn.Module, path: str | Path) -> LoadReport:
    """Load a local pretrained file into ``encoder`` (non-strict) and report what matched.

    Mismatched tensors are skipped, missing ones keep their initialisation; nothing raises
    unless the file cannot be read. Check ``report.ok`` or print the report.
    """
    state = read_state_dict(path)
    loadable, report = convert_state_dict(encoder, state)
    if not loadable:
        raise CheckpointError(
            f'{path}: no tensor matches the encoder ({report}); wrong file for this encoder?'
        )
    encoder.load_state_dict(loadable, strict=False)
    return report
