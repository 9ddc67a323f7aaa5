"""Encoder construction by name: the one list of encoder names.

``build_encoder(name, output_stride=16, in_channels=3, **kw)`` returns an
:class:`~rgbd_seg_ros.backends.encoder_base.Encoder`:
an ``nn.Module`` whose ``forward(x)`` returns the stage outputs shallow to deep and whose
``feature_info`` lists ``FeatureInfo(channels, stride, name)`` for each of them. Five features
are returned for every ResNet: the stem at stride 2, then the four residual stages at strides
4, 8, 16, 32 (or less, by dilation, for output stride 16 or 8).

Names:
- ``resnet18/34/50/101``: ResNet v1 (v1.5: stride on the 3x3) with state-dict keys identical to
  torchvision's ``ResNet`` (``conv1``, ``bn1``, ``layer1.0.conv1`` ..., no ``fc``), so a local
  torchvision ImageNet file loads directly (see ``pretrained.load_encoder_weights``).
- ``resnet18_half``: ResNet-18 at half width (32..256 channels, a quarter of the parameters),
  trained from scratch for CPU-sized models such as the embedded default; not in the papers.
- ``preact_resnet50/101``: the full pre-activation ResNet (v2) of AdapNet++, whose stage outputs
  are the post-BN-ReLU maps the skips and eASPP read; loads timm ``resnetv2_50`` files.

Both take ``multiscale`` (per-stage lists of ``(r1, r2)`` dilation pairs, see
:data:`~rgbd_seg_ros.backends.encoder_base.ADAPNETPP_RATES`) to turn the last units of a stage
into AdapNet++ multiscale residual units, and ``last_dropout`` (dropout on the residual branch
of the very last unit).
"""

from __future__ import annotations

from collections.abc import Callable

from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.backends.preact_resnet import PreActResNet
from rgbd_seg_ros.backends.resnet import ResNet
from rgbd_seg_ros.errors import ConfigError

# Name -> constructor taking (output_stride, in_channels, multiscale, last_dropout) keywords.
# The only place encoder names are listed: ENCODER_NAMES, list_encoders() and the error for an
# unknown name all derive from it.
_BUILDERS: dict[str, Callable[..., Encoder]] = {
    'resnet18_half': lambda **k: ResNet('basic', (2, 2, 2, 2), base_width=32, **k),
    'resnet18': lambda **k: ResNet('basic', (2, 2, 2, 2), **k),
    'resnet34': lambda **k: ResNet('basic', (3, 4, 6, 3), **k),
    'resnet50': lambda **k: ResNet('bottleneck', (3, 4, 6, 3), **k),
    'resnet101': lambda **k: ResNet('bottleneck', (3, 4, 23, 3), **k),
    'preact_resnet50': lambda **k: PreActResNet((3, 4, 6, 3), **k),
    'preact_resnet101': lambda **k: PreActResNet((3, 4, 23, 3), **k),
}
ENCODER_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def list_encoders() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return list(ENCODER_NAMES)


def build_encoder(
    name: str,
    output_stride: int = 16,
    in_channels: int = 3,
    *,
    multiscale: object = None,
    last_dropout: float = 0.0,
) -> Encoder:
    """Build encoder ``name`` (see module doc), randomly initialised.

    ImageNet weights are a training choice, not part of the network: the trainer loads them
    into a backend's encoder streams (``pretrained.load_encoder_weights``).
    """
    if name not in _BUILDERS:
        raise ConfigError(f'unknown encoder {name!r}; valid encoders: {", ".join(ENCODER_NAMES)}')
    if in_channels < 1:
        raise ConfigError(f'in_channels must be positive, got {in_channels}')
    encoder = _BUILDERS[name](
        output_stride=output_stride,
        in_channels=in_channels,
        multiscale=multiscale,
        last_dropout=last_dropout,
    )
    encoder.name = name
    return encoder
