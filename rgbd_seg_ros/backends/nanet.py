"""NANet (Zhang et al., "Non-Local Aggregation for RGB-D Semantic Segmentation", IEEE SPL 2021)
as the ``nanet`` backend.

Two ResNet streams (RGB and depth; ResNet-50 or -101 in the paper, any package ResNet here)
with a Multi-modality Non-local Aggregation Module (:mod:`rgbd_seg_ros.backends.mnam`) after
each of the four stages; the module's output is fed back into both streams
(``r = r + m_s; d = d + m_s``). Heads (DeepLab V3+, :mod:`rgbd_seg_ros.backends.deeplabv3plus`):

* ``head_mode='dual'`` (default): one DeepLab V3+ head per stream (low level = stage-1 output,
  high level = stage-4 output, after feedback), logits summed -- the ablation baseline's two
  parallel DeepLab V3+ models plus MNAMs;
* ``head_mode='fused'``: one head on the MNAM outputs (low = m_1, high = m_4).

Auxiliary head on the stage-4 MNAM output (3x3 conv -> 256 + BN + ReLU + dropout 0.1 + 1x1),
loss weight 0.2, training only. Output stride 16 by default (ASPP rates 6/12/18; at output
stride 8 the rates double unless given).

Variants: ``variant='full'`` is the literal module (about 175 M parameters with ResNet-50 and
dual heads, 213 M with ResNet-101, doc/backends/nanet.md §3.5); ``variant='lite'`` (a deviation of
this package) uses depthwise strip convs and a reduced CFM, 88.3 M with ResNet-50 and dual
heads, nearly all of it the two trunks and heads.

Departures from the paper (whose Fig. 1 wiring, output stride, decoder details and sizes are
not recoverable from the text; this project's readings are doc/backends/nanet.md §3.3, the
departures §5): feedback into both streams by addition
(``feedback`` 'both' | 'rgb' | 'none'), the head modes above, OS 16, FCN-style auxiliary head,
single-FC phi/rho, BN after the strip convs. The paper feeds HHA (``depth_channels=3``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.base import SegBackend, init_weights
from rgbd_seg_ros.backends.deeplabv3plus import DeepLabV3PlusHead
from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.backends.encoders import build_encoder
from rgbd_seg_ros.backends.mnam import MNAM
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.backends.resnet import ResNet
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.modes import EncoderStream


@dataclass
class NANetConfig:
    """Options of the ``nanet`` backend, NANet (Zhang et al., IEEE SPL 2021): two ResNet
    streams with a multi-modality non-local aggregation module (MNAM) after every stage and
    DeepLab V3+ heads. The defaults are the literal module with ResNet-50 and dual heads:
    174.6 M parameters (212.6 M with resnet101); ``variant='lite'`` gives 88.3 M."""

    encoder: str = 'resnet50'
    """ResNet v1 trunk of both streams: resnet50 | resnet101 (the paper); resnet18 | resnet34
    for CPU use."""
    depth_channels: int = 1
    """Channels of the depth tensor: 1 for metric depth, 3 for HHA (the paper) or jet."""
    output_stride: int = 16
    """8 | 16 | 32 (the ASPP rates double at 8 unless aspp_rates is set)."""
    variant: str = 'full'
    """full (the literal MNAM) | lite (depthwise SFM, reduced CFM; this package's
    deviation)."""
    cfm_reduction: int = 16
    """Bottleneck of the lite CFM, 2C -> 2C/r."""
    mnam_stages: tuple[int, ...] = (1, 2, 3, 4)
    """Stages followed by an MNAM."""
    feedback: str = 'both'
    """Streams the MNAM output is added back into: both | rgb | none."""
    head_mode: str = 'dual'
    """dual (one DeepLab V3+ head per stream, logits summed) | fused (one head on the MNAM
    outputs)."""
    aspp_channels: int = 256
    """Width of the ASPP of each head."""
    aspp_rates: tuple[int, ...] | None = None
    """ASPP dilation rates; None is (6, 12, 18) at output stride 16, doubled at 8."""
    low_channels: int = 48
    """Width of the heads' low-level projection."""
    aux_channels: int = 256
    """Width of the auxiliary head on the stage-4 MNAM output."""
    aux_weight: float = 0.2
    """Loss weight of the auxiliary head (0 disables it)."""
    pooled_norm: bool = True
    """BatchNorm of the ASPP image-pooling branch; needs batch > 1 to train."""

    def __post_init__(self) -> None:
        self.mnam_stages = tuple(sorted(int(s) for s in self.mnam_stages))
        if self.variant not in ('full', 'lite'):
            raise ConfigError(f"variant must be 'full' or 'lite', got {self.variant!r}")
        if self.feedback not in ('both', 'rgb', 'none'):
            raise ConfigError(f"feedback must be 'both', 'rgb' or 'none', got {self.feedback!r}")
        if self.head_mode not in ('dual', 'fused'):
            raise ConfigError(f"head_mode must be 'dual' or 'fused', got {self.head_mode!r}")
        if not set(self.mnam_stages) <= {1, 2, 3, 4}:
            raise ConfigError(f'mnam_stages must be within 1..4, got {self.mnam_stages}')
        if self.head_mode == 'fused' and not {1, 4} <= set(self.mnam_stages):
            raise ConfigError("head_mode 'fused' reads the MNAMs of stages 1 and 4")
        if self.aux_weight > 0 and 4 not in self.mnam_stages:
            raise ConfigError('the auxiliary head reads the stage-4 MNAM (or set aux_weight 0)')
        if self.output_stride not in (8, 16, 32):
            raise ConfigError(f'output_stride must be 8, 16 or 32, got {self.output_stride}')
        if self.aspp_rates is not None:
            self.aspp_rates = tuple(int(r) for r in self.aspp_rates)


