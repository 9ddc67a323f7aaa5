"""ResNet v1 encoders (18/34/50/101) with torchvision's state-dict key names.

Module names follow torchvision's ``ResNet`` exactly (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0`` ...; the stride of a bottleneck sits on its 3x3 conv, "v1.5"), and
there is no ``fc``, so ``state_dict()`` is torchvision's minus ``fc.weight``/``fc.bias``. A
multiscale unit keeps the key of the conv it replaces (the bottleneck's ``conv2``, the basic
block's ``conv1``), with the same weight shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from torch import Tensor, nn

from rgbd_seg_ros.backends.blocks import conv3x3
from rgbd_seg_ros.backends.encoder_base import BlockPlan, Encoder, FeatureInfo, plan_stages


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); the first carries stride, dilation or multiscale rates."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, plan: BlockPlan, dilation: int) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = conv3x3(in_channels, width, plan.stride, plan.dilation, plan.rates)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, out, 1, dilation)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = (
            _downsample(in_channels, out, plan.stride)
            if plan.stride != 1 or in_channels != out
            else None
        )
        self.dropout: nn.Module = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.dropout(self.bn2(self.conv2(y)))
        return self.relu(y + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation or multiscale) -> 1x1 (x4) bottleneck (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, plan: BlockPlan, dilation: int) -> None:
        super().__init__()
        del dilation
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, plan.stride, plan.dilation, plan.rates)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            _downsample(in_channels, out, plan.stride)
            if plan.stride != 1 or in_channels != out
            else None
        )
        self.dropout: nn.Module = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.dropout(self.bn3(self.conv3(y)))
        return self.relu(y + identity)


class ResNet(Encoder):
    """ResNet v1 feature extractor; features: stem (stride 2), layer1..layer4."""

    weight_files: ClassVar[str] = (
        "torchvision's ResNet state dict of the same depth (resnet18/34/50/101 .pth, or the "
        'same tensors as .safetensors); timm ResNet v1 files use the same names'
    )
    # registered by name (add_module) to keep torchvision's keys
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        *,
        output_stride: int = 32,
        in_channels: int = 3,
        multiscale: object = None,
        last_dropout: float = 0.0,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        block_cls = BasicBlock if block == 'basic' else Bottleneck
        self.in_channels = in_channels
        self.output_stride = output_stride
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        plans, strides = plan_stages(layers, output_stride, multiscale)
        self.feature_info = [FeatureInfo(base_width, 2, 'stem')]
        channels = base_width
        widths = tuple(base_width * m for m in (1, 2, 4, 8))
        for s, (stage_plan, width) in enumerate(zip(plans, widths, strict=True)):
            stage_dilation = stage_plan[-1].dilation
            blocks = []
            for plan in stage_plan:
                blocks.append(block_cls(channels, width, plan, stage_dilation))
                channels = width * block_cls.expansion
            self.add_module(f'layer{s + 1}', nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(channels, strides[s], f'layer{s + 1}'))
        if last_dropout > 0:  # blocks: the units of layer4
            blocks[-1].dropout = nn.Dropout(last_dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def imagenet_state(self, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
        """torchvision's key names are this module's own: nothing to rename."""
        return dict(state), 'torchvision'

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        feats = [x]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats
