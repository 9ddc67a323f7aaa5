"""Full pre-activation ResNet (v2) encoder of AdapNet++ (doc/backends/ssma.md §2.1, §5.12).

A pre-activation bottleneck unit computes
``y = x + conv3(ReLU(BN(conv2(ReLU(BN(conv1(ReLU(BN(x)))))))))`` with no BN after conv3; the
stride sits on the 3x3 conv and a stage's first unit projects its shortcut (1x1, same stride)
from the *pre-activated* input. The residual stream itself is never normalised, so every stage
ends with an explicit BN+ReLU (``stages.<s>.norm``): its output is the feature returned for that
stage (what AdapNet++'s skips and eASPP read) AND the pre-activation of the next stage's first
unit, which therefore has no ``norm1`` of its own. The stem is conv7x7/2 -> BN -> ReLU ->
maxpool; its BN is the first unit's pre-activation.

Key layout (``stem.conv``, ``stem.norm``, ``stages.<s>.blocks.<b>.{norm1,conv1,norm2,conv2,
norm3,conv3,downsample.conv}``, ``stages.<s>.norm``) mirrors timm's ``ResNetV2`` so that
a timm ``resnetv2_50`` file loads by renaming the three kinds of pre-activation norms (timm
keeps them at the start of the next unit and a final ``norm``; see
:meth:`PreActResNet.imagenet_state`).
One order differs from timm: timm max-pools the raw stem conv and pre-activates after the pool,
the reference AdapNet++ code (and this module) applies BN+ReLU before the pool. Both are the
same function while the BN scales are positive; for channels with a negative scale the
difference is absorbed when fine-tuning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.blocks import conv3x3
from rgbd_seg_ros.backends.encoder_base import BlockPlan, Encoder, FeatureInfo, plan_stages


class Downsample(nn.Module):
    """1x1 projection of a stage's first unit (reads the pre-activated input); key ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck; ``first=True`` means the input is already BN+ReLU'd."""

    def __init__(self, in_channels: int, out_channels: int, plan: BlockPlan, first: bool) -> None:
        super().__init__()
        mid = out_channels // 4
        self.first = first
        self.norm1 = None if first else nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = conv3x3(mid, mid, plan.stride, plan.dilation, plan.rates)
        self.norm3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        needs_projection = first or plan.stride != 1 or in_channels != out_channels
        self.downsample = (
            Downsample(in_channels, out_channels, plan.stride) if needs_projection else None
        )
        if self.downsample is not None and not first:
            raise ValueError('only the first unit of a stage may change shape')
        self.dropout: nn.Module = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.norm1 is None:
            x_pre = x
            shortcut = self.downsample(x) if self.downsample is not None else x
        else:
            x_pre = F.relu(self.norm1(x))
            shortcut = x
        y = self.conv1(x_pre)
        y = self.conv2(F.relu(self.norm2(y)))
        y = self.conv3(F.relu(self.norm3(y)))
        return self.dropout(y) + shortcut


class PreActStage(nn.Module):
    """Units of one stage plus its exit BN (+ReLU in forward)."""

    def __init__(self, in_channels: int, out_channels: int, plans: Sequence[BlockPlan]) -> None:
        super().__init__()
        units = []
        channels = in_channels
        for b, plan in enumerate(plans):
            units.append(PreActBottleneck(channels, out_channels, plan, first=b == 0))
            channels = out_channels
        self.blocks = nn.Sequential(*units)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.blocks(x)))


class PreActStem(nn.Module):
    """conv7x7/2 -> BN -> ReLU -> maxpool 3x3/2; keys ``conv``, ``norm``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.norm = nn.BatchNorm2d(64)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


_TIMM_UNIT_NORM = re.compile(r'^stages\.(\d+)\.blocks\.0\.norm1\.(.+)$')


def timm_to_native(state: Mapping[str, Tensor], num_stages: int) -> dict[str, Tensor]:
    """timm ``ResNetV2`` keys -> this module's: a stage's first pre-activation norm
    (``stages.<s>.blocks.0.norm1``) is the previous stage's exit norm (the stem's for stage 0),
    and timm's final ``norm`` is the last stage's exit norm. Every other key is shared."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new_key = key
        m = _TIMM_UNIT_NORM.match(key)
        if m:
            s, rest = int(m.group(1)), m.group(2)
            new_key = f'stem.norm.{rest}' if s == 0 else f'stages.{s - 1}.norm.{rest}'
        elif key.startswith('norm.'):
            new_key = f'stages.{num_stages - 1}.{key}'
        out[new_key] = value
    return out


class PreActResNet(Encoder):
    """Pre-activation ResNet feature extractor; features: stem, res2, res3, res4, res5."""

    weight_files: ClassVar[str] = (
        "timm's resnetv2_50 / resnetv2_101 state dict (the BatchNorm models, e.g. "
        'resnetv2_50.a1h_in1k; not the GroupNorm BiT ones), .pth/.bin or .safetensors'
    )

    def __init__(
        self,
        layers: Sequence[int],
        *,
        output_stride: int = 16,
        in_channels: int = 3,
        multiscale: object = None,
        last_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.output_stride = output_stride
        self.stem = PreActStem(in_channels)
        plans, strides = plan_stages(layers, output_stride, multiscale)
        self.feature_info = [FeatureInfo(64, 2, 'stem')]
        stages = []
        channels = 64
        for s, (stage_plans, out) in enumerate(zip(plans, (256, 512, 1024, 2048), strict=True)):
            stages.append(PreActStage(channels, out, stage_plans))
            channels = out
            self.feature_info.append(FeatureInfo(out, strides[s], f'res{s + 2}'))
        self.stages = nn.Sequential(*stages)
        if last_dropout > 0:
            stages[-1].blocks[-1].dropout = nn.Dropout(last_dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def imagenet_state(self, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
        """A timm file (recognised by its first unit's ``norm1``) is renamed; a file saved
        from this module is taken as it is."""
        if 'stem.norm.weight' not in state and any(
            k.startswith('stages.0.blocks.0.norm1.') for k in state
        ):
            return timm_to_native(state, len(self.stages)), 'timm-resnetv2'
        return dict(state), 'native'

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats = [x]
        x = F.max_pool2d(x, 3, 2, 1)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats
