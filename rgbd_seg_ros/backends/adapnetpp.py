"""AdapNet++ (Valada, Mohan, Burgard, IJCV 2019): unimodal backbone of SSMA.

Paper, reference code and this project's readings: doc/backends/ssma.md §2.

Structure (``preact_resnet50`` at output stride 16, the paper's figures):

- ``expert``: learnable input BN -> encoder (full pre-activation ResNet-50 with multiscale
  residual units) -> eASPP on res5 (256 ch) and two skip refinements, 1x1 conv + BN (no ReLU)
  to 24 channels from res3 (OS8, "res3d") and res2 (OS4, "res2c");
- ``decoder``: deconv x2 -> concat skip OS8 -> 2x (3x3 conv + BN + ReLU) -> deconv x2 -> concat
  skip OS4 -> 2x (3x3 conv + BN + ReLU) -> 1x1 classifier (+BN+ReLU, as the reference) ->
  deconv x4 (+BN) = logits; two auxiliary 1x1 conv + BN heads on the deconv outputs, used in
  training only: the OS4 head with weight 0.6 and the OS8 head with 0.5 (the paper's weights
  assigned to the heads as the reference code does; doc/backends/ssma.md §2.5, §5.5).

Any registered encoder works (``resnet18/34`` for CPU use): channels come from its
``feature_info``. The network reads one modality (``modality: rgb | depth``); the depth
variant is what SSMA's staged training initialises its depth expert from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rgbd_seg_ros.backends.base import SegBackend, init_weights, set_bn_momentum
from rgbd_seg_ros.backends.blocks import ConvBNReLU, DeconvBN, SkipAttention, upsample_layer
from rgbd_seg_ros.backends.easpp import EASPP
from rgbd_seg_ros.backends.encoder_base import Encoder, resolve_multiscale
from rgbd_seg_ros.backends.encoders import build_encoder
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.modes import EncoderStream


def check_adapnetpp_fields(config: Any, resnet_encoder: bool = True) -> None:
    """Normalise and check the fields the AdapNet++ family shares (AdapNet++, SSMA, RFBNet).

    Runs in each config's ``__post_init__`` so that YAML lists become tuples and a bad value
    fails where the config is built, naming the field.
    """
    config.easpp_rates = tuple(int(r) for r in config.easpp_rates)
    config.aux_weights = tuple(float(w) for w in config.aux_weights)
    if len(config.aux_weights) != 2:
        raise ConfigError(f'aux_weights needs 2 values (OS4, OS8), got {config.aux_weights}')
    if config.depth_channels < 1:
        raise ConfigError(f'depth_channels must be positive, got {config.depth_channels}')
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f'dropout must be in [0, 1), got {config.dropout}')
    if resnet_encoder:
        if config.output_stride not in (8, 16, 32):
            raise ConfigError(f'output_stride must be 8, 16 or 32, got {config.output_stride}')
        resolve_multiscale(config.multiscale)  # validates


@dataclass
class AdapNetppConfig:
    """Options of the ``adapnetpp`` backend, unimodal AdapNet++ (Valada, Mohan, Burgard, IJCV
    2019). The defaults are the paper's network: 30.2 M parameters with 12 classes."""

    encoder: str = 'preact_resnet50'
    """Trunk, any name of ``encoders.list_encoders()``; the paper's is the full pre-activation
    ResNet-50, resnet18 or resnet34 suit CPU use."""
    depth_channels: int = 1
    """Channels of the depth tensor: 1 for metric depth, 3 for jet or HHA."""
    modality: str = 'rgb'
    """The one input this unimodal network reads: rgb | depth."""
    output_stride: int = 16
    """8 | 16 | 32."""
    multiscale: Any = 'paper'
    """Rates of the multiscale residual units: paper | code (the authors' released code) |
    none | 4 per-stage lists of [r1, r2] pairs."""
    input_norm: bool = True
    """Learnable BatchNorm on the raw input (the same for either modality)."""
    easpp_channels: int = 256
    """Output width of the eASPP context module."""
    easpp_bottleneck: int = 64
    """Bottleneck width inside each of the eASPP's atrous branches."""
    easpp_rates: tuple[int, ...] = (3, 6, 12)
    """Dilation rate of each eASPP atrous branch."""
    skip_channels: int = 24
    """Width of the two skip refinements (OS8 and OS4)."""
    decoder_channels: int = 256
    """Width of the decoder's convolutions."""
    aux_loss: bool = True
    """Return the two auxiliary heads in training mode."""
    aux_weights: tuple[float, float] = (0.6, 0.5)
    """Loss weights of the (OS4 head, OS8 head): the paper's values, assigned to the heads as the
    reference code does (doc/backends/ssma.md §5.5)."""
    classifier_bn_relu: bool = True
    """The reference code's BN+ReLU after the 1x1 classifier and BN after the final deconv;
    False gives plain logits."""
    dropout: float = 0.5
    """Dropout on the residual branch of the encoder's last unit."""
    pooled_norm: bool = True
    """BatchNorm on 1x1 pooled maps (eASPP image pooling); needs batch > 1 to train."""
    bn_momentum: float = 0.01
    """BatchNorm momentum in PyTorch's convention (TensorFlow's decay 0.99)."""

    def __post_init__(self) -> None:
        check_adapnetpp_fields(self)


