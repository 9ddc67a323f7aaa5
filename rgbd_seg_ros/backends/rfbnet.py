"""RFBNet (Deng, Li, Wang, Chen, Liu, 2019): bottom-up interactive RGB-D fusion with Residual
Fusion Blocks (see :mod:`rgbd_seg_ros.backends.rfb`) in the SSMA framework, as the ``rfbnet``
backend. Two base networks, chosen by ``encoder``:

* **AdapNet++** (``encoder='preact_resnet50'``, the default; any package ResNet works, e.g.
  ``resnet18`` for CPU tests): two AdapNet++ experts (input BN, encoder, eASPP, the two
  24-channel skip convs; the same modules and keys as the ``ssma`` backend) whose paired
  residual units from the first unit at 1/8 on (block2's second unit through block4;
  ``rfb_stages='res3'`` keeps block2 only) run as RFBs. The eASPP outputs of both streams and
  the interaction stream are merged by a three-input SSMA block (eta = 16) into 256 channels;
  the skips are SSMA-fused as in SSMA, and the AdapNet++ decoder with skip attention follows
  (auxiliary heads 0.6/0.5). Output stride 16.
* **ERFNetEnc** (``encoder='erfnet'``): two ERFNet encoders; the 8 paired non-bottleneck-1D
  units at 1/8 are RFBs; the RGB, depth and interaction streams are merged by the three-input
  SSMA block into 128 channels, then a 1x1 conv to the classes and x8 bilinear upsampling.
  Output stride 8.

The depth image enters at half resolution (2x2 average pooling inside the network, so callers
pass full-size depth like for every backend); the depth and interaction streams are upsampled
(bilinear) to the RGB size before the merge.

Staged training: :meth:`RFBNet.init_from_unimodal` loads two unimodal models (``adapnetpp``
checkpoints with ``modality`` rgb / depth for the AdapNet++ base, ``erfnet_enc`` ones for the
ERFNet base). Because the complementary projections end in a zero-initialised BN scale, the
freshly initialised RFBNet encoders compute exactly the unimodal encoders (the depth one on
half-size input).

Departures from the paper (which gives no code, sizes or formulas beyond eqs. 1-3):

* GFU internals (kernel sizes, widths, BN placement, gate inputs, Sconv layout, the
  complement projections and their zero-init) are this project's reading
  (doc/backends/rfbnet.md §3.2); see :mod:`rgbd_seg_ros.backends.rfb`.
* Merge ``F`` of three streams: upsample, concatenate, one SSMA block (doc/backends/rfbnet.md
  §3.4); the paper only says "SSMA block".
* Interaction stream across stage changes: 1x1 conv + BN to the new width, 2x2 average pooling
  when the depth resolution halves (doc/backends/rfbnet.md §3.3).
* The depth stream's skips (AdapNet++ base) are upsampled x2 before the skip SSMA blocks.
* Depth shrinking uses 2x2 average pooling (the paper resizes HHA; with metric depth and
  holes, averaging mixes holes in; pre-fill holes if that matters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.adapnetpp import (
    AdapNetppDecoder,
    AdapNetppExpert,
    check_adapnetpp_fields,
)
from rgbd_seg_ros.backends.base import SegBackend, init_weights, set_bn_momentum
from rgbd_seg_ros.backends.blocks import SSMABlock
from rgbd_seg_ros.backends.checkpoint import state_dict_from
from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.backends.erfnet import ERFNetEncoder
from rgbd_seg_ros.backends.preact_resnet import PreActResNet
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.backends.resnet import ResNet
from rgbd_seg_ros.backends.rfb import POINTS, ResidualFusionBlock
from rgbd_seg_ros.errors import CheckpointError, ConfigError
from rgbd_seg_ros.modes import EncoderStream


class MultiSSMABlock(nn.Module):
    """SSMA block over any number of inputs: ``BN(W3 * (sigmoid(W2*ReLU(W1*X)) * X))``, X their
    concatenation (3x3 convs with bias through ``sum/eta`` channels; 1x1 fusion to ``out``)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, eta: int = 16) -> None:
        super().__init__()
        both = int(sum(in_channels))
        mid = max(1, both // eta)
        self.reduce = nn.Conv2d(both, mid, 3, padding=1)
        self.expand = nn.Conv2d(mid, both, 3, padding=1)
        self.fuse = nn.Conv2d(both, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, *xs: Tensor) -> Tensor:
        x = torch.cat(xs, 1)
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(x))))
        return self.bn(self.fuse(gate * x))


