"""The Asymmetric Non-local Neural Network (Zhu et al., "Asymmetric Non-local Neural Networks for
Semantic Segmentation", ICCV 2019) as the ``ann`` backend: the paper's own network, RGB only.

Network (``doc/backends/ann.md §5``)::

    dilated ResNet-101, output stride 8: Stage4 (layer3, 1024 ch) and Stage5 (layer4, 2048 ch)
    AFNB(keys/values pooled from Stage4, queries from Stage5) -> cat with Stage5 -> 2048 ch
    3x3 conv 2048 -> 512 + BN + ReLU
    APNB(512) -> cat with its input -> 1x1 + BN + ReLU + Dropout2d(0.05) -> 512 ch
    1x1 classifier -> bilinear x8 to the input size
    training only: deep supervision on Stage4, 3x3 conv 1024 -> 512 + BN + ReLU +
    Dropout2d(0.05) + 1x1 classifier, loss weight 0.4

The blocks are :mod:`rgbd_seg_ros.backends.nonlocal_blocks` (``ANNContextHead`` is exactly the
AFNB -> 3x3 -> APNB head), with the reference code's choices: shared query/key projection,
pyramid anchors {1, 3, 6, 8}, zero-initialised output projections. The paper trains the final
output with OHEM cross-entropy (``loss.ohem`` of the recipe) and the Stage4 output with plain
cross-entropy at weight 0.4 (this backend's ``aux_weights``).

ANN is an RGB-only method, and so is this backend: ``uses_depth()`` is False, so it reads no
depth and the node and the trainer pass it none (a checkpoint still records the dataset's depth
encoding; ``depth_channels`` is kept for that bookkeeping only). The package's RGB-D backends
are the others; ``ssma_ann`` is where the ANN blocks meet depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.base import SegBackend
from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.backends.encoders import build_encoder
from rgbd_seg_ros.backends.nonlocal_blocks import PYRAMID_SIZES, ANNContextHead
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.modes import EncoderStream


@dataclass
class ANNConfig:
    """Options of the ``ann`` backend, the Asymmetric Non-local Neural Network (Zhu et al.,
    ICCV 2019). The defaults are the paper's Cityscapes network: with 19 classes 62.84 M
    parameters without the training-only Stage4 head (the paper: 63.17 M), 67.57 M with it."""

    encoder: str = 'resnet101'
    """Dilated ResNet trunk: resnet101 (the paper) | resnet50; resnet18 | resnet34 for CPU use."""
    output_stride: int = 8
    """Output stride of the trunk; the paper dilates the last two stages (8)."""
    depth_channels: int = 1
    """Not read (the network is RGB-only); kept so the checkpoint records the dataset's depth
    encoding like every backend's."""
    context_channels: int = 512
    """Width of the 3x3 reduction after AFNB and of APNB (the paper's 512)."""
    key_channels: int = 256
    """Key/query width of AFNB and APNB (the paper's C-hat = 256)."""
    value_channels: int = 256
    """Value width of AFNB and APNB."""
    pyramid_sizes: tuple[int, ...] = PYRAMID_SIZES
    """Adaptive-pooling sizes of the anchors: {1, 3, 6, 8}, S = 110."""
    zero_init: bool = True
    """The reference code's zero-initialised output projections W_o: the blocks start as
    no-ops."""
    dropout: float = 0.05
    """Dropout2d after APNB's fusion and in the Stage4 head (the reference code's 0.05)."""
    aux_channels: int = 512
    """Width of the Stage4 deep-supervision head's 3x3 conv."""
    aux_weight: float = 0.4
    """Loss weight of the Stage4 output (the paper's lambda)."""

    def __post_init__(self) -> None:
        self.pyramid_sizes = tuple(int(n) for n in self.pyramid_sizes)
        if not self.pyramid_sizes or min(self.pyramid_sizes) < 1:
            raise ConfigError(f'pyramid_sizes must be positive, got {self.pyramid_sizes}')
        if self.aux_weight < 0:
            raise ConfigError(f'aux_weight must be >= 0, got {self.aux_weight}')


@register_backend(
    'ann',
    ANNConfig,
    summary='Asymmetric Non-local Neural Network (AFNB + APNB), Zhu et al., ICCV 2019; RGB only',
)
class ANNNet(SegBackend):
    """The ANN network: dilated ResNet, AFNB(Stage4, Stage5), 3x3 reduce, APNB, classifier."""

    def __init__(self, num_classes: int, config: ANNConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.config = config
        self.output_stride = config.output_stride
        self.pad_multiple = config.output_stride
        self.encoder = build_encoder(config.encoder, output_stride=config.output_stride)
        stage4 = self.encoder.feature_info[-2].channels
        stage5 = self.encoder.feature_info[-1].channels
        self.context = ANNContextHead(
            stage5,
            config.context_channels,
            low_channels=stage4,
            key_channels=config.key_channels,
            value_channels=config.value_channels,
            sizes=config.pyramid_sizes,
            zero_init=config.zero_init,
        )
        self._set_context_dropout(config.dropout)
        self.classifier = nn.Conv2d(config.context_channels, num_classes, 1)
        self.aux_head = nn.Sequential(
            nn.Conv2d(stage4, config.aux_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(config.aux_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(config.dropout),
            nn.Conv2d(config.aux_channels, num_classes, 1),
        )
        self.aux_weights = (float(config.aux_weight),)

    def _set_context_dropout(self, p: float) -> None:
        """Dropout2d of the AFNB and APNB fusion layers (the blocks' own default is 0.05)."""
        for module in self.context.modules():
            if isinstance(module, nn.Dropout2d):
                module.p = p

    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """The one trunk, on colour: a torchvision ResNet file initialises it (the dilation to
        output stride 8 changes no key)."""
        return {'rgb': self.encoder}

    def uses_depth(self) -> bool:
        return False

    def forward_padded(
        self, rgb: Tensor | None, depth: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        del depth  # RGB only
        if rgb is None:
            raise ValueError('ann reads rgb')
        feats: Sequence[Tensor] = self.encoder(rgb)
        stage4, stage5 = feats[-2], feats[-1]
        logits = self.classifier(self.context(stage5, stage4))
        logits = F.interpolate(logits, size=rgb.shape[-2:], mode='bilinear', align_corners=False)
        aux = (self.aux_head(stage4),) if self.training else ()
        return logits, aux


__all__ = ['ANNConfig', 'ANNNet']
