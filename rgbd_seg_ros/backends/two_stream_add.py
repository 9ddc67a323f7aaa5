"""``esanet_add``: the plain two-stream RGB-D baseline with addition fusion (ESANet's shape).

ESANet (Seichter, Köhler, Lewandowski, Wengefeld, Gross, "Efficient RGB-D Semantic
Segmentation for Indoor Scene Analysis", ICRA 2021) runs an RGB and a depth ResNet side by
side and adds the depth features into the RGB stream after the stem and after each of the four
residual stages; the depth stream continues on its own features, and a light decoder reads the
fused maps as skips. The performance issue asks for exactly this as the yardstick: the cost of
each fusion backend is reported as a ratio to a two-stream network of the same encoders whose
fusion costs nothing but an addition.

This is the baseline's *shape*, not a reproduction of ESANet: there is no squeeze-and-excitation
on the fusion (ESANet re-weights both modalities with SE before adding), no pyramid pooling
context module, no non-bottleneck-1D decoder blocks and no learned upsampling, and nothing here
has been trained against ESANet's published mIoU. What it has:

- ``encoder_rgb`` / ``encoder_depth``: two encoders of the same name (``build_encoder``; the
  depth one with ``in_channels=depth_channels``), plain (no AdapNet++ multiscale units), output
  stride 32 by default as in ESANet; an optional BatchNorm on the raw depth input (ESANet
  normalises depth with dataset statistics, which a BN in eval mode is);
- fusion: ``rgb <- rgb + depth`` after the stem and after each residual stage;
- decoder: 1x1 conv (+BN+ReLU) on the deepest fused map to ``decoder_channels``, then for the
  fused maps at strides 16, 8 and 4: bilinear upsampling to the skip's size, addition of a 1x1
  conv (+BN) projection of the skip, 3x3 conv + BN + ReLU; a 1x1 classifier on the stride-4 map
  and bilinear upsampling to the input size. In training mode two 1x1 side classifiers (on the
  stride-16 and stride-8 decoder maps; ESANet also supervises its decoder stages) are returned
  as auxiliary logits with weights ``aux_weights`` (our choice, not ESANet's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.base import SegBackend, init_weights
from rgbd_seg_ros.backends.blocks import ConvBNReLU
from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.backends.encoders import build_encoder
from rgbd_seg_ros.backends.preact_resnet import PreActResNet
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.backends.resnet import ResNet
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.modes import EncoderStream

NUM_STAGES = 5  # stem + four residual stages: the five fusion points


@dataclass
class TwoStreamAddConfig:
    """Options of the ``esanet_add`` backend, the plain two-stream baseline with addition
    fusion in the shape of ESANet (Seichter et al., ICRA 2021; not a reproduction), which
    ``rgbd-seg bench`` states the fusion backends against. The defaults are ESANet-R34's
    encoder layout."""

    encoder: str = 'resnet34'
    """Trunk of both streams, any name of ``encoders.list_encoders()``."""
    depth_channels: int = 1
    """Channels of the depth tensor: 1 for metric depth, 3 for jet or HHA."""
    output_stride: int = 32
    """8 | 16 | 32 (ESANet: 32)."""
    decoder_channels: int = 128
    """Width of the decoder."""
    depth_input_norm: bool = True
    """Learnable BatchNorm on the raw depth input."""
    aux_loss: bool = True
    """Side classifiers on the stride-16 and stride-8 decoder maps in training mode."""
    aux_weights: tuple[float, float] = (0.5, 0.5)
    """Loss weights of the (stride-8 head, stride-16 head)."""

    def __post_init__(self) -> None:
        weights = tuple(float(w) for w in self.aux_weights)
        if len(weights) != 2:
            raise ConfigError(f'aux_weights needs 2 values (stride 8, stride 16), got {weights}')
        self.aux_weights = (weights[0], weights[1])
        if self.depth_channels < 1:
            raise ConfigError(f'depth_channels must be positive, got {self.depth_channels}')
        if self.output_stride not in (8, 16, 32):
            raise ConfigError(f'output_stride must be 8, 16 or 32, got {self.output_stride}')
        if self.decoder_channels < 1:
            raise ConfigError(f'decoder_channels must be positive, got {self.decoder_channels}')


def encoder_stage(encoder: Encoder, index: int, x: Tensor) -> Tensor:
    """Run stage ``index`` (0 = stem, 1..4 = residual stages) of a ResNet-family encoder.

    The encoders' own ``forward`` runs all stages at once; fusion between stages needs them
    one at a time. ``encoder_stage`` applied for 0..4 gives exactly ``encoder(x)``'s features.
    """
    if isinstance(encoder, ResNet):
        if index == 0:
            return encoder.relu(encoder.bn1(encoder.conv1(x)))
        if index == 1:
            x = encoder.maxpool(x)
        return getattr(encoder, f'layer{index}')(x)
    if isinstance(encoder, PreActResNet):
        if index == 0:
            return encoder.stem(x)
        if index == 1:
            x = F.max_pool2d(x, 3, 2, 1)
        return encoder.stages[index - 1](x)
    raise ConfigError(f'encoder {type(encoder).__name__} has no stage-wise forward')


class AddDecoderStage(nn.Module):
    """Upsample to the skip's size, add the projected skip, 3x3 conv + BN + ReLU."""

    def __init__(self, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.skip = ConvBNReLU(skip_channels, channels, 1, relu=False)
        self.conv = ConvBNReLU(channels, channels, 3)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
        return self.conv(x + self.skip(skip))


@register_backend(
    'esanet_add',
    TwoStreamAddConfig,
    summary='Two-stream addition-fusion baseline (ESANet shape, Seichter et al., ICRA 2021)',
)
class TwoStreamAdd(SegBackend):
    """Two encoders of one name, depth added into RGB after every stage, light decoder."""

    config: TwoStreamAddConfig

    def __init__(self, num_classes: int, config: TwoStreamAddConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.config = config
        self.output_stride = config.output_stride
        self.encoder_rgb = build_encoder(config.encoder, output_stride=config.output_stride)
        self.encoder_depth = build_encoder(
            config.encoder, output_stride=config.output_stride, in_channels=config.depth_channels
        )
        for encoder in (self.encoder_rgb, self.encoder_depth):
            if not isinstance(encoder, (ResNet, PreActResNet)):
                raise ConfigError(
                    f'esanet_add needs a ResNet-family encoder, got {config.encoder!r}'
                )
        self.depth_norm: nn.Module = (
            nn.BatchNorm2d(config.depth_channels) if config.depth_input_norm else nn.Identity()
        )
        info = self.encoder_rgb.feature_info
        d = config.decoder_channels
        self.context = ConvBNReLU(info[4].channels, d, 1)
        self.up16 = AddDecoderStage(info[3].channels, d)
        self.up8 = AddDecoderStage(info[2].channels, d)
        self.up4 = AddDecoderStage(info[1].channels, d)
        self.classifier = nn.Conv2d(d, num_classes, 1)
        self.aux16 = nn.Conv2d(d, num_classes, 1) if config.aux_loss else None
        self.aux8 = nn.Conv2d(d, num_classes, 1) if config.aux_loss else None
        for module in (self.depth_norm, self.context, self.up16, self.up8, self.up4):
            init_weights(module)
        self.pad_multiple = max(f.stride for f in info)
        self.aux_weights = tuple(config.aux_weights) if config.aux_loss else ()

    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """The RGB and depth encoders."""
        return {'rgb': self.encoder_rgb, 'depth': self.encoder_depth}

    def forward_padded(
        self, rgb: Tensor | None, depth: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        assert rgb is not None  # both inputs are read, checked by SegBackend
        x, y = rgb, self.depth_norm(depth)
        fused = []
        for index in range(NUM_STAGES):
            y = encoder_stage(self.encoder_depth, index, y)
            x = encoder_stage(self.encoder_rgb, index, x) + y
            fused.append(x)
        z = self.context(fused[4])
        z16 = self.up16(z, fused[3])
        z8 = self.up8(z16, fused[2])
        z4 = self.up4(z8, fused[1])
        logits = F.interpolate(
            self.classifier(z4), size=rgb.shape[-2:], mode='bilinear', align_corners=False
        )
        aux: tuple[Tensor, ...] = ()
        if self.training and self.aux8 is not None and self.aux16 is not None:
            aux = (self.aux8(z8), self.aux16(z16))
        return logits, aux


__all__ = ['TwoStreamAdd', 'TwoStreamAddConfig', 'encoder_stage']