@dataclass
class RFBNetConfig:
    """Options of the ``rfbnet`` backend, residual fusion blocks and an interaction stream on
    SSMA (Deng et al., 2019). The defaults are RFBNet(AdapNet++): 74.7 M parameters with 20
    classes and 3-channel depth (the paper gives no count). ``encoder='erfnet'`` gives
    RFBNet(ERFNetEnc), the paper's fast variant (5.8 M). The options from ``output_stride`` on
    mean what they mean in ``ssma`` and apply to the AdapNet++ base only."""

    encoder: str = 'preact_resnet50'
    """erfnet for RFBNet(ERFNetEnc), or any name of ``encoders.list_encoders()`` for the
    AdapNet++ base."""
    depth_channels: int = 1
    """Channels of the depth tensor: 1 for metric depth, 3 for jet or HHA (the paper's)."""
    rfb_gates: bool = True
    """The gates of the gated fusion units; False fixes every gate to 1 (ablation "G")."""
    rfb_point: str = 'R'
    """Where the complement enters each unit: R (its residual branch, the paper) | T (the
    trunk) | none (the interaction stream only aggregates)."""
    rfb_stages: str = 'all'
    """all: every unit from the first at 1/8 on | res3: block2 only."""
    rfb_zero_init: bool = True
    """Zero BN scale on the complement projections, so a fresh RFBNet starts as the two
    unimodal networks."""
    depth_shrink: bool = True
    """Run the depth stream at half resolution (the paper)."""
    merge_eta: int = 16
    """Bottleneck (sum / eta) of the SSMA block merging the three streams."""
    output_stride: int = 16
    """8 | 16 | 32."""
    multiscale: Any = 'paper'
    """Rates of the multiscale residual units: paper | code | none | 4 per-stage lists."""
    input_norm: bool = True
    """Learnable BatchNorm on each expert's raw input."""
    easpp_channels: int = 256
    """Output width of each expert's eASPP."""
    easpp_bottleneck: int = 64
    """Bottleneck width inside each of the eASPP's atrous branches."""
    easpp_rates: tuple[int, ...] = (3, 6, 12)
    """Dilation rate of each eASPP atrous branch."""
    skip_channels: int = 24
    """Width of the two skip refinements (OS8 and OS4) of each expert."""
    decoder_channels: int = 256
    """Width of the decoder's convolutions."""
    ssma_eta_skip: int = 6
    """Bottleneck of the skip SSMA blocks, 2C / eta."""
    skip_attention: bool = True
    """The decoder's channel attention on the fused skips."""
    attention_activation: str = 'relu'
    """Activation of the skip attention: relu | sigmoid."""
    aux_loss: bool = True
    """Return the two auxiliary heads in training mode."""
    aux_weights: tuple[float, float] = (0.6, 0.5)
    """Loss weights of the (OS4 head, OS8 head)."""
    classifier_bn_relu: bool = True
    """The reference code's BN+ReLU after the 1x1 classifier and BN after the final deconv."""
    dropout: float = 0.5
    """Dropout on the residual branch of each encoder's last unit."""
    pooled_norm: bool = True
    """BatchNorm on 1x1 pooled maps; needs batch > 1 to train."""
    bn_momentum: float = 0.01
    """BatchNorm momentum in PyTorch's convention (TensorFlow's decay 0.99)."""

    def __post_init__(self) -> None:
        check_adapnetpp_fields(self, resnet_encoder=self.encoder != 'erfnet')
        if self.rfb_point not in POINTS:
            raise ConfigError(f'rfb_point must be one of {POINTS}, got {self.rfb_point!r}')
        if self.rfb_stages not in ('all', 'res3'):
            raise ConfigError(f"rfb_stages must be 'all' or 'res3', got {self.rfb_stages!r}")

    @property
    def base(self) -> str:
        return 'erfnet' if self.encoder == 'erfnet' else 'adapnetpp'


