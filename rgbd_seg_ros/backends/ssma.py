"""SSMA: self-supervised model adaptation fusion of RGB and depth (Valada et al., IJCV 2019).

Two modality-specific AdapNet++ experts (``expert_rgb``, ``expert_depth``: input BN, encoder,
eASPP, the two 24-channel skip convs) are fused by SSMA blocks (doc/backends/ssma.md §3):

- ``ssma_latent`` on the two eASPP outputs (eta = 16 on the 2C = 512 concatenation -> 32;
  fusion conv 1x1 + BN, the reading closest to the paper's parameter count,
  doc/backends/ssma.md §5.3),
- ``ssma_skip8`` / ``ssma_skip4`` on the OS8 / OS4 skips (eta = 6: 48 -> 8; fusion conv
  3x3 + BN as the paper's Eq. 12, or the reference code's 3x3 with bias and no BN),

into one shared AdapNet++ decoder whose skips are first scaled channel-wise by
``ReLU(BN(1x1(GAP(decoder))))`` (the skip attention). The gates are independent sigmoids per
channel and pixel (``ssma_gating='softmax'`` is the paper's "dependent" variant).

Staged training (doc/backends/ssma.md §4.2): train one ``adapnetpp`` per modality, then
:meth:`SSMA.init_experts_from_unimodal` copies each one's ``expert.*`` into the matching
expert (the decoders are discarded), and :meth:`SSMA.expert_parameters` /
:meth:`SSMA.fusion_parameters` give the two learning-rate groups; :meth:`SSMA.freeze_experts`
is stage 3 (experts in eval mode, no gradients).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.errors import CheckpointError, ConfigError
from rgbd_seg_ros.modes import EncoderStream


@dataclass
class SSMAConfig:
    """Options of the ``ssma`` backend, SSMA fusion of two AdapNet++ experts (Valada, Mohan,
    Burgard, IJCV 2019). The defaults are this project's reading of the paper's RGB-D network
    (doc/backends/ssma.md §5): 56.29 M parameters with 12 classes and 3-channel depth against
    the paper's 56.44 M, a gap that is still open (doc/backends/ssma.md §3.5, §6)."""

    encoder: str = 'preact_resnet50'
    """Trunk of both experts, any name of ``encoders.list_encoders()``; the paper's is the full
    pre-activation ResNet-50, resnet18 or resnet34 suit CPU use."""
    depth_channels: int = 1
    """Channels of the depth tensor: 1 for metric depth, 3 for jet or HHA."""
    output_stride: int = 16
    """8 | 16 | 32."""
    multiscale: Any = 'paper'
    """Rates of the multiscale residual units: paper | code (the authors' released code) |
    none | 4 per-stage lists of [r1, r2] pairs."""
    input_norm: bool = True
    """Learnable BatchNorm on each expert's raw input."""
    easpp_channels: int = 256
    """Output width of each expert's eASPP (C of the SSMA blocks' 2C concatenation)."""
    easpp_bottleneck: int = 64
    """Bottleneck width inside each of the eASPP's atrous branches."""
    easpp_rates: tuple[int, ...] = (3, 6, 12)
    """Dilation rate of each eASPP atrous branch."""
    skip_channels: int = 24
    """Width of the two skip refinements (OS8 and OS4) of each expert."""
    decoder_channels: int = 256
    """Width of the decoder's convolutions."""
    ssma_eta_latent: int = 16
    """Bottleneck of the latent SSMA block, 2C / eta (512 -> 32)."""
    ssma_eta_skip: int = 6
    """Bottleneck of the skip SSMA blocks, 2C / eta (48 -> 8)."""
    ssma_latent_kernel: int = 1
    """Fusion conv of the latent block: 1 (+BN; the reading closest to the paper's parameter count,
    doc/backends/ssma.md §5.3) or 3."""
    ssma_skip_kernel: int = 3
    """Fusion conv of the skip blocks: 1 or 3 (the paper's Eq. 12)."""
    ssma_skip_bn: bool = True
    """BN after the skip fusion conv; False is the reference code's bias-only conv."""
    ssma_gating: str = 'sigmoid'
    """sigmoid (independent gates per channel and pixel, the paper) | softmax (the paper's
    dependent variant)."""
    skip_attention: bool = True
    """The decoder's channel attention on the fused skips."""
    attention_activation: str = 'relu'
    """Activation of the skip attention: relu (the paper and its code) | sigmoid."""
    aux_loss: bool = True
    """Return the two auxiliary heads in training mode (used when training the fusion)."""
    aux_weights: tuple[float, float] = (0.6, 0.5)
    """Loss weights of the (OS4 head, OS8 head)."""
    classifier_bn_relu: bool = True
    """The reference code's BN+ReLU after the 1x1 classifier and BN after the final deconv;
    False gives plain logits."""
    dropout: float = 0.5
    """Dropout on the residual branch of each encoder's last unit."""
    pooled_norm: bool = True
    """BatchNorm on 1x1 pooled maps (eASPP image pooling, skip attention); needs batch > 1 to
    train."""
    bn_momentum: float = 0.01
    """BatchNorm momentum in PyTorch's convention (TensorFlow's decay 0.99)."""

    def __post_init__(self) -> None:
        check_adapnetpp_fields(self)
        if self.ssma_gating not in ('sigmoid', 'softmax'):
            raise ConfigError(
                f"ssma_gating must be 'sigmoid' or 'softmax', got {self.ssma_gating!r}"
            )
        if self.attention_activation not in ('relu', 'sigmoid'):
            raise ConfigError(
                f"attention_activation must be 'relu' or 'sigmoid', got "
                f'{self.attention_activation!r}'
            )
        for name in ('ssma_latent_kernel', 'ssma_skip_kernel'):
            if getattr(self, name) not in (1, 3):
                raise ConfigError(f'{name} must be 1 or 3, got {getattr(self, name)}')


