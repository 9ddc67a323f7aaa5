"""Residual Fusion Block and Gated Fusion Unit of RFBNet (Deng et al., "RFBNet: Deep Multimodal
Networks with Residual Fusion Blocks for RGB-D Semantic Segmentation", 2019).

An RFB pairs one RGB residual unit with one depth residual unit (both at their usual place in
their encoders, so their weights and state-dict keys stay those of the unimodal networks) and a
:class:`GatedFusionUnit` that reads both, updates the interaction stream and returns one
complementary feature per modality (paper eqs. 1-3)::

    (x_Rcom, x_RD', x_Dcom) = GFU(x_R, x_RD, x_D)
    x_R' = x_R + F_R(x_R + x_Rcom)        # point "R" (the paper's choice)
    x_R' = x_R + x_Rcom + F_R(x_R)        # point "T" (ablation)

The depth stream runs at half the RGB resolution; the interaction stream has the depth stream's
resolution and half the GFU width. GFU layout (doc/backends/rfbnet.md §3.2; the paper fixes the
gate subnet conv->ReLU->conv->sigmoid, the shared first conv of the input gates, the 1x1 fusion
conv, the addition to x_RD and the depthwise-separable "Sconv"; everything else is this project's
reading)::

    r      = AvgPool(x_R) to the depth size
    h_in   = ReLU(Conv3x3([r, x_D, x_RD] -> C/4))                         shared by both
    g_Rin  = sigmoid(Conv1x1(h_in -> 1));  g_Din = sigmoid(Conv1x1(h_in -> 1))
    m      = BN(Conv1x1([g_Rin * r, g_Din * x_D] -> C/2))
    x_RD'  = Sconv(x_RD + m)       DW3x3-BN-ReLU-PW1x1-BN-ReLU
    g_Rout = sigmoid(Conv1x1(ReLU(Conv3x3([x_RD', r] -> C/4)) -> 1))     not shared
    g_Dout = sigmoid(Conv1x1(ReLU(Conv3x3([x_RD', x_D] -> C/4)) -> 1))
    x_Dcom = g_Dout * BN0(Conv1x1(x_RD' -> C_D))
    x_Rcom = Up2x(g_Rout * BN0(Conv1x1(x_RD' -> C_R)))                    bilinear

``BN0`` has its scale initialised to zero, so a fresh RFB computes exactly its unimodal units:
the network can start from two unimodal checkpoints (the paper's staged training). With
``gates=False`` every gate is the constant 1 (ablation "G" off) and the gate subnets are not
built; with ``point='none'`` no complementary feature is produced (aggregation only).

Which feature the GFU reads (paper, section IV-B): for a bottleneck unit the output of its first
1x1 conv, and the complementary feature is added to the input of its 3x3 conv; for ERFNet's
non-bottleneck-1D and ResNet basic units the unit input, added to the input of the residual
function. For the pre-activation bottleneck the "output of the first 1x1 layer" is taken after
the BN+ReLU that precedes the 3x3 conv (the 3x3's actual input), a choice the paper leaves
open. Point T on a bottleneck projects the complement to the unit's output width instead and
average-pools it when the unit strides (the paper ablates T on ERFNet only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.erfnet import NonBottleneck1D
from rgbd_seg_ros.backends.preact_resnet import PreActBottleneck
from rgbd_seg_ros.backends.resnet import BasicBlock, Bottleneck

POINTS = ('R', 'T', 'none')


def _resize_pool(x: Tensor, like: Tensor) -> Tensor:
    """Average-pool ``x`` by the integer factor that brings it to ``like``'s spatial size."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])  # Python ints: static kernel sizes in ONNX
    lh, lw = int(like.shape[-2]), int(like.shape[-1])
    fh, fw = h // lh, w // lw
    if fh < 1 or fw < 1 or fh * lh != h or fw * lw != w:
        raise ValueError(f'cannot pool {tuple(x.shape[-2:])} to {tuple(like.shape[-2:])}')
    return F.avg_pool2d(x, (fh, fw), (fh, fw))


def _gate_subnet(cin: int, mid: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1), nn.ReLU(inplace=True))


def _zero_bn_projection(cin: int, cout: int) -> nn.Sequential:
    bn = nn.BatchNorm2d(cout)
    nn.init.zeros_(bn.weight)
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), bn)