# A stage of a package ResNet as RFBNet walks it: its residual units and what follows them.
_Stage = tuple[list[nn.Module], Callable[[Tensor], Tensor]]


@dataclass(frozen=True)
class EncodedStreams:
    """What :meth:`RFBNet.encode` gives: the final RGB, depth and interaction features and, for
    the AdapNet++ base, every stage's RGB and depth features in the encoder API's order (the
    decoder's skips read them; empty for the ERFNet base)."""

    rgb: Tensor
    depth: Tensor
    interaction: Tensor
    feats_rgb: list[Tensor] = field(default_factory=list)
    feats_depth: list[Tensor] = field(default_factory=list)


def _units(stage: Tensor | nn.Module) -> list[nn.Module]:
    """The residual units of a stage reached through module attributes (typed loosely)."""
    if not isinstance(stage, nn.Sequential):
        raise ConfigError(f'RFBNet expects a stage as nn.Sequential, got {type(stage).__name__}')
    return list(stage)


def _relu_after(norm: Tensor | nn.Module) -> Callable[[Tensor], Tensor]:
    """A pre-activation stage's exit: its closing BN, then ReLU."""
    if not isinstance(norm, nn.Module):
        raise ConfigError(f'RFBNet expects a stage norm module, got {type(norm).__name__}')

    def exit_stage(y: Tensor) -> Tensor:
        return F.relu(norm(y))

    return exit_stage


def _identity(y: Tensor) -> Tensor:
    return y


def _stages(encoder: nn.Module) -> tuple[Callable[[Tensor], Tensor], list[_Stage]]:
    """(stem function, [(units, exit function)]) of a package ResNet / pre-activation ResNet."""
    if isinstance(encoder, PreActResNet):

        def stem_pre(x: Tensor) -> Tensor:
            return encoder.stem(x)

        stages: list[_Stage] = [
            (_units(stage.blocks), _relu_after(stage.norm)) for stage in encoder.stages
        ]
        return stem_pre, stages
    if isinstance(encoder, ResNet):

        def stem_v1(x: Tensor) -> Tensor:
            return encoder.relu(encoder.bn1(encoder.conv1(x)))

        stages = [(_units(getattr(encoder, f'layer{i}')), _identity) for i in range(1, 5)]
        return stem_v1, stages
    raise ConfigError(f'RFBNet cannot place RFBs in a {type(encoder).__name__}')


