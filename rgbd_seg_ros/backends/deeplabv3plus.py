"""DeepLab V3+ head (Chen et al., ECCV 2018) used by NANet: ASPP on the deep feature and a
decoder with one low-level skip.

ASPP: 1x1 conv, three 3x3 atrous convs (rates 6/12/18 at output stride 16), image pooling
(GAP -> 1x1 -> broadcast), each to ``channels`` with BN + ReLU; concatenation -> 1x1 conv +
BN + ReLU + dropout. Decoder: the ASPP output upsampled (bilinear) to the low-level feature's
size, concatenated with the low-level feature reduced to 48 channels (1x1 + BN + ReLU), two
3x3 convs of ``channels`` (BN + ReLU), 1x1 conv to the classes. The caller upsamples the
logits to the input size.

Deviation: ``pooled_norm=False`` drops the BN of the image-pooling branch (a BN on a 1x1 map
cannot train at batch 1); the ASPP dropout is 0.1 (torchvision uses 0.5; the NANet paper does
not give DeepLab V3+'s setting, doc/backends/nanet.md §3.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _cbr(cin: int, cout: int, k: int = 1, dilation: int = 1, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=not norm)
    ]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLab V3."""

    def __init__(
        self,
        in_channels: int,
        channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        dropout: float = 0.1,
        pooled_norm: bool = True,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_cbr(in_channels, channels, 1)] + [_cbr(in_channels, channels, 3, r) for r in rates]
        )
        self.pool = _cbr(in_channels, channels, 1, norm=pooled_norm)
        self.project = nn.Sequential(
            _cbr((len(rates) + 2) * channels, channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pooled = self.pool(x.mean((2, 3), keepdim=True)).expand(-1, -1, h, w)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class DeepLabV3PlusHead(nn.Module):
    """``forward(low, high) -> logits`` at ``low``'s resolution."""

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        num_classes: int,
        channels: int = 256,
        low_reduced: int = 48,
        rates: Sequence[int] = (6, 12, 18),
        pooled_norm: bool = True,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(high_channels, channels, rates, pooled_norm=pooled_norm)
        self.reduce = _cbr(low_channels, low_reduced, 1)
        self.fuse = nn.Sequential(
            _cbr(channels + low_reduced, channels, 3), _cbr(channels, channels, 3)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        x = F.interpolate(
            self.aspp(high), size=low.shape[-2:], mode='bilinear', align_corners=False
        )
        return self.classifier(self.fuse(torch.cat([x, self.reduce(low)], 1)))