class GatedFusionUnit(nn.Module):
    """GFU of one RFB. ``channels`` is C (the width the GFU reads in both modalities)."""

    def __init__(
        self,
        channels: int,
        rgb_com_channels: int | None = None,
        depth_com_channels: int | None = None,
        interaction_channels: int | None = None,
        gates: bool = True,
        point: str = 'R',
    ) -> None:
        super().__init__()
        if point not in POINTS:
            raise ValueError(f'point must be one of {POINTS}, got {point!r}')
        c = channels
        c_rd = interaction_channels or max(1, c // 2)
        c_gate = max(1, c // 4)
        self.channels = c
        self.interaction_channels = c_rd
        self.gates = gates
        self.point = point
        if gates:
            self.gate_in = _gate_subnet(2 * c + c_rd, c_gate)
            self.gate_rgb_in = nn.Conv2d(c_gate, 1, 1)
            self.gate_depth_in = nn.Conv2d(c_gate, 1, 1)
        self.mix = nn.Sequential(nn.Conv2d(2 * c, c_rd, 1, bias=False), nn.BatchNorm2d(c_rd))
        self.sconv = nn.Sequential(
            nn.Conv2d(c_rd, c_rd, 3, padding=1, groups=c_rd, bias=False),
            nn.BatchNorm2d(c_rd),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_rd, c_rd, 1, bias=False),
            nn.BatchNorm2d(c_rd),
            nn.ReLU(inplace=True),
        )
        if point != 'none':
            if gates:
                self.gate_rgb_out = nn.Sequential(
                    _gate_subnet(c_rd + c, c_gate), nn.Conv2d(c_gate, 1, 1)
                )
                self.gate_depth_out = nn.Sequential(
                    _gate_subnet(c_rd + c, c_gate), nn.Conv2d(c_gate, 1, 1)
                )
            self.com_rgb = _zero_bn_projection(c_rd, rgb_com_channels or c)
            self.com_depth = _zero_bn_projection(c_rd, depth_com_channels or c)

    def unit_complement_gains(self) -> None:
        """Start the complementary projections' BN scales at one instead of zero (the
        ``rfb_zero_init=False`` ablation): the RFB then feeds back from the first step."""
        for projection in (self.com_rgb, self.com_depth):
            norm = projection[1]
            assert isinstance(norm, nn.BatchNorm2d)  # _zero_bn_projection: conv, then BN
            nn.init.ones_(norm.weight)

    def forward(
        self, x_r: Tensor, x_rd: Tensor | None, x_d: Tensor
    ) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """``x_r [B,C,H,W]``, ``x_rd [B,C/2,h,w]`` or None (zero), ``x_d [B,C,h,w]`` ->
        ``(x_Rcom at H,W or None, x_RD', x_Dcom at h,w or None)``."""
        r = _resize_pool(x_r, x_d)
        if x_rd is None:
            x_rd = torch.zeros_like(x_d[:, : self.interaction_channels])
        if self.gates:
            h = self.gate_in(torch.cat([r, x_d, x_rd], 1))
            m = self.mix(
                torch.cat(
                    [
                        torch.sigmoid(self.gate_rgb_in(h)) * r,
                        torch.sigmoid(self.gate_depth_in(h)) * x_d,
                    ],
                    1,
                )
            )
        else:
            m = self.mix(torch.cat([r, x_d], 1))
        x_rd = self.sconv(x_rd + m)
        if self.point == 'none':
            return None, x_rd, None
        com_r = self.com_rgb(x_rd)
        com_d = self.com_depth(x_rd)
        if self.gates:
            com_r = com_r * torch.sigmoid(self.gate_rgb_out(torch.cat([x_rd, r], 1)))
            com_d = com_d * torch.sigmoid(self.gate_depth_out(torch.cat([x_rd, x_d], 1)))
        com_r = F.interpolate(com_r, size=x_r.shape[-2:], mode='bilinear', align_corners=False)
        return com_r, x_rd, com_d


# --------------------------------------------------------------------------------------------
# Residual-unit adapters: split a unit into "what the GFU reads" and "the rest", so the same
# unit object (with its unimodal weights) runs either plainly or inside an RFB.
# --------------------------------------------------------------------------------------------

Finish = Callable[[Tensor | None, str], Tensor]


def unit_widths(unit: nn.Module) -> tuple[int, int]:
    """(width the GFU reads, output width of the unit) for a supported residual unit."""
    if isinstance(unit, NonBottleneck1D):
        return unit.channels, unit.channels
    if isinstance(unit, (Bottleneck, PreActBottleneck)):
        return unit.conv1.out_channels, unit.conv3.out_channels
    if isinstance(unit, BasicBlock):
        return unit.conv1.in_channels, unit.conv2.out_channels
    raise TypeError(f'RFBs do not support {type(unit).__name__} units')


def split_unit(unit: nn.Module, x: Tensor) -> tuple[Tensor, Finish]:
    """Return ``(feature the GFU reads, finish(com, point) -> unit output)`` for ``unit(x)``.

    ``finish(None, ...)`` equals ``unit(x)`` exactly.
    """
    if isinstance(unit, NonBottleneck1D):

        def finish_nb(com: Tensor | None, point: str) -> Tensor:
            if com is None:
                return unit(x)
            if point == 'T':
                return F.relu(x + com + unit.residual(x))
            return F.relu(x + unit.residual(x + com))

        return x, finish_nb

    if isinstance(unit, BasicBlock):
        identity = x if unit.downsample is None else unit.downsample(x)

        def finish_basic(com: Tensor | None, point: str) -> Tensor:
            inp = x + com if (com is not None and point == 'R') else x
            y = unit.relu(unit.bn1(unit.conv1(inp)))
            y = unit.dropout(unit.bn2(unit.conv2(y)))
            if com is not None and point == 'T':
                y = y + _resize_pool(com, y)
            return unit.relu(y + identity)

        return x, finish_basic

    if isinstance(unit, Bottleneck):
        identity = x if unit.downsample is None else unit.downsample(x)
        a = unit.relu(unit.bn1(unit.conv1(x)))

        def finish_bottleneck(com: Tensor | None, point: str) -> Tensor:
            inp = a + com if (com is not None and point == 'R') else a
            y = unit.relu(unit.bn2(unit.conv2(inp)))
            y = unit.dropout(unit.bn3(unit.conv3(y)))
            if com is not None and point == 'T':
                y = y + _resize_pool(com, y)
            return unit.relu(y + identity)

        return a, finish_bottleneck

    if isinstance(unit, PreActBottleneck):
        if unit.norm1 is None:
            x_pre = x
            shortcut = unit.downsample(x) if unit.downsample is not None else x
        else:
            x_pre = F.relu(unit.norm1(x))
            shortcut = x
        a = F.relu(unit.norm2(unit.conv1(x_pre)))

        def finish_preact(com: Tensor | None, point: str) -> Tensor:
            inp = a + com if (com is not None and point == 'R') else a
            y = unit.conv3(F.relu(unit.norm3(unit.conv2(inp))))
            y = unit.dropout(y)
            if com is not None and point == 'T':
                y = y + _resize_pool(com, y)
            return y + shortcut

        return a, finish_preact

    raise TypeError(f'RFBs do not support {type(unit).__name__} units')


class ResidualFusionBlock(nn.Module):
    """The GFU of one RFB plus the interaction-stream transition into it.

    The two residual units stay in their encoders; ``forward(unit_rgb, unit_depth, x_r, x_d,
    x_rd)`` runs them fused and returns ``(x_r', x_d', x_rd')``. ``interaction_in`` is the
    width of the incoming interaction stream (None for the first RFB, whose state is zero);
    when it differs from this block's, a 1x1 conv + BN adapts it (and it is average-pooled
    when the depth resolution has halved).
    """

    def __init__(
        self,
        rgb_unit: nn.Module,
        depth_unit: nn.Module,
        interaction_in: int | None,
        gates: bool = True,
        point: str = 'R',
    ) -> None:
        super().__init__()
        c, out_r = unit_widths(rgb_unit)
        c_d, out_d = unit_widths(depth_unit)
        if c != c_d:
            raise ValueError(f'RGB and depth units read different widths ({c} vs {c_d})')
        self.point = point
        c_rd = max(1, c // 2)
        self.gfu = GatedFusionUnit(
            c,
            rgb_com_channels=out_r if point == 'T' else c,
            depth_com_channels=out_d if point == 'T' else c,
            interaction_channels=c_rd,
            gates=gates,
            point=point,
        )
        self.transition = (
            nn.Sequential(nn.Conv2d(interaction_in, c_rd, 1, bias=False), nn.BatchNorm2d(c_rd))
            if interaction_in is not None and interaction_in != c_rd
            else None
        )
        self.interaction_channels = c_rd

    def forward(
        self,
        unit_rgb: nn.Module,
        unit_depth: nn.Module,
        x_r: Tensor,
        x_d: Tensor,
        x_rd: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        feat_r, finish_r = split_unit(unit_rgb, x_r)
        feat_d, finish_d = split_unit(unit_depth, x_d)
        if x_rd is not None:
            if self.transition is not None:
                x_rd = self.transition(x_rd)
            x_rd = _resize_pool(x_rd, feat_d)
        com_r, x_rd, com_d = self.gfu(feat_r, x_rd, feat_d)
        return finish_r(com_r, self.point), finish_d(com_d, self.point), x_rd