@register_backend(
    'nanet', NANetConfig, summary='NANet non-local aggregation (Zhang et al., IEEE SPL 2021)'
)
class NANet(SegBackend):
    """Two ResNet streams with MNAM after each stage and DeepLab V3+ heads (module doc)."""

    config: NANetConfig

    def __init__(self, num_classes: int, config: NANetConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.config = config
        self.output_stride = config.output_stride
        stride = config.output_stride
        rgb_encoder = build_encoder(config.encoder, in_channels=3, output_stride=stride)
        depth_encoder = build_encoder(
            config.encoder, in_channels=config.depth_channels, output_stride=stride
        )
        if not isinstance(rgb_encoder, ResNet) or not isinstance(depth_encoder, ResNet):
            raise ConfigError(
                f'NANet needs a ResNet v1 encoder (resnet18..101), got {config.encoder}'
            )
        self.encoder_rgb, self.encoder_depth = rgb_encoder, depth_encoder
        info = self.encoder_rgb.feature_info  # stem, layer1..layer4
        lite = config.variant == 'lite'
        self.mnams = nn.ModuleDict(
            {
                str(s): MNAM(info[s].channels, lite=lite, cfm_reduction=config.cfm_reduction)
                for s in config.mnam_stages
            }
        )
        rates = config.aspp_rates or tuple(r * 16 // config.output_stride for r in (6, 12, 18))
        c_low, c_high = info[1].channels, info[4].channels

        def head() -> DeepLabV3PlusHead:
            return DeepLabV3PlusHead(
                c_high,
                c_low,
                num_classes,
                config.aspp_channels,
                config.low_channels,
                rates,
                pooled_norm=config.pooled_norm,
            )

        if config.head_mode == 'dual':
            self.head_rgb = head()
            self.head_depth = head()
        else:
            self.head = head()
        self.aux_head: nn.Sequential | None
        if config.aux_weight > 0:
            self.aux_head = nn.Sequential(
                nn.Conv2d(c_high, config.aux_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(config.aux_channels),
                nn.ReLU(inplace=True),
                nn.Dropout2d(0.1),
                nn.Conv2d(config.aux_channels, num_classes, 1),
            )
            self.aux_weights = (float(config.aux_weight),)
        else:
            self.aux_head = None
            self.aux_weights = ()
        self.pad_multiple = max(f.stride for f in info)
        for module in self.children():
            if module not in (self.encoder_rgb, self.encoder_depth):
                init_weights(module)

    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """The RGB and depth trunks."""
        return {'rgb': self.encoder_rgb, 'depth': self.encoder_depth}

    @staticmethod
    def _stage(encoder: ResNet, s: int, x: Tensor) -> Tensor:
        if s == 0:
            return encoder.maxpool(encoder.relu(encoder.bn1(encoder.conv1(x))))
        return getattr(encoder, f'layer{s}')(x)

    def streams(self, rgb: Tensor, depth: Tensor) -> dict[str, list[Tensor | None]]:
        """Stage outputs after feedback (``'rgb'``, ``'depth'``) and MNAM outputs (``'mnam'``),
        index 1..4 (index 0 unused)."""
        r = self._stage(self.encoder_rgb, 0, rgb)
        d = self._stage(self.encoder_depth, 0, depth)
        outs: dict[str, list[Tensor | None]] = {'rgb': [None], 'depth': [None], 'mnam': [None]}
        feedback = self.config.feedback
        for s in range(1, 5):
            r = self._stage(self.encoder_rgb, s, r)
            d = self._stage(self.encoder_depth, s, d)
            m = None
            if str(s) in self.mnams:
                m = self.mnams[str(s)](r, d)
                if feedback in ('both', 'rgb'):
                    r = r + m
                if feedback == 'both':
                    d = d + m
            outs['rgb'].append(r)
            outs['depth'].append(d)
            outs['mnam'].append(m)
        return outs

    def forward_padded(
        self, rgb: Tensor | None, depth: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        assert rgb is not None and depth is not None  # both read, checked by SegBackend
        outs = self.streams(rgb, depth)
        r, d, m = outs['rgb'], outs['depth'], outs['mnam']
        if self.config.head_mode == 'dual':
            logits = self.head_rgb(r[1], r[4]) + self.head_depth(d[1], d[4])
        else:
            logits = self.head(m[1], m[4])
        logits = F.interpolate(logits, size=rgb.shape[-2:], mode='bilinear', align_corners=False)
        aux: tuple[Tensor, ...] = ()
        if self.training and self.aux_head is not None:
            aux = (self.aux_head(m[4]),)
        return logits, aux


def mnam_parameter_table(
    encoder: str = 'resnet50', variant: str = 'full', stages: Sequence[int] = (1, 2, 3, 4)
) -> dict[str, int]:
    """Parameters of SFM and CFM per stage for a ResNet's stage widths (the trunk is built on
    the meta device only to read its widths: no memory, no weights)."""
    with torch.device('meta'):
        info = build_encoder(encoder).feature_info  # stem, then the four stages
    table = {}
    for s in stages:
        m = MNAM(info[s].channels, lite=variant == 'lite')
        table[f'stage{s}.sfm'] = sum(p.numel() for p in m.sfm.parameters())
        table[f'stage{s}.cfm'] = sum(p.numel() for p in m.cfm.parameters())
    return table