@register_backend(
    'rfbnet', RFBNetConfig, summary='RFBNet residual fusion blocks on SSMA (Deng et al., 2019)'
)
class RFBNet(SegBackend):
    """RGB-D network with an interaction stream of Residual Fusion Blocks (module doc)."""

    config: RFBNetConfig

    def __init__(self, num_classes: int, config: RFBNetConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.config = config
        point, gates = config.rfb_point, config.rfb_gates
        shrink = 2 if config.depth_shrink else 1
        if config.base == 'erfnet':
            self.output_stride = 8
            self.encoder_rgb = ERFNetEncoder(3)
            self.encoder_depth = ERFNetEncoder(config.depth_channels)
            self.rfbs = nn.ModuleList()
            c_rd = None
            for ur, ud in zip(
                self.encoder_rgb.os8_units, self.encoder_depth.os8_units, strict=True
            ):
                block = ResidualFusionBlock(ur, ud, c_rd, gates, point)
                c_rd = block.interaction_channels
                self.rfbs.append(block)
            width = self.encoder_rgb.feature_info[-1].channels
            assert c_rd is not None  # ERFNet has 1/8 units, so at least one RFB
            self.merge = MultiSSMABlock([width, width, c_rd], width, config.merge_eta)
            self.classifier = nn.Conv2d(width, num_classes, 1)
            self.aux_weights = ()
            self.pad_multiple = 8 * shrink
            init_weights(self.merge, bias=0.01)
        else:
            self.output_stride = config.output_stride
            self.expert_rgb = AdapNetppExpert(3, config)
            self.expert_depth = AdapNetppExpert(config.depth_channels, config)
            self.rfb_index: list[tuple[int, int]] = []
            self.rfbs = nn.ModuleList()
            _, stages_r = _stages(self.expert_rgb.encoder)
            _, stages_d = _stages(self.expert_depth.encoder)
            info = self.expert_rgb.encoder.feature_info
            c_rd = None
            last_stage = 1 if config.rfb_stages == 'res3' else 3
            for s, ((units_r, _), (units_d, _)) in enumerate(zip(stages_r, stages_d, strict=True)):
                if s > last_stage:
                    break
                for b, (unit_r, unit_d) in enumerate(zip(units_r, units_d, strict=True)):
                    in_stride = info[s + 1].stride if b > 0 else (info[s].stride if s else 4)
                    if in_stride < 8:
                        continue
                    block = ResidualFusionBlock(unit_r, unit_d, c_rd, gates, point)
                    c_rd = block.interaction_channels
                    self.rfbs.append(block)
                    self.rfb_index.append((s, b))
            if not self.rfbs:
                raise ConfigError('this encoder has no residual units at 1/8 for RFBs')
            c, sk = config.easpp_channels, config.skip_channels
            assert c_rd is not None  # set by the RFBs, of which there is at least one
            self.ssma_latent = MultiSSMABlock([c, c, c_rd], c, config.merge_eta)
            self.ssma_skip8 = SSMABlock(sk, config.ssma_eta_skip, 3, True)
            self.ssma_skip4 = SSMABlock(sk, config.ssma_eta_skip, 3, True)
            for fusion in (self.ssma_latent, self.ssma_skip8, self.ssma_skip4):
                init_weights(fusion, bias=0.01)
            self.decoder = AdapNetppDecoder(
                num_classes,
                config,
                skip_attention=config.skip_attention,
                attention_activation=config.attention_activation,
            )
            self.aux_weights = tuple(config.aux_weights) if config.aux_loss else ()
            self.pad_multiple = max(f.stride for f in info) * shrink
        # Interaction-stream layers are new; the RFB modules init their own zero-gamma BNs.
        for rfb in self.rfbs:
            for m in rfb.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            if not config.rfb_zero_init and config.rfb_point != 'none':
                assert isinstance(rfb, ResidualFusionBlock)  # all self.rfbs are
                rfb.gfu.unit_complement_gains()
        set_bn_momentum(self, config.bn_momentum)

    # ------------------------------------------------------------------------------------------
    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """The RGB and depth encoders of either base (the RFBs between them are new layers)."""
        if self.config.base == 'erfnet':
            return {'rgb': self.encoder_rgb, 'depth': self.encoder_depth}
        return {'rgb': self.expert_rgb.encoder, 'depth': self.expert_depth.encoder}

    def _shrink(self, depth: Tensor) -> Tensor:
        return F.avg_pool2d(depth, 2, 2) if self.config.depth_shrink else depth

    def encode(self, rgb: Tensor, depth: Tensor) -> EncodedStreams:
        """Run both encoders with their RFBs (the interaction stream starts at the first)."""
        depth = self._shrink(depth)
        x_rd: Tensor | None = None
        if self.config.base == 'erfnet':
            fr = self.encoder_rgb.forward_to_os8(rgb)
            fd = self.encoder_depth.forward_to_os8(depth)
            x_r, x_d = fr[-1], fd[-1]
            for block, ur, ud in zip(
                self.rfbs, self.encoder_rgb.os8_units, self.encoder_depth.os8_units, strict=True
            ):
                x_r, x_d, x_rd = block(ur, ud, x_r, x_d, x_rd)
            assert x_rd is not None  # ERFNet has units at 1/8, so at least one RFB ran
            return EncodedStreams(x_r, x_d, x_rd)
        er, ed = self.expert_rgb, self.expert_depth
        stem_r, stages_r = _stages(er.encoder)
        stem_d, stages_d = _stages(ed.encoder)
        x_r = stem_r(er.input_norm(rgb))
        x_d = stem_d(ed.input_norm(depth))
        feats_r, feats_d = [x_r], [x_d]
        x_r = F.max_pool2d(x_r, 3, 2, 1)
        x_d = F.max_pool2d(x_d, 3, 2, 1)
        lookup = {idx: block for idx, block in zip(self.rfb_index, self.rfbs, strict=True)}
        for s, ((units_r, exit_r), (units_d, exit_d)) in enumerate(
            zip(stages_r, stages_d, strict=True)
        ):
            for b, (unit_r, unit_d) in enumerate(zip(units_r, units_d, strict=True)):
                rfb = lookup.get((s, b))
                if rfb is None:
                    x_r, x_d = unit_r(x_r), unit_d(x_d)
                else:
                    x_r, x_d, x_rd = rfb(unit_r, unit_d, x_r, x_d, x_rd)
            x_r, x_d = exit_r(x_r), exit_d(x_d)
            feats_r.append(x_r)
            feats_d.append(x_d)
        assert x_rd is not None  # the constructor refuses an encoder without RFB places
        return EncodedStreams(x_r, x_d, x_rd, feats_r, feats_d)

    def forward_padded(
        self, rgb: Tensor | None, depth: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        assert rgb is not None and depth is not None  # both read, checked by SegBackend
        enc = self.encode(rgb, depth)

        def up(x: Tensor, like: Tensor) -> Tensor:
            if x.shape[-2:] == like.shape[-2:]:
                return x
            return F.interpolate(x, size=like.shape[-2:], mode='bilinear', align_corners=False)

        if self.config.base == 'erfnet':
            x_r = enc.rgb
            fused = self.merge(x_r, up(enc.depth, x_r), up(enc.interaction, x_r))
            logits = F.interpolate(
                self.classifier(fused), size=rgb.shape[-2:], mode='bilinear', align_corners=False
            )
            return logits, ()
        er, ed = self.expert_rgb, self.expert_depth
        fr, fd = enc.feats_rgb, enc.feats_depth
        lat_r, lat_d = er.easpp(fr[-1]), ed.easpp(fd[-1])
        s8_r, s8_d = er.skip_os8(fr[2]), ed.skip_os8(fd[2])
        s4_r, s4_d = er.skip_os4(fr[1]), ed.skip_os4(fd[1])
        latent = self.ssma_latent(lat_r, up(lat_d, lat_r), up(enc.interaction, lat_r))
        return self.decoder(
            latent, self.ssma_skip8(s8_r, up(s8_d, s8_r)), self.ssma_skip4(s4_r, up(s4_d, s4_r))
        )

    # --- staged training -----------------------------------------------------------------------
    def unimodal_modules(self) -> tuple[nn.Module, nn.Module]:
        """The modules initialised from the RGB and the depth unimodal model."""
        if self.config.base == 'erfnet':
            return self.encoder_rgb, self.encoder_depth
        return self.expert_rgb, self.expert_depth

    def init_from_unimodal(
        self, rgb_source: Any, depth_source: Any, strict: bool = True
    ) -> dict[str, list[str]]:
        """Stage-2 init from two unimodal models (module, state dict or checkpoint path).

        AdapNet++ base: ``adapnetpp`` models (their ``expert.*``). ERFNet base: ``erfnet_enc``
        models (their ``encoder.*``) or bare :class:`ERFNetEncoder` state dicts. Returns the
        missing / mismatched keys per modality; ``strict`` raises on any.
        """
        report: dict[str, list[str]] = {}
        for name, source, target in zip(
            ('rgb', 'depth'), (rgb_source, depth_source), self.unimodal_modules(), strict=True
        ):
            state = state_dict_from(source, 'unimodal model')
            want = target.state_dict()
            best: dict[str, Tensor] = {}
            for prefix in ('expert.', 'encoder.', f'encoder_{name}.', f'expert_{name}.', ''):
                sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                sub = {k: v for k, v in sub.items() if k in want}
                if len(sub) > len(best):
                    best = sub
            missing = [k for k in want if k not in best]
            mismatched = [k for k, v in best.items() if v.shape != want[k].shape]
            if strict and (missing or mismatched):
                raise CheckpointError(
                    f'{name} unimodal model does not match the RFBNet {name} stream '
                    f'(missing {missing[:5]}, mismatched {mismatched[:5]})'
                )
            target.load_state_dict(
                {k: v for k, v in best.items() if v.shape == want[k].shape}, strict=False
            )
            report[f'{name}_missing'] = missing
            report[f'{name}_mismatched'] = mismatched
        return report

    def fusion_parameters(self):
        """Parameters that are not in the unimodal models (RFBs, merge, decoder, head)."""
        own = {id(p) for m in self.unimodal_modules() for p in m.parameters()}
        return (p for p in self.parameters() if id(p) not in own)
