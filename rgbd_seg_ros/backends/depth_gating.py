"""Depth-aware gating and recurrent refinement (Kong & Fowlkes, "Recurrent Scene Parsing with
Perspective Understanding in the Loop", CVPR 2018), as the ``depth_gating`` backend.

Network (the paper: doc/backends/depth_gating.md §2.1-§2.5; this code: §3.1): a dilated ResNet at
output stride 8 -> ``res6`` (3x3 conv to ``width``) -> feed-forward depth-aware gating module (five
3x3 branches with dilations 1/2/4/8/16 mixed per pixel by 5-way depth-bin probabilities, plus the
depth head that predicts those bins and log-depth) -> 1x1 conv -> classifier -> x8 bilinear. Then
``num_loops`` unrolls of the recurrent refinement module, whose weights are shared across unrolls:
its input is ``cat(res6, previous pre-classifier feature)``, a 3x3 conv back to ``width``, its own
gating module and depth head, 1x1 conv and classifier. Every unroll yields a prediction, so
``num_loops`` (0..2) is a latency/accuracy knob that can be changed at run time
(:meth:`DepthGatingNet.set_num_loops`) without touching the weights.

The gate comes from (``gating_source``):

* ``'predicted'`` -- the softmax of the model's own depth-bin head (the paper's final choice).
  The backend then reads no depth at all, so a node can keep publishing when the depth stream
  drops out (``forward(rgb)`` or ``forward(rgb, None)``).
* ``'sensor'`` -- the one-hot bin of the measured depth; pixels without valid depth get the
  uniform 1/5 on every branch (the paper's ground-truth gating).
* ``'hybrid'`` -- sensor bins where the depth is valid, predicted probabilities in holes; a
  missing depth frame (``depth=None``) counts as all holes, so ``hybrid`` also keeps running
  when the depth stream drops out.
* ``'none'`` -- no gating and no depth branch: the dilation-1 branch alone, i.e. the paper's
  feed-forward baseline (backbone + two 3x3 layers), the first stage of its staged training.
  Its weights are the same tensors as the gated model's, so the next stage starts from them.

Departures from the paper and its code, and package choices:

* **Bins on f/Z, not metric depth** (doc/backends/depth_gating.md §3.2): apparent size scales with
  f/Z, so a bin edge ``Z_e`` metres measured with the reference camera (``reference_focal_px``; the
  NYUv2 Kinect, fx = 518.86 px, with the paper's NYU edges 1.5/2.1/3.0/4.7 m) becomes the edge
  ``reference_focal_px / Z_e`` in pixels per metre, and a camera of focal ``f`` bins a pixel by
  ``f / Z``. With the reference focal this reproduces the paper's bins exactly. Far pixels (bin
  0) select dilation 1, near pixels (bin 4) dilation 16. ``bin_edges_fz`` overrides the edges.
* **Focal length.** The backend sets ``needs_intrinsics``: ``forward(rgb, depth, K)`` takes
  the camera matrix of the *network input* per call (``K [B,3,3]``, see
  :mod:`rgbd_seg_ros.backends.base`; after a resize by s the caller has scaled fx by s) and
  bins with ``fx = K[:, 0, 0]``. Without K it uses ``config.focal_px``, otherwise
  ``reference_focal_px``. The engine passes the K of each frame (from ``CameraInfo``); the
  exported ONNX graph has K as an input. The focal is never part of the state dict.
* Sensor depth reaches the gate at 1/8 resolution by **min-pooling** (max-pooling f/Z, so holes,
  which are 0, never win): thin near objects survive (doc/backends/depth_gating.md §3.3).
* **Depth input** is the package's ``'metric'`` encoding, ``min(Z, max)/max``; ``depth_max_m``
  (default 10, the encoding's default) must equal the checkpoint's ``depth_params.max_depth_m``.
  Values at the clip (>= max) land in the far bin, which is correct for any max above 4.7 m.
* Gating is soft for predicted/hybrid-hole pixels (the code's MaskGating), hard (one-hot) for
  sensor pixels, as in the paper; the ``tied`` and ``avg`` ablations are not built.
* Training output: the final unroll's logits are the main output; the earlier predictions are
  auxiliary outputs with the code's relative weights (feed-forward 1 vs loops 5, i.e. aux
  weights 0.2 for the feed-forward pass and 1.0 for intermediate unrolls). The depth-bin and
  log-depth heads of every step travel in ``SegOutput.depth`` (:class:`DepthPredictions`), so
  the training loss can add the paper's depth terms (``depth_bin_loss``, ``log_depth_loss``,
  weighted per step as in its Eq. 1).
* New layers use BatchNorm like the rest of the package (the paper trains at batch 1 with
  frozen backbone BN; GroupNorm or batch >= 8 would be safer for the new layers,
  doc/backends/depth_gating.md §3.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.base import DepthPredictions, SegBackend
from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.backends.encoders import build_encoder
from rgbd_seg_ros.backends.registry import register_backend
from rgbd_seg_ros.errors import ConfigError, FrameError
from rgbd_seg_ros.modes import EncoderStream

GATING_SOURCES = ('predicted', 'sensor', 'hybrid', 'none')
# Gate sources that read the measured depth.
SENSOR_SOURCES = ('sensor', 'hybrid')
NYU_BIN_EDGES_M: tuple[float, ...] = (1.5, 2.1, 3.0, 4.7)
NYU_KINECT_FOCAL_PX = 518.8579


def _cbr(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def fz_edges(edges_m: Sequence[float], reference_focal_px: float) -> tuple[float, ...]:
    """Metric bin edges of the reference camera -> ascending f/Z edges (pixels per metre)."""
    return tuple(sorted(reference_focal_px / float(e) for e in edges_m))


def sensor_bin_probs(
    depth_m: Tensor, focal: Tensor, edges_fz: Sequence[float], stride: int
) -> tuple[Tensor, Tensor]:
    """One-hot f/Z bins of metric depth at ``1/stride``; uniform where there is no valid depth.

    ``depth_m [B,1,H,W]`` (0 = invalid), ``focal [B]`` -> ``(probs [B,n+1,h,w], valid [B,1,h,w])``.
    Bin 0 is the farthest (smallest f/Z). Depth is min-pooled (f/Z max-pooled) over each cell.
    """
    depth_m = depth_m.float()
    valid_px = depth_m > 0
    fz = torch.where(
        valid_px, focal.view(-1, 1, 1, 1) / depth_m.clamp_min(1e-6), torch.zeros_like(depth_m)
    )
    if stride > 1:
        fz = F.max_pool2d(fz, stride, stride)
    valid = fz > 0
    edges = torch.tensor(list(edges_fz), dtype=fz.dtype, device=fz.device).view(1, -1, 1, 1)
    index = (fz > edges).sum(1)  # B, h, w in 0..n
    bins = torch.arange(len(edges_fz) + 1, device=fz.device).view(1, -1, 1, 1)
    onehot = (index.unsqueeze(1) == bins).to(fz.dtype)
    uniform = torch.full_like(onehot, 1.0 / (len(edges_fz) + 1))
    return torch.where(valid, onehot, uniform), valid


class DepthHead(nn.Module):
    """Kong's depth branch: 3x3 C->128, 3x3 128->32 (+dropout), 1x1 -> bins, 3x3 -> log-depth."""

    def __init__(
        self, channels: int, mid: int = 128, low: int = 32, bins: int = 5, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            _cbr(channels, mid, 3), _cbr(mid, low, 3), nn.Dropout2d(dropout)
        )
        self.bins = nn.Conv2d(low, bins, 1)
        self.log_depth = nn.Conv2d(low, 1, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = self.trunk(x)
        return self.bins(t), self.log_depth(t)


class DepthAwareGating(nn.Module):
    """Five untied dilated 3x3 branches mixed per pixel: ``Y = sum_k P_k * B_k``.

    ``forward(x, probs)`` with ``probs [B,K,h,w]`` (K = number of branches, summing to 1).
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        dilations: Sequence[int] = (1, 2, 4, 8, 16),
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.dilations = tuple(dilations)
        self.branches = nn.ModuleList(_cbr(channels, out_channels, 3, d) for d in self.dilations)

    def forward(self, x: Tensor, probs: Tensor) -> Tensor:
        if probs.shape[1] != len(self.branches):
            raise ValueError(f'{len(self.branches)} branches but {probs.shape[1]} gate channels')
        out = None
        for k, branch in enumerate(self.branches):
            term = branch(x) * probs[:, k : k + 1]
            out = term if out is None else out + term
        assert out is not None  # at least one dilation
        return out


class GatedStep(nn.Module):
    """One prediction step: depth head -> gate -> gating module -> 1x1 -> classifier."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        dilations: Sequence[int],
        head_width: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.depth_head = DepthHead(
            channels, head_width, max(8, head_width // 4), len(dilations), dropout
        )
        self.gating = DepthAwareGating(channels, channels, dilations)
        self.post = nn.Sequential(_cbr(channels, channels, 1), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1)


class DepthGatingOutputs(NamedTuple):
    """Everything one forward computes, per step (feed-forward first, then each unroll).

    All maps are at 1/output_stride of the padded input except ``logits`` (full padded size).
    Without gating (``gating_source='none'``) there is no depth branch: ``bin_logits``,
    ``log_depth`` and ``gates`` are empty.
    """

    logits: tuple[Tensor, ...]
    step_logits: tuple[Tensor, ...]
    bin_logits: tuple[Tensor, ...]
    log_depth: tuple[Tensor, ...]
    gates: tuple[Tensor, ...]


@dataclass
class DepthGatingConfig:
    """Options of the ``depth_gating`` backend, depth-aware gating and recurrent refinement
    (Kong & Fowlkes, CVPR 2018). The defaults are the paper's ResNet-50 NYUv2 model: 63.1 M
    parameters with 40 classes (the paper's weight file is 221 MB)."""

    encoder: str = 'resnet50'
    """Dilated ResNet trunk: resnet50 | resnet101 (the paper); resnet18 | resnet34 for CPU
    use."""
    depth_channels: int = 1
    """Sensor and hybrid gating read the 'metric' depth encoding, 1 channel."""
    output_stride: int = 8
    """Output stride of the trunk (the gating runs at 1/8 in the paper)."""
    width: int = 512
    """Width of res6 and of the gating branches."""
    depth_head_width: int = 128
    """First width of the depth head, 3x3 -> width -> width/4 (the paper's 128 -> 32)."""
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    """One gating branch per depth bin, far to near."""
    gating_source: str = 'predicted'
    """predicted (the model's own depth bins; reads no depth) | sensor (bins of the measured
    depth) | hybrid (sensor bins, predicted ones in holes and for frames without depth) | none
    (the feed-forward baseline: the dilation-1 branch alone, no depth branch)."""
    num_loops: int = 2
    """Recurrent unrolls, 0..2 in the paper; also settable at run time (set_num_loops)."""
    bin_edges_m: tuple[float, ...] = NYU_BIN_EDGES_M
    """The paper's NYUv2 bin edges in metres, as seen by the reference camera ..."""
    reference_focal_px: float = NYU_KINECT_FOCAL_PX
    """... whose focal length turns them into f/Z edges, so the bins hold for any camera."""
    bin_edges_fz: tuple[float, ...] | None = None
    """Or the f/Z edges (pixels per metre) directly."""
    focal_px: float | None = None
    """Focal length of the network input used when forward gets no K; None is the reference
    camera's."""
    depth_max_m: float = 10.0
    """Clip of the 'metric' depth encoding; must equal the checkpoint's
    depth_params.max_depth_m."""
    dropout: float = 0.1
    """Dropout of the depth heads and after each gating module."""
    ff_aux_weight: float = 0.2
    """Loss weight of the feed-forward prediction (the code's 1 against 5 for the loops)."""
    loop_aux_weight: float = 1.0
    """Loss weight of the intermediate unrolls."""

    def __post_init__(self) -> None:
        self.dilations = tuple(int(d) for d in self.dilations)
        self.bin_edges_m = tuple(float(e) for e in self.bin_edges_m)
        if self.bin_edges_fz is not None:
            self.bin_edges_fz = tuple(float(e) for e in self.bin_edges_fz)
        if self.gating_source not in GATING_SOURCES:
            raise ConfigError(
                f'gating_source must be one of {GATING_SOURCES}, got {self.gating_source!r}'
            )


@register_backend(
    'depth_gating',
    DepthGatingConfig,
    summary='Depth-aware gating + recurrent refinement, Kong & Fowlkes, CVPR 2018',
)
class DepthGatingNet(SegBackend):
    """Depth-aware gating with recurrent refinement (see the module docstring)."""

    needs_intrinsics = True  # sensor/hybrid bins are f/Z: the focal of each frame matters

    config: DepthGatingConfig

    def __init__(self, num_classes: int, config: DepthGatingConfig) -> None:
        super().__init__()
        if config.gating_source not in GATING_SOURCES:
            raise ConfigError(
                f'gating_source must be one of {GATING_SOURCES}, got {config.gating_source!r}'
            )
        if not 0 <= int(config.num_loops) <= 8:
            raise ConfigError(f'num_loops must be in 0..8, got {config.num_loops}')
        if config.gating_source in SENSOR_SOURCES and config.depth_channels != 1:
            raise ConfigError(
                "sensor/hybrid gating reads 'metric' depth: depth_channels must be 1"
            )
        self.num_classes = num_classes
        self.config = config
        self.output_stride = config.output_stride
        self.pad_multiple = config.output_stride
        self.num_loops = int(config.num_loops)
        edges = config.bin_edges_fz or fz_edges(config.bin_edges_m, config.reference_focal_px)
        self.edges_fz = tuple(sorted(float(e) for e in edges))
        dilations = tuple(int(d) for d in config.dilations)
        if len(dilations) != len(self.edges_fz) + 1:
            raise ConfigError(
                f'{len(dilations)} dilations need {len(dilations) - 1} bin edges, '
                f'got {len(self.edges_fz)}'
            )
        self.default_focal_px = float(config.focal_px or config.reference_focal_px)
        self.encoder = build_encoder(config.encoder, output_stride=config.output_stride)
        c_enc = self.encoder.feature_info[-1].channels
        w = config.width
        self.res6 = _cbr(c_enc, w, 3)
        self.ff = GatedStep(w, num_classes, dilations, config.depth_head_width, config.dropout)
        self.loop_in = _cbr(2 * w, w, 3)
        self.loop = GatedStep(w, num_classes, dilations, config.depth_head_width, config.dropout)

    # -- run-time knobs ---------------------------------------------------------------------
    def set_num_loops(self, num_loops: int) -> None:
        """Number of recurrent unrolls used from now on (the weights cover any number)."""
        if num_loops < 0:
            raise ConfigError(f'num_loops must be >= 0, got {num_loops}')
        self.num_loops = int(num_loops)

    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """The one trunk, on colour (depth only gates, it has no encoder)."""
        return {'rgb': self.encoder}

    def uses_depth(self) -> bool:
        return self.config.gating_source in SENSOR_SOURCES

    def requires_depth(self) -> bool:
        """In ``hybrid`` mode a missing depth frame (None) means "no valid depth anywhere":
        the predicted gate is used everywhere, so the node keeps publishing."""
        return self.config.gating_source == 'sensor'

    def predicts_depth(self) -> bool:
        """Every gate source but the baseline's runs the depth branch."""
        return self.config.gating_source != 'none'

    # -- forward -----------------------------------------------------------------------------
    def _focal(self, K: Tensor | None, batch: int, ref: Tensor) -> Tensor:
        """fx of each batch item's network input ``[B]``; the configured focal without K."""
        if K is None:
            default = self.default_focal_px
            return torch.full((batch,), default, dtype=torch.float32, device=ref.device)
        focal = K[:, 0, 0].to(device=ref.device, dtype=torch.float32)
        # A traced, compiled or exported graph cannot raise on data; there a focal that is not
        # positive (or NaN) makes every pixel a hole, i.e. the uniform gate.
        tracing = (
            torch.jit.is_tracing()
            or torch.compiler.is_compiling()
            or torch.compiler.is_exporting()
        )
        if not tracing and not bool((focal > 0).all()):
            raise FrameError(f'focal length fx of K must be positive, got {focal.tolist()}')
        return focal

    def _gate(self, bin_logits: Tensor, sensor: tuple[Tensor, Tensor] | None) -> Tensor:
        predicted = torch.softmax(bin_logits, 1)
        src = self.config.gating_source
        if src == 'predicted' or sensor is None:
            return predicted
        probs, valid = sensor
        if src == 'sensor':
            return probs
        return torch.where(valid, probs, predicted)

    def _step(
        self, step: GatedStep, x: Tensor, sensor: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """(feature, class logits, bin logits, log-depth, gate) of one step at 1/stride."""
        if not self.predicts_depth():  # the baseline: one 3x3 layer, no depth branch
            feat = step.post(step.gating.branches[0](x))
            return feat, step.classifier(feat), None, None, None
        bin_logits, log_depth = step.depth_head(x)
        gate = self._gate(bin_logits, sensor)
        feat = step.post(step.gating(x, gate))
        return feat, step.classifier(feat), bin_logits, log_depth, gate

    def forward_all(
        self,
        rgb: Tensor,
        depth: Tensor | None = None,
        K: Tensor | None = None,
        num_loops: int | None = None,
    ) -> DepthGatingOutputs:
        """All steps on inputs whose H, W are multiples of the output stride."""
        loops = self.num_loops if num_loops is None else int(num_loops)
        sensor = None
        if self.uses_depth() and (depth is not None or self.requires_depth()):
            if depth is None:
                raise ValueError(f'gating_source={self.config.gating_source!r} needs depth')
            depth_m = depth[:, :1].float() * self.config.depth_max_m
            focal_t = self._focal(K, rgb.shape[0], rgb)
            sensor = sensor_bin_probs(depth_m, focal_t, self.edges_fz, self.output_stride)
        size = rgb.shape[-2:]
        res6 = self.res6(self.encoder(rgb)[-1])
        outs = [self._step(self.ff, res6, sensor)]
        for _ in range(loops):
            feat = outs[-1][0]
            outs.append(self._step(self.loop, self.loop_in(torch.cat([res6, feat], 1)), sensor))
        step_logits = tuple(o[1] for o in outs)
        return DepthGatingOutputs(
            logits=tuple(
                F.interpolate(s, size=size, mode='bilinear', align_corners=False)
                for s in step_logits
            ),
            step_logits=step_logits,
            bin_logits=tuple(o[2] for o in outs if o[2] is not None),
            log_depth=tuple(o[3] for o in outs if o[3] is not None),
            gates=tuple(o[4] for o in outs if o[4] is not None),
        )

    def forward_padded(  # type: ignore[override]  # takes K third: needs_intrinsics
        self, rgb: Tensor, depth: Tensor | None, K: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...], DepthPredictions | None]:
        outs = self.forward_all(rgb, depth, K)
        aux = tuple(outs.step_logits[:-1])
        predictions = (
            DepthPredictions(outs.bin_logits, outs.log_depth, self.edges_fz)
            if self.predicts_depth()
            else None
        )
        return outs.logits[-1], aux, predictions

    @property
    def aux_weights(self) -> tuple[float, ...]:  # type: ignore[override]  # from the config
        return (self.config.ff_aux_weight,) + (self.config.loop_aux_weight,) * self.num_loops

    @torch.no_grad()
    def predict_depth(
        self, rgb: Tensor, depth: Tensor | None = None, K: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(metric depth [B,1,H,W] from the last step's log-depth head, bin index [B,H,W]) at
        input size; for diagnostics topics and depth-dropout fallbacks. Meaningful once the
        depth branch was trained with the depth losses (``loss.depth_bin_weight``,
        ``loss.depth_reg_weight`` of a training recipe)."""
        if not self.predicts_depth():
            raise ConfigError("gating_source='none' (the baseline) has no depth branch")
        rgb_p, depth_p, h, w = self.pad_inputs(rgb, depth, K)
        assert rgb_p is not None  # this backend reads rgb: pad_inputs refused None
        outs = self.forward_all(rgb_p, depth_p, K)
        size = outs.logits[-1].shape[-2:]
        d = torch.exp(F.interpolate(outs.log_depth[-1], size=size, mode='bilinear'))
        b = F.interpolate(outs.bin_logits[-1], size=size, mode='bilinear').argmax(1)
        return d[..., :h, :w], b[..., :h, :w]


def depth_bin_loss(
    bin_logits: Tensor,
    depth_m: Tensor,
    focal: Tensor,
    edges_fz: Sequence[float],
) -> Tensor:
    """Kong's 5-way depth classification loss at full resolution (logits upsampled), holes
    ignored. ``depth_m [B,1,H,W]`` metres (0 = invalid), ``focal [B]`` pixels."""
    probs, valid = sensor_bin_probs(depth_m, focal, edges_fz, 1)
    target = probs.argmax(1).masked_fill(~valid[:, 0], -100)
    logits = F.interpolate(
        bin_logits, size=depth_m.shape[-2:], mode='bilinear', align_corners=False
    )
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=-100)


def log_depth_loss(log_depth: Tensor, depth_m: Tensor) -> Tensor:
    """Kong's depth regression: mean squared log error over valid pixels at full resolution."""
    pred = F.interpolate(log_depth, size=depth_m.shape[-2:], mode='bilinear', align_corners=False)
    valid = depth_m > 0
    if not bool(valid.any()):
        return pred.sum() * 0.0
    diff = (pred - torch.log(depth_m.clamp_min(1e-6)))[valid]
    return (diff * diff).mean()
