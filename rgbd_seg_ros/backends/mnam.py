"""Multi-modality Non-local Aggregation Module of NANet (Zhang, Xue, Xie, Yang, Wang, "Non-Local
Aggregation for RGB-D Semantic Segmentation", IEEE SPL 28, 2021).

MNAM = Spatial Fusion Module (SFM) then Channel Fusion Module (CFM) (the paper's modules:
doc/backends/nanet.md §2.2, §2.3; as built here: §3.2):

* SFM, per modality m: row and column average strips ``Fv = mean_H(F)`` (C x 1 x W) and
  ``Fh = mean_W(F)`` (C x H x 1), a 1x3 conv on Fv and a 3x1 conv on Fh (+BN, no ReLU), then a
  per-element softmax over the two modalities, ``w_rgb = sigmoid(F_rgb - F_d)``, blending the
  strips; the blended vertical and horizontal strips are broadcast back and summed into
  ``Fs``, which is added to both modalities: ``F'_m = F_m + Fs``. The blend is computed on the
  strips and then broadcast, which equals blending after the paper's "bilinear" expansion
  (expansion from a singleton axis is replication) and needs no Resize op in ONNX.
* CFM: ``g = GAP(cat(F'_rgb, F'_d))`` (2C), ``alpha = sigmoid(phi(g))``, ``beta = sigmoid(rho(g))``
  with two separate fully connected layers 2C -> C (1x1 convs with bias), output
  ``alpha * F'_rgb + beta * F'_d``.

Variants:

* ``lite=False`` -- the literal module: full C -> C strip convs, separate per modality and
  direction (4 per MNAM), and two full 2C -> C FC layers. About 89 M parameters over the four
  ResNet-50 stages (doc/backends/nanet.md §3.5), almost all in stage 4.
* ``lite=True`` -- a package deviation: depthwise strip convs (groups = C) and a reduced CFM
  (one shared 2C -> 2C/r FC + ReLU, then two 2C/r -> C heads; r = ``cfm_reduction``, 16), about
  2.9 M parameters for the four ResNet-50 stages (literal: 89.2 M). Same data flow and shapes.

Departures: the paper gives no layer details; the choices above (BN after the strip convs, no
activation before the softmax, addition for "embed Fs into the raw features", single FC
layers for phi/rho) are this project's readings N5-N9 of doc/backends/nanet.md §3.3.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _strip_conv(channels: int, kernel: tuple[int, int], depthwise: bool, norm: bool) -> nn.Module:
    pad = (kernel[0] // 2, kernel[1] // 2)
    conv = nn.Conv2d(
        channels,
        channels,
        kernel,
        padding=pad,
        groups=channels if depthwise else 1,
        bias=not norm,
    )
    return nn.Sequential(conv, nn.BatchNorm2d(channels)) if norm else conv


class SpatialFusionModule(nn.Module):
    """SFM: ``(F_rgb, F_d) -> (F_rgb + Fs, F_d + Fs, Fs)``."""

    def __init__(self, channels: int, depthwise: bool = False, norm: bool = True) -> None:
        super().__init__()
        self.v_rgb = _strip_conv(channels, (1, 3), depthwise, norm)
        self.v_depth = _strip_conv(channels, (1, 3), depthwise, norm)
        self.h_rgb = _strip_conv(channels, (3, 1), depthwise, norm)
        self.h_depth = _strip_conv(channels, (3, 1), depthwise, norm)

    @staticmethod
    def _blend(a: Tensor, b: Tensor) -> Tensor:
        w = torch.sigmoid(a - b)  # = exp(a) / (exp(a) + exp(b)), per element
        return w * a + (1 - w) * b

    def forward(self, f_rgb: Tensor, f_d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        fv = self._blend(
            self.v_rgb(f_rgb.mean(2, keepdim=True)), self.v_depth(f_d.mean(2, keepdim=True))
        )  # B, C, 1, W
        fh = self._blend(
            self.h_rgb(f_rgb.mean(3, keepdim=True)), self.h_depth(f_d.mean(3, keepdim=True))
        )  # B, C, H, 1
        fs = fv + fh  # broadcast to B, C, H, W
        return f_rgb + fs, f_d + fs, fs


class ChannelFusionModule(nn.Module):
    """CFM: ``alpha(g) * F_rgb + beta(g) * F_d``, ``g = GAP(cat(F_rgb, F_d))``.

    ``reduction=None``: phi, rho = FC(2C -> C) each (paper). ``reduction=r``: a shared
    FC(2C -> 2C/r) + ReLU, then two FC(2C/r -> C) heads.
    """

    def __init__(self, channels: int, reduction: int | None = None) -> None:
        super().__init__()
        both = 2 * channels
        if reduction:
            mid = max(8, both // reduction)
            self.shared: nn.Module = nn.Sequential(nn.Conv2d(both, mid, 1), nn.ReLU(inplace=True))
        else:
            mid = both
            self.shared = nn.Identity()
        self.phi = nn.Conv2d(mid, channels, 1)
        self.rho = nn.Conv2d(mid, channels, 1)

    def weights(self, f_rgb: Tensor, f_d: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, beta), each ``[B, C, 1, 1]`` in (0, 1)."""
        g = self.shared(torch.cat([f_rgb, f_d], 1).mean((2, 3), keepdim=True))
        return torch.sigmoid(self.phi(g)), torch.sigmoid(self.rho(g))

    def forward(self, f_rgb: Tensor, f_d: Tensor) -> Tensor:
        alpha, beta = self.weights(f_rgb, f_d)
        return alpha * f_rgb + beta * f_d


class MNAM(nn.Module):
    """SFM then CFM; ``forward(F_rgb, F_d) -> fused [B, C, H, W]``."""

    def __init__(
        self, channels: int, lite: bool = False, cfm_reduction: int = 16, norm: bool = True
    ) -> None:
        super().__init__()
        self.sfm = SpatialFusionModule(channels, depthwise=lite, norm=norm)
        self.cfm = ChannelFusionModule(channels, cfm_reduction if lite else None)

    def forward(self, f_rgb: Tensor, f_d: Tensor) -> Tensor:
        f_rgb, f_d, _ = self.sfm(f_rgb, f_d)
        return self.cfm(f_rgb, f_d)
