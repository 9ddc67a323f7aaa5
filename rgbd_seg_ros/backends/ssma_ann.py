"""SSMA with asymmetric non-local context (``ssma_ann``): the ``ssma`` backend with ANN's
blocks (:mod:`rgbd_seg_ros.backends.nonlocal_blocks`) in two places, each switchable:

* ``context_head='apnb'``: each expert's eASPP is replaced by ANN's context head without its
  fusion stage (3x3 conv to ``easpp_channels`` + BN + ReLU, then APNB with pyramid anchors
  {1,3,6,8}); ``'easpp'`` keeps AdapNet++'s eASPP.
* ``latent_fusion='afnb'``: the latent SSMA block is replaced by a cross-modal AFNB whose
  queries come from the RGB context and whose keys/values come from the depth context
  (``'ssma'`` keeps the SSMA block).

This combination is in none of the papers (ANN is an RGB-only network; the cross-modal AFNB is
a project extension, doc/backends/ann.md §4.3). Everything else -- experts, skips, skip
SSMA blocks, decoder with skip attention, staged training helpers -- is the ``ssma`` backend
unchanged; with ``context_head='apnb'`` the experts' eASPP weights of a unimodal ``adapnetpp``
checkpoint do not apply (use ``init_experts_from_unimodal(..., strict=False)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rgbd_seg_ros.backends.base import init_weights, set_bn_momentum
from rgbd_seg_ros.backends.nonlocal_blocks import ANNContextHead, CrossModalAFNB
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.backends.ssma import SSMA, SSMAConfig
from rgbd_seg_ros.errors import ConfigError


@dataclass
class SSMAANNConfig(SSMAConfig):
    """Options of the ``ssma_ann`` backend: every ``ssma`` option (same defaults) plus the
    non-local replacements of ANN (Zhu et al., ICCV 2019): APNB context heads in place of eASPP
    and a cross-modal AFNB (RGB queries, depth keys and values) in place of the latent SSMA
    block."""

    context_head: str = 'apnb'
    """Context module of each expert: apnb (ANN's context head) | easpp (AdapNet++'s)."""
    latent_fusion: str = 'afnb'
    """Fusion of the two context outputs: afnb (cross-modal AFNB) | ssma (the SSMA block)."""
    ann_key_channels: int = 256
    """Key/query width of the APNB and AFNB blocks."""
    ann_value_channels: int = 256
    """Value width of the APNB and AFNB blocks."""
    ann_zero_init: bool = True
    """ANN's zero-initialised output projection W_o: the blocks start as no-ops."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.context_head not in ('apnb', 'easpp'):
            raise ConfigError(f"context_head must be 'apnb' or 'easpp', got {self.context_head!r}")
        if self.latent_fusion not in ('afnb', 'ssma'):
            raise ConfigError(
                f"latent_fusion must be 'afnb' or 'ssma', got {self.latent_fusion!r}"
            )


@register_backend(
    'ssma_ann',
    SSMAANNConfig,
    summary='SSMA with APNB context and cross-modal AFNB fusion (Zhu et al., ICCV 2019)',
)
class SSMAANN(SSMA):
    """SSMA whose eASPP / latent SSMA block are swapped for APNB / cross-modal AFNB."""

    def __init__(self, num_classes: int, config: SSMAANNConfig) -> None:
        super().__init__(num_classes, config)
        c = config.easpp_channels
        keys, values = config.ann_key_channels, config.ann_value_channels
        zero_init = config.ann_zero_init
        if config.context_head == 'apnb':
            for expert in (self.expert_rgb, self.expert_depth):
                high = expert.encoder.feature_info[-1].channels
                head = ANNContextHead(
                    high, c, key_channels=keys, value_channels=values, zero_init=zero_init
                )
                expert.easpp = head
                init_weights(head.reduce)
        if config.latent_fusion == 'afnb':
            self.ssma_latent = CrossModalAFNB(
                c, c, c, key_channels=keys, value_channels=values, zero_init=zero_init
            )
        set_bn_momentum(self, config.bn_momentum)
