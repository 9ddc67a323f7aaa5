"""The encoder contract and the stage plan the ResNet-family encoders are built from.

An :class:`Encoder` returns its stage outputs shallow to deep and describes them in
``feature_info`` (channels, stride, name). :func:`plan_stages` turns a ResNet's stage depths,
an output stride and optional AdapNet++ multiscale rates into the stride, dilation and rates of
every residual unit. This module sits below both the concrete encoders (``resnet``,
``preact_resnet``, ``erfnet``) and the factory that names them (``encoders``), so neither has
to import the other to share these pieces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from torch import Tensor, nn

from rgbd_seg_ros.errors import ConfigError

RatePairs = Sequence[Sequence[int]]

# AdapNet++ paper rates (doc/backends/ssma.md §2.2), for output stride 16, per residual stage
# res2..res5, aligned to the END of the stage: res3d (1,2); res4c-f (1,2/4/8/16); res5a-c
# (2,4/8/16).
ADAPNETPP_RATES: tuple[tuple[tuple[int, int], ...], ...] = (
    (),
    ((1, 2),),
    ((1, 2), (1, 4), (1, 8), (1, 16)),
    ((2, 4), (2, 8), (2, 16)),
)
# The rates hard-coded in the authors' released code (doc/backends/ssma.md §5.1), for fidelity
# experiments.
REFERENCE_CODE_RATES: tuple[tuple[tuple[int, int], ...], ...] = (
    (),
    ((1, 2),),
    ((1, 2),) * 4,
    ((2, 2),) * 3,
)
MULTISCALE_PRESETS = {'paper': ADAPNETPP_RATES, 'code': REFERENCE_CODE_RATES, 'none': None}

STAGE_STRIDES = (1, 2, 2, 2)
VALID_OUTPUT_STRIDES = (8, 16, 32)


class FeatureInfo(NamedTuple):
    """One encoder output: channel count, stride w.r.t. the input, and a name."""

    channels: int
    stride: int
    name: str


@dataclass(frozen=True)
class BlockPlan:
    """How to build one residual unit."""

    stride: int
    dilation: int
    rates: tuple[int, int] | None


class Encoder(nn.Module):
    """Base of every encoder: ``forward(x) -> list[Tensor]`` matching ``feature_info``.

    Each encoder class also knows the published ImageNet files its weights can start from
    (``weight_files``, for messages) and how their key names map to its own
    (:meth:`imagenet_state`), so that loading such a file (``backends.pretrained``) needs no
    table of encoder types.
    """

    feature_info: list[FeatureInfo]
    output_stride: int
    in_channels: int
    # The ImageNet weight files users have for this encoder, named in load errors.
    weight_files: ClassVar[str] = 'a state dict saved from this encoder'
    name: str  # the builder's name, set by encoders.build_encoder

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def imagenet_state(self, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
        """``state`` with its keys renamed to this encoder's, and the name of its layout.

        The base class takes the file's keys as they are (a file saved from the encoder).
        """
        return dict(state), 'native'

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature."""
        return [f.channels for f in self.feature_info]

    @property
    def strides(self) -> list[int]:
        """Stride of each returned feature."""
        return [f.stride for f in self.feature_info]


def resolve_multiscale(multiscale: object) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """Accept a preset name ('paper', 'code', 'none'), None/False, True (= paper) or a list."""
    if multiscale is None or multiscale is False:
        return None
    if multiscale is True:
        return ADAPNETPP_RATES
    if isinstance(multiscale, str):
        if multiscale not in MULTISCALE_PRESETS:
            raise ConfigError(
                f'unknown multiscale preset {multiscale!r}; valid: {sorted(MULTISCALE_PRESETS)}'
            )
        return MULTISCALE_PRESETS[multiscale]
    stages = list(multiscale)  # type: ignore[call-overload]  # config value; list() checks it
    if len(stages) != 4:
        raise ConfigError(f'multiscale needs 4 per-stage lists (res2..res5), got {len(stages)}')
    out = []
    for stage in stages:
        pairs = []
        for raw in stage or ():
            pair = tuple(int(r) for r in raw)
            if len(pair) != 2 or min(pair) < 1:
                raise ConfigError(f'multiscale rates must be pairs of positive ints, got {pair}')
            pairs.append(pair)
        out.append(tuple(pairs))
    return tuple(out)


def stage_dilations(output_stride: int) -> list[int]:
    """Dilation of each residual stage's 3x3 convs at ``output_stride``."""
    if output_stride not in VALID_OUTPUT_STRIDES:
        raise ConfigError(
            f'output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride}'
        )
    current, dilation, out = 4, 1, []
    for st in STAGE_STRIDES:
        if current * st > output_stride:
            dilation *= st
        else:
            current *= st
        out.append(dilation)
    return out


def plan_stages(
    layers: Sequence[int], output_stride: int, multiscale: object = None
) -> tuple[list[list[BlockPlan]], list[int]]:
    """Per stage, the (stride, dilation, multiscale rates) of every unit, and stage strides.

    Strides above ``output_stride`` become dilations (torchvision's convention: the first
    unit of a dilated stage keeps the previous dilation). Multiscale rates are the paper's
    values at output stride 16, scaled by ``stage dilation / dilation at OS16`` otherwise, and
    aligned to the last units of each stage (a stage with fewer units keeps the last pairs).
    """
    rates = resolve_multiscale(multiscale)
    dil = stage_dilations(output_stride)
    dil16 = stage_dilations(16)
    plans: list[list[BlockPlan]] = []
    strides: list[int] = []
    current, prev_dilation = 4, 1
    for s, (n, st) in enumerate(zip(layers, STAGE_STRIDES, strict=True)):
        stride = st if dil[s] == prev_dilation else 1
        current *= stride
        strides.append(current)
        stage_rates: list[tuple[int, int] | None] = [None] * n
        if rates is not None:
            pairs = list(rates[s])[-n:] if n else []
            factor = dil[s] / dil16[s]
            for i, pair in enumerate(pairs):
                scaled = tuple(max(1, round(r * factor)) for r in pair)
                stage_rates[n - len(pairs) + i] = scaled  # type: ignore[assignment]  # a pair
        blocks = []
        for b in range(n):
            blocks.append(
                BlockPlan(
                    stride=stride if b == 0 else 1,
                    dilation=prev_dilation if b == 0 else dil[s],
                    rates=stage_rates[b],
                )
            )
        plans.append(blocks)
        prev_dilation = dil[s]
    return plans, strides