class AdapNetppExpert(nn.Module):
    """One modality's encoder stream: input BN, encoder, eASPP and the two skip convs.

    ``forward(x) -> (latent, skip_os8, skip_os4)``. This is the part SSMA duplicates per
    modality and initialises from unimodal models (keys below ``expert.``).
    """

    def __init__(self, in_channels: int, config: Any) -> None:
        super().__init__()
        self.input_norm: nn.Module = (
            nn.BatchNorm2d(in_channels) if config.input_norm else nn.Identity()
        )
        self.encoder = build_encoder(
            config.encoder,
            output_stride=config.output_stride,
            in_channels=in_channels,
            multiscale=config.multiscale,
            last_dropout=config.dropout,
        )
        info = self.encoder.feature_info
        # a module slot: ssma_ann puts an APNB context head here
        self.easpp: nn.Module = EASPP(
            info[-1].channels,
            config.easpp_channels,
            config.easpp_bottleneck,
            config.easpp_rates,
            pooled_norm=config.pooled_norm,
        )
        self.skip_os8 = ConvBNReLU(info[2].channels, config.skip_channels, 1, relu=False)
        self.skip_os4 = ConvBNReLU(info[1].channels, config.skip_channels, 1, relu=False)
        init_weights(self.easpp)
        init_weights(self.skip_os8)
        init_weights(self.skip_os4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feats = self.encoder(self.input_norm(x))
        return self.easpp(feats[-1]), self.skip_os8(feats[2]), self.skip_os4(feats[1])


class AdapNetppDecoder(nn.Module):
    """Three upsampling stages with two skip refinements and the two auxiliary heads.

    ``skip_attention=True`` adds SSMA's channel aggregation: each skip is scaled by
    ``ReLU(BN(1x1(GAP(decoder))))`` before concatenation.
    """

    def __init__(
        self,
        num_classes: int,
        config: Any,
        skip_attention: bool = False,
        attention_activation: str = 'relu',
    ) -> None:
        super().__init__()
        d, s, k = config.decoder_channels, config.skip_channels, num_classes
        self.up1 = DeconvBN(config.easpp_channels, d, config.output_stride // 8)
        self.conv1 = nn.Sequential(ConvBNReLU(d + s, d, 3), ConvBNReLU(d, d, 3))
        self.up2 = DeconvBN(d, d, 2)
        self.conv2 = nn.Sequential(ConvBNReLU(d + s, d, 3), ConvBNReLU(d, d, 3))
        if config.classifier_bn_relu:
            self.classifier: nn.Module = ConvBNReLU(d, k, 1)
            self.up3: nn.Module = DeconvBN(k, k, 4)
        else:
            self.classifier = nn.Conv2d(d, k, 1, bias=True)
            self.up3 = upsample_layer(k, k, 4)
        self.aux_loss = config.aux_loss
        if config.aux_loss:
            self.aux_os4 = ConvBNReLU(d, k, 1, relu=False)
            self.aux_os8 = ConvBNReLU(d, k, 1, relu=False)
        self.att1: SkipAttention | None
        self.att2: SkipAttention | None
        if skip_attention:
            self.att1 = SkipAttention(d, s, attention_activation, norm=config.pooled_norm)
            self.att2 = SkipAttention(d, s, attention_activation, norm=config.pooled_norm)
        else:
            self.att1 = self.att2 = None
        init_weights(self)
        if not config.classifier_bn_relu:
            bias = self.classifier.bias
            assert isinstance(bias, Tensor)  # the plain 1x1 conv above has one
            nn.init.zeros_(bias)

    def forward(
        self, latent: Tensor, skip_os8: Tensor, skip_os4: Tensor
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        x8 = self.up1(latent)
        if self.att1 is not None:
            skip_os8 = self.att1(x8, skip_os8)
        y = self.conv1(torch.cat((x8, skip_os8), dim=1))
        x4 = self.up2(y)
        if self.att2 is not None:
            skip_os4 = self.att2(x4, skip_os4)
        y = self.conv2(torch.cat((x4, skip_os4), dim=1))
        logits = self.up3(self.classifier(y))
        aux: tuple[Tensor, ...] = ()
        if self.training and self.aux_loss:
            aux = (self.aux_os4(x4), self.aux_os8(x8))
        return logits, aux


@register_backend(
    'adapnetpp', AdapNetppConfig, summary='AdapNet++ (Valada et al., IJCV 2019), unimodal'
)
class AdapNetpp(SegBackend):
    """AdapNet++ unimodal segmentation network reading ``config.modality``."""

    config: AdapNetppConfig

    def __init__(self, num_classes: int, config: AdapNetppConfig) -> None:
        super().__init__()
        if config.modality not in ('rgb', 'depth'):
            raise ConfigError(f"modality must be 'rgb' or 'depth', got {config.modality!r}")
        self.num_classes = num_classes
        self.config = config
        self.output_stride = config.output_stride
        in_channels = 3 if config.modality == 'rgb' else config.depth_channels
        self.expert = AdapNetppExpert(in_channels, config)
        self.decoder = AdapNetppDecoder(num_classes, config)
        self.pad_multiple = max(f.stride for f in self.expert.encoder.feature_info)
        self.aux_weights = tuple(config.aux_weights) if config.aux_loss else ()
        set_bn_momentum(self, config.bn_momentum)

    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """The one encoder, under the modality it reads."""
        stream: EncoderStream = 'rgb' if self.config.modality == 'rgb' else 'depth'
        return {stream: self.expert.encoder}

    def uses_rgb(self) -> bool:
        return self.config.modality == 'rgb'

    def uses_depth(self) -> bool:
        return self.config.modality == 'depth'

    def forward_padded(
        self, rgb: Tensor | None, depth: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        x = rgb if self.config.modality == 'rgb' else depth
        return self.decoder(*self.expert(x))
