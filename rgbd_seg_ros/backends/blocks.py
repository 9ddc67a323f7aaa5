"""Small building blocks shared by the encoders and the AdapNet++/SSMA heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiScaleConv2d(nn.Module):
    """AdapNet++'s multiscale 3x3: two parallel atrous convs, each emitting half the channels.

    Both branches read all input channels; the first half of the output channels uses dilation
    ``rates[0]``, the second half ``rates[1]``, and the halves are concatenated. The weight is
    stored as ONE tensor of the plain conv's shape ``[out, in, 3, 3]`` (the state-dict key is
    ``weight`` as for ``nn.Conv2d``), so ImageNet weights of a plain 3x3 load unchanged and are
    split along the output dimension, first half -> r1, second half -> r2, as the reference code
    does (doc/backends/ssma.md §2.2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: tuple[int, int],
        stride: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f'multiscale conv needs an even channel count, got {out_channels}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.rates = (int(rates[0]), int(rates[1]))
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode='fan_out', nonlinearity='relu')

    def forward(self, x: Tensor) -> Tensor:
        half = self.out_channels // 2
        b1 = b2 = None
        if self.bias is not None:
            b1, b2 = self.bias[:half], self.bias[half:]
        r1, r2 = self.rates
        y1 = F.conv2d(x, self.weight[:half], b1, self.stride, r1, r1)
        y2 = F.conv2d(x, self.weight[half:], b2, self.stride, r2, r2)
        return torch.cat((y1, y2), dim=1)

    def extra_repr(self) -> str:
        return (
            f'{self.in_channels}, {self.out_channels}, kernel_size=3, rates={self.rates}, '
            f'stride={self.stride}, bias={self.bias is not None}'
        )


def conv3x3(
    in_channels: int,
    out_channels: int,
    stride: int = 1,
    dilation: int = 1,
    rates: tuple[int, int] | None = None,
) -> nn.Conv2d | MultiScaleConv2d:
    """A bias-free 3x3 conv with ``padding = dilation``; multiscale when ``rates`` is given."""
    if rates is not None:
        return MultiScaleConv2d(in_channels, out_channels, rates, stride=stride)
    return nn.Conv2d(
        in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False
    )


class ConvBNReLU(nn.Sequential):
    """conv (no bias) -> BN -> optional ReLU; keys ``conv``, ``bn``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        dilation: int = 1,
        relu: bool = True,
        norm: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: dict[str, nn.Module] = {
            'conv': nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=padding,
                dilation=dilation,
                bias=not norm,
            )
        }
        if norm:
            layers['bn'] = nn.BatchNorm2d(out_channels)
        if relu:
            layers['relu'] = nn.ReLU(inplace=True)
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)


def upsample_layer(in_channels: int, out_channels: int, factor: int) -> nn.Module:
    """Learned exact upsampling: ``ConvTranspose2d(k=2f, s=f, p=f/2)``; a 3x3 conv for f=1.

    ``k=4,s=2,p=1`` gives an exact x2 and ``k=8,s=4,p=2`` an exact x4 (doc/backends/ssma.md §2.4).
    """
    if factor == 1:
        return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    if factor < 1 or factor & (factor - 1):
        raise ValueError(f'upsampling factor must be a power of two, got {factor}')
    return nn.ConvTranspose2d(
        in_channels, out_channels, 2 * factor, stride=factor, padding=factor // 2, bias=False
    )


class DeconvBN(nn.Sequential):
    """Learned upsampling followed by BN, no ReLU (AdapNet++ decoder); keys ``deconv``, ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        self.add_module('deconv', upsample_layer(in_channels, out_channels, factor))
        self.add_module('bn', nn.BatchNorm2d(out_channels))


class SSMABlock(nn.Module):
    """Self-supervised model adaptation fusion of two C-channel maps (paper Eq. 10-12).

    ``s = sigmoid(W2 * ReLU(W1 * [Xa, Xb]))`` with 3x3 convs (bias, no BN) through a
    ``2C/eta`` bottleneck; ``f = BN(W3 * (s * [Xa, Xb]))`` with W3 ``2C -> C``. ``eta`` divides
    the concatenated width 2C (the reference's 512->32 and 48->8). ``gating='softmax'`` is the
    paper's "dependent" variant (softmax over the two modalities per channel and pixel).
    """

    def __init__(
        self,
        channels: int,
        eta: int,
        fusion_kernel: int = 3,
        fusion_bn: bool = True,
        gating: str = 'sigmoid',
    ) -> None:
        super().__init__()
        if gating not in ('sigmoid', 'softmax'):
            raise ValueError(f"gating must be 'sigmoid' or 'softmax', got {gating!r}")
        if fusion_kernel not in (1, 3):
            raise ValueError(f'fusion_kernel must be 1 or 3, got {fusion_kernel}')
        both = 2 * channels
        mid = max(1, both // eta)
        self.channels = channels
        self.gating = gating
        self.reduce = nn.Conv2d(both, mid, 3, padding=1, bias=True)
        self.expand = nn.Conv2d(mid, both, 3, padding=1, bias=True)
        self.fuse = nn.Conv2d(
            both, channels, fusion_kernel, padding=fusion_kernel // 2, bias=not fusion_bn
        )
        self.bn = nn.BatchNorm2d(channels) if fusion_bn else nn.Identity()

    def _gates(self, x: Tensor) -> Tensor:
        g = self.expand(F.relu(self.reduce(x)))
        if self.gating == 'sigmoid':
            return torch.sigmoid(g)
        b, _, h, w = g.shape
        return torch.softmax(g.view(b, 2, self.channels, h, w), dim=1).view(b, -1, h, w)

    def gates(self, xa: Tensor, xb: Tensor) -> Tensor:
        """The per-channel, per-pixel weights s in [0, 1] for the concatenation [xa, xb]."""
        return self._gates(torch.cat((xa, xb), dim=1))

    def forward(self, xa: Tensor, xb: Tensor) -> Tensor:
        x = torch.cat((xa, xb), dim=1)
        return self.bn(self.fuse(self._gates(x) * x))


class SkipAttention(nn.Module):
    """SSMA decoder's channel aggregation (Eq. 13-15): scale a skip by decoder statistics.

    ``z = act(BN(W4 * GAP(D)))`` with W4 a 1x1 conv ``C_D -> C_skip``; returns ``z * skip``.
    The paper and reference use ReLU (unbounded, not a sigmoid gate). ``norm=False`` swaps the
    BN (which needs batch > 1 in training on a 1x1 map) for a conv bias.
    """

    def __init__(
        self,
        decoder_channels: int,
        skip_channels: int,
        activation: str = 'relu',
        norm: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ('relu', 'sigmoid'):
            raise ValueError(f"activation must be 'relu' or 'sigmoid', got {activation!r}")
        self.conv = nn.Conv2d(decoder_channels, skip_channels, 1, bias=not norm)
        self.bn = nn.BatchNorm2d(skip_channels) if norm else nn.Identity()
        self.activation = activation

    def forward(self, decoder: Tensor, skip: Tensor) -> Tensor:
        z = self.bn(self.conv(decoder.mean(dim=(2, 3), keepdim=True)))
        z = torch.relu(z) if self.activation == 'relu' else torch.sigmoid(z)
        return skip * z