@register_backend(
    'ssma', SSMAConfig, summary='SSMA RGB-D fusion on AdapNet++ (Valada et al., IJCV 2019)'
)
class SSMA(SegBackend):
    """Two AdapNet++ experts fused by SSMA blocks into one decoder with skip attention."""

    EXPERT_PREFIX = 'expert.'

    config: SSMAConfig

    def __init__(self, num_classes: int, config: SSMAConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.config = config
        self.output_stride = config.output_stride
        self.expert_rgb = AdapNetppExpert(3, config)
        self.expert_depth = AdapNetppExpert(config.depth_channels, config)
        c, s = config.easpp_channels, config.skip_channels
        # a module slot: ssma_ann puts a cross-modal AFNB here
        self.ssma_latent: nn.Module = SSMABlock(
            c, config.ssma_eta_latent, config.ssma_latent_kernel, True, config.ssma_gating
        )
        self.ssma_skip8 = SSMABlock(
            s,
            config.ssma_eta_skip,
            config.ssma_skip_kernel,
            config.ssma_skip_bn,
            config.ssma_gating,
        )
        self.ssma_skip4 = SSMABlock(
            s,
            config.ssma_eta_skip,
            config.ssma_skip_kernel,
            config.ssma_skip_bn,
            config.ssma_gating,
        )
        for block in (self.ssma_latent, self.ssma_skip8, self.ssma_skip4):
            init_weights(block, bias=0.01)
        self.decoder = AdapNetppDecoder(
            num_classes,
            config,
            skip_attention=config.skip_attention,
            attention_activation=config.attention_activation,
        )
        self.pad_multiple = max(f.stride for f in self.expert_rgb.encoder.feature_info)
        self.aux_weights = tuple(config.aux_weights) if config.aux_loss else ()
        set_bn_momentum(self, config.bn_momentum)

    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """Each expert's encoder (not its eASPP and skips, which ImageNet has no weights for)."""
        return {'rgb': self.expert_rgb.encoder, 'depth': self.expert_depth.encoder}

    def forward_padded(
        self, rgb: Tensor | None, depth: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        lat_a, s8_a, s4_a = self.expert_rgb(rgb)
        lat_b, s8_b, s4_b = self.expert_depth(depth)
        return self.decoder(
            self.ssma_latent(lat_a, lat_b),
            self.ssma_skip8(s8_a, s8_b),
            self.ssma_skip4(s4_a, s4_b),
        )

    # --- staged training -------------------------------------------------------------------

    def experts(self) -> tuple[nn.Module, nn.Module]:
        """The RGB and depth experts."""
        return self.expert_rgb, self.expert_depth

    def expert_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of both experts (stage 2: lr 1e-4; stage 3: frozen)."""
        yield from self.expert_rgb.parameters()
        yield from self.expert_depth.parameters()

    def fusion_parameters(self) -> Iterator[nn.Parameter]:
        """SSMA blocks, skip attention and decoder (stage 2: lr 1e-3; stage 3: lr 1e-5)."""
        for module in (self.ssma_latent, self.ssma_skip8, self.ssma_skip4, self.decoder):
            yield from module.parameters()

    def freeze_experts(self, frozen: bool = True) -> None:
        """Stage 3: experts without gradients and kept in eval mode (BN statistics fixed)."""
        self._experts_frozen = frozen
        for p in self.expert_parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.expert_rgb.eval()
            self.expert_depth.eval()
        else:
            self.expert_rgb.train(self.training)
            self.expert_depth.train(self.training)

    def train(self, mode: bool = True) -> SSMA:
        super().train(mode)
        if getattr(self, '_experts_frozen', False):
            self.expert_rgb.eval()
            self.expert_depth.eval()
        return self

    def init_experts_from_unimodal(
        self, rgb_source: Any, depth_source: Any, strict: bool = True
    ) -> dict[str, list[str]]:
        """Stage 2 init: copy ``expert.*`` of two unimodal ``adapnetpp`` models into the experts.

        Each source is an ``AdapNetpp`` module, its state dict, or the path of an ``adapnetpp``
        checkpoint (``rgbd_seg_ros.backends.checkpoint``). Decoder weights are ignored. With
        ``strict`` every expert tensor must be present with the right shape; otherwise the
        returned dict lists per expert the ``missing``, ``mismatched`` and ``unexpected`` keys.
        """
        report: dict[str, list[str]] = {}
        for name, source, expert in (
            ('rgb', rgb_source, self.expert_rgb),
            ('depth', depth_source, self.expert_depth),
        ):
            state = state_dict_from(source, f'{name} expert', backend='adapnetpp')
            sub = {
                k[len(self.EXPERT_PREFIX) :]: v
                for k, v in state.items()
                if k.startswith(self.EXPERT_PREFIX)
            }
            target = expert.state_dict()
            missing = [k for k in target if k not in sub]
            mismatched = [
                f'{k} (source {tuple(sub[k].shape)}, model {tuple(v.shape)})'
                for k, v in target.items()
                if k in sub and sub[k].shape != v.shape
            ]
            unexpected = [k for k in sub if k not in target]
            if strict and (missing or mismatched or unexpected):
                raise CheckpointError(
                    f'{name} expert: the unimodal model does not match (missing {missing[:5]}, '
                    f'mismatched {mismatched[:5]}, unexpected {unexpected[:5]}); the same '
                    'encoder, options and depth_channels are needed'
                )
            ok = {k: v for k, v in sub.items() if k in target and v.shape == target[k].shape}
            expert.load_state_dict(ok, strict=False)
            report[f'{name}_missing'] = missing
            report[f'{name}_mismatched'] = mismatched
            report[f'{name}_unexpected'] = unexpected
        return report
