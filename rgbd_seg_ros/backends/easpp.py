"""Efficient atrous spatial pyramid pooling (eASPP) of AdapNet++ (doc/backends/ssma.md §2.3).

Five parallel branches on the encoder's last feature map, every conv followed by BN+ReLU:
a 1x1 conv to ``channels``; three cascaded bottlenecks ``1x1 -> 3x3(r) -> 3x3(r) -> 1x1``
through ``bottleneck`` channels for r in ``rates``; and image pooling (GAP -> 1x1 -> broadcast).
The ``5 * channels`` concatenation is projected back to ``channels`` by a 1x1 conv with BN and
no ReLU. With 2048 input channels, 256/64 channels and rates 3/6/12 the conv weights are
2,039,808 (the paper's 2.04 M).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rgbd_seg_ros.backends.blocks import ConvBNReLU


class EASPP(nn.Module):
    """eASPP; ``pooled_norm=False`` drops the BN of the pooled branch (train at batch 1)."""

    def __init__(
        self,
        in_channels: int,
        channels: int = 256,
        bottleneck: int = 64,
        rates: Sequence[int] = (3, 6, 12),
        pooled_norm: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = channels
        self.conv1x1 = ConvBNReLU(in_channels, channels, 1)
        self.branches = nn.ModuleList(
            nn.Sequential(
                ConvBNReLU(in_channels, bottleneck, 1),
                ConvBNReLU(bottleneck, bottleneck, 3, dilation=int(r)),
                ConvBNReLU(bottleneck, bottleneck, 3, dilation=int(r)),
                ConvBNReLU(bottleneck, channels, 1),
            )
            for r in rates
        )
        self.pool = ConvBNReLU(in_channels, channels, 1, norm=pooled_norm)
        self.project = ConvBNReLU((2 + len(rates)) * channels, channels, 1, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, h, w)
        outs = [self.conv1x1(x), *(branch(x) for branch in self.branches), pooled]
        return self.project(torch.cat(outs, dim=1))
