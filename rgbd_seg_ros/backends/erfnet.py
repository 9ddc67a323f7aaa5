"""ERFNet encoder (Romera et al., T-ITS 2018), the "ERFNetEnc" base network of RFBNet.

Layers (key names as the authors' PyTorch code: ``initial_block``, ``layers.<i>``, per
non-bottleneck-1D unit ``conv3x1_1, conv1x3_1, bn1, conv3x1_2, conv1x3_2, bn2``):

``DS(in -> 16) -> DS(16 -> 64) -> 5 x NB1D(64) -> DS(64 -> 128) -> 8 x NB1D(128, dilations
2, 4, 8, 16, 2, 4, 8, 16)``, output stride 8. A downsampler concatenates a stride-2 3x3 conv
(``in -> out - in``) with a 2x2 max-pool of its input, then BN + ReLU. A NB1D unit is
``3x1 -> ReLU -> 1x3 -> BN -> ReLU -> dilated 3x1 -> ReLU -> dilated 1x3 -> BN -> dropout``,
added to its input and followed by ReLU. Dropout 0.03 in the 64-channel units and 0.3 in the
128-channel ones, as in the reference code.

``ERFNetEncoder`` follows the package's encoder API (``forward(x) -> list`` of the three
downsampling levels' outputs, ``feature_info``), so it can also serve as a light encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.base import SegBackend
from rgbd_seg_ros.backends.encoder_base import Encoder, FeatureInfo
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.modes import EncoderStream

ERFNET_DILATIONS: tuple[int, ...] = (2, 4, 8, 16, 2, 4, 8, 16)


class DownsamplerBlock(nn.Module):
    """``BN(cat(conv3x3/2(x), maxpool2x2(x)))`` -> ReLU; ``out > in`` channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels <= in_channels:
            raise ValueError(
                f'downsampler needs out > in channels, got {in_channels}->{out_channels}'
            )
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, 2, 1, bias=True)
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1D(nn.Module):
    """ERFNet's factorised residual unit. ``residual(x)`` is F(x) of ``relu(x + F(x))``."""

    def __init__(self, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), 1, (1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), 1, (0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(channels, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (3, 1), 1, (d, 0), (d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, 3), 1, (0, d), (1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.channels = channels

    def residual(self, x: Tensor) -> Tensor:
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        return self.dropout(self.bn2(self.conv1x3_2(y)))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.residual(x))


# Where the ERFNet authors' ImageNet classifier keeps the encoder (its ``features.encoder``).
ERFNET_IMAGENET_PREFIX = 'features.encoder.'


class ERFNetEncoder(Encoder):
    """ERFNet encoder; features: 1/2 (16 ch), 1/4 (64 ch), 1/8 (128 ch)."""

    weight_files: ClassVar[str] = (
        "the ERFNet authors' ImageNet-pretrained encoder (erfnet_encoder_pretrained.pth.tar: "
        'keys features.encoder.*, classifier.*), for 3-channel input'
    )

    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 64, 128),
        num_units_os4: int = 5,
        dilations: tuple[int, ...] = ERFNET_DILATIONS,
        dropout: tuple[float, float] = (0.03, 0.3),
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.in_channels = in_channels
        self.output_stride = 8
        self.initial_block = DownsamplerBlock(in_channels, w1)
        layers: list[nn.Module] = [DownsamplerBlock(w1, w2)]
        layers += [NonBottleneck1D(w2, dropout[0], 1) for _ in range(num_units_os4)]
        layers.append(DownsamplerBlock(w2, w3))
        self.first_os8_unit = len(layers)
        layers += [NonBottleneck1D(w3, dropout[1], int(d)) for d in dilations]
        self.layers = nn.ModuleList(layers)
        self.feature_info = [
            FeatureInfo(w1, 2, 'os2'),
            FeatureInfo(w2, 4, 'os4'),
            FeatureInfo(w3, 8, 'os8'),
        ]

    def imagenet_state(self, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
        """The authors' ImageNet file nests the encoder under ``features.encoder``; its other
        keys (the classifier) keep their names, so the loader can tell them apart."""
        if not any(k.startswith(ERFNET_IMAGENET_PREFIX) for k in state):
            return dict(state), 'native'
        renamed = {k.removeprefix(ERFNET_IMAGENET_PREFIX): v for k, v in state.items()}
        return renamed, 'erfnet-imagenet'

    @property
    def os8_units(self) -> list[NonBottleneck1D]:
        """The 1/8-resolution NB1D units (where RFBNet places its RFBs)."""
        # cast: a ModuleList yields Modules; the units from first_os8_unit on are NB1D units
        return cast(list[NonBottleneck1D], list(self.layers[self.first_os8_unit :]))

    def forward_to_os8(self, x: Tensor) -> list[Tensor]:
        """Features up to the third downsampler (1/2, 1/4, 1/8 before the 1/8 units)."""
        x = self.initial_block(x)
        feats = [x]
        for i in range(self.first_os8_unit):
            x = self.layers[i](x)
            if i == self.first_os8_unit - 2:
                feats.append(x)
        feats.append(x)
        return feats

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.forward_to_os8(x)
        y = feats[-1]
        for unit in self.os8_units:
            y = unit(y)
        feats[-1] = y
        return feats


@dataclass
class ERFNetEncConfig:
    """Options of the ``erfnet_enc`` backend (the unimodal ERFNetEnc of RFBNet's ablations)."""

    encoder: str = 'erfnet'
    """The only encoder of this backend."""
    depth_channels: int = 1
    """Channels of the depth tensor: 1 for metric depth, 3 for jet or HHA."""
    modality: str = 'rgb'
    """The one input this unimodal network reads: rgb | depth."""
    depth_shrink: bool = False
    """Read depth at half resolution, as inside RFBNet."""

    def __post_init__(self) -> None:
        if self.encoder != 'erfnet':
            raise ConfigError(f"erfnet_enc only has the 'erfnet' encoder, got {self.encoder!r}")
        if self.modality not in ('rgb', 'depth'):
            raise ConfigError(f"modality must be 'rgb' or 'depth', got {self.modality!r}")


@register_backend(
    'erfnet_enc',
    ERFNetEncConfig,
    summary='ERFNet encoder + 1x1 + bilinear x8 (Romera et al., T-ITS 2018), unimodal',
)
class ERFNetEnc(SegBackend):
    """ERFNet encoder, 1x1 classifier and x8 bilinear upsampling on one modality.

    The unimodal model RFBNet(ERFNetEnc) initialises its encoders from (keys ``encoder.*``).
    """

    config: ERFNetEncConfig

    def __init__(self, num_classes: int, config: ERFNetEncConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.config = config
        self.output_stride = 8
        depth = config.modality == 'depth'
        self.encoder = ERFNetEncoder(config.depth_channels if depth else 3)
        self.classifier = nn.Conv2d(self.encoder.feature_info[-1].channels, num_classes, 1)
        self.pad_multiple = 16 if (depth and config.depth_shrink) else 8

    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """The one encoder, under the modality it reads."""
        stream: EncoderStream = 'rgb' if self.config.modality == 'rgb' else 'depth'
        return {stream: self.encoder}

    def uses_rgb(self) -> bool:
        return self.config.modality == 'rgb'

    def uses_depth(self) -> bool:
        return self.config.modality == 'depth'

    def forward_padded(
        self, rgb: Tensor | None, depth: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        x = rgb if self.config.modality == 'rgb' else depth
        assert x is not None  # the modality read, refused as None by the base checks
        size = x.shape[-2:]
        if self.config.modality == 'depth' and self.config.depth_shrink:
            x = F.avg_pool2d(x, 2, 2)
        logits = self.classifier(self.encoder(x)[-1])
        return F.interpolate(logits, size=size, mode='bilinear', align_corners=False), ()
