"""Forward contract shared by every backend: any input size in, logits at input size out.

Every backend is an ``nn.Module`` built as ``cls(num_classes, config)`` and called as
``forward(rgb, depth, K=None)``:

* ``rgb``: ``Tensor[B,3,H,W]`` (normalised colour), or None for a backend that does not read
  colour (:meth:`SegBackend.uses_rgb`);
* ``depth``: ``Tensor[B,depth_channels,H,W]`` (the checkpoint's depth encoding), or None for a
  backend that does not read depth (:meth:`SegBackend.uses_depth`) or reads it only when
  present (:meth:`SegBackend.requires_depth`);
* ``K``: ``Tensor[B,3,3]``, float, one pinhole camera matrix per batch item, in pixels of
  *this* input (a caller that resized the camera image by ``s`` scales the first two rows of
  the camera's K by ``s``), on the inputs' device. Always batched, even for B = 1, so that it
  travels with the batch like the images do. Backends whose class sets ``needs_intrinsics``
  read it (today ``depth_gating``, whose depth bins depend on the focal length); they fall
  back to a configured focal length when K is None. Every other backend ignores it (its shape
  is still checked), so a caller may pass it to any backend; callers feed it where
  :func:`needs_intrinsics` says so.

A backend names its ImageNet-initialisable trunks by input stream (``modes.ENCODER_STREAMS``:
``'rgb'``, ``'depth'``) in :meth:`SegBackend.encoder_streams`; the trainer loads a recipe's
encoder weight files into them (``backends.pretrained``), so one recipe line serves every
backend.

The backend pads the inputs at the bottom and right to its ``pad_multiple`` (K needs no change:
the principal point stays where it was), runs, and crops back, so callers never care about
divisibility. In ``eval()`` mode it returns the logits ``Tensor[B,num_classes,H,W]``; in
``train()`` mode it returns a :class:`SegOutput` that also carries the auxiliary logits (each
at its own, un-upsampled resolution, cropped to the part that covers the real image) and their
loss weights.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple, Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from rgbd_seg_ros.backends.encoder_base import Encoder
from rgbd_seg_ros.modes import EncoderStream


class DepthPredictions(NamedTuple):
    """A depth branch's outputs, one entry per prediction step (a recurrent backend predicts
    depth at every unroll), each at its own stride and cropped like the auxiliary logits.

    The bins are apparent-size bins: a pixel of depth ``Z`` seen with focal length ``f`` falls
    in bin ``i`` when ``f / Z`` lies between edges ``i - 1`` and ``i`` (bin 0 is the farthest),
    so the targets depend on the camera; the edges travel with the predictions because they
    are the backend's own (``doc/backends/depth_gating.md §3.2``).
    """

    bin_logits: tuple[Tensor, ...]  # [B, len(bin_edges_fz) + 1, h, w] per step
    log_depth: tuple[Tensor, ...]  # [B, 1, h, w] per step, natural log of metres
    bin_edges_fz: tuple[float, ...]  # ascending f/Z edges, pixels per metre


class SegOutput(NamedTuple):
    """What a backend returns in training mode."""

    logits: Tensor  # [B, K, H, W] at input size
    aux: tuple[Tensor, ...] = ()  # auxiliary logits, each [B, K, h_i, w_i] at its own stride
    aux_weights: tuple[float, ...] = ()  # loss weight of each auxiliary output
    depth: DepthPredictions | None = None  # the depth branch, when the backend has one


# What ``forward_padded`` returns: (logits, aux) or, from a backend with a depth branch,
# (logits, aux, depth predictions), everything at the padded size.
PaddedOutput = (
    tuple[Tensor, tuple[Tensor, ...]] | tuple[Tensor, tuple[Tensor, ...], DepthPredictions | None]
)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad ``x`` at the bottom and right so that H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def crop_aux(aux: Tensor, height: int, width: int, padded_height: int) -> Tensor:
    """Crop an auxiliary map of a padded input to the cells that cover the real image.

    The map's stride is ``padded_height / aux.shape[-2]``; the kept part is
    ``ceil(height / stride) x ceil(width / stride)`` cells, so a bilinear upsampling of it to
    ``height x width`` in the loss is aligned to within one cell.
    """
    stride = padded_height // aux.shape[-2]
    return aux[..., : math.ceil(height / stride), : math.ceil(width / stride)]


class BackendConfig(Protocol):
    """What the base class reads of a backend's config dataclass."""

    depth_channels: int


class SegBackend(nn.Module):
    """Base class: input checks, padding to the stride and cropping back.

    Subclasses set ``num_classes``, ``config``, ``output_stride`` and ``pad_multiple`` and
    implement :meth:`forward_padded`, which sees inputs whose H and W are multiples of
    ``pad_multiple`` and returns ``(logits, aux)`` at the padded size, or ``(logits, aux,
    depth)`` when the backend has a depth branch (:meth:`predicts_depth`). A subclass that sets
    ``needs_intrinsics = True`` receives K as a third argument, ``forward_padded(rgb, depth,
    K)``; the others are called with ``(rgb, depth)`` only, so they never see K.
    """

    num_classes: int
    config: BackendConfig
    output_stride: int
    pad_multiple: int
    aux_weights: tuple[float, ...] = ()
    # Whether forward reads K (see the module doc). A class attribute, so exporters and callers
    # can decide what to feed before any frame arrives.
    needs_intrinsics: ClassVar[bool] = False

    def forward_padded(self, rgb: Tensor | None, depth: Tensor | None) -> PaddedOutput:
        raise NotImplementedError

    def encoder_streams(self) -> dict[EncoderStream, Encoder]:
        """The encoders that an ImageNet file initialises, by the stream they read. Every
        backend built on an ImageNet trunk overrides this; the base has none."""
        return {}

    def uses_rgb(self) -> bool:
        """Whether forward reads the rgb tensor (unimodal depth backends do not)."""
        return True

    def uses_depth(self) -> bool:
        """Whether forward reads the depth tensor."""
        return True

    def requires_depth(self) -> bool:
        """Whether forward fails without depth; a backend that falls back to its own depth
        estimate when the frame has none (``depth_gating`` with hybrid gating) says False."""
        return self.uses_depth()

    def predicts_depth(self) -> bool:
        """Whether training-mode outputs carry :class:`DepthPredictions` (a depth branch that
        a training loop can supervise with the sensor's depth)."""
        return False

    def _check(
        self, rgb: Tensor | None, depth: Tensor | None, K: Tensor | None = None
    ) -> tuple[int, int, int]:
        ref = rgb if rgb is not None else depth
        if ref is None:
            raise ValueError('forward needs at least one of rgb and depth')
        if self.uses_rgb():
            if rgb is None or rgb.dim() != 4 or rgb.shape[1] != 3:
                shape = None if rgb is None else tuple(rgb.shape)
                raise ValueError(f'rgb must be [B,3,H,W], got {shape}')
            ref = rgb
        if self.uses_depth() and (depth is not None or self.requires_depth()):
            want = self.config.depth_channels
            if depth is None or depth.dim() != 4 or depth.shape[1] != want:
                shape = None if depth is None else tuple(depth.shape)
                raise ValueError(f'depth must be [B,{want},H,W], got {shape}')
            if self.uses_rgb() and rgb is not None and depth.shape[-2:] != rgb.shape[-2:]:
                raise ValueError(
                    f'rgb {tuple(rgb.shape[-2:])} and depth {tuple(depth.shape[-2:])} sizes differ'
                )
            if not self.uses_rgb():
                ref = depth
        if K is not None and (K.dim() != 3 or tuple(K.shape) != (ref.shape[0], 3, 3)):
            raise ValueError(f'K must be [B,3,3] with B = {ref.shape[0]}, got {tuple(K.shape)}')
        return ref.shape[0], ref.shape[-2], ref.shape[-1]

    def pad_inputs(
        self, rgb: Tensor | None, depth: Tensor | None, K: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None, int, int]:
        """Check the inputs and pad the ones this backend reads to ``pad_multiple``.

        Returns ``(rgb, depth, H, W)``: the padded tensors (None where not read or not given)
        and the input size to crop back to.
        """
        _, h, w = self._check(rgb, depth, K)
        m = self.pad_multiple
        rgb_p = pad_to_multiple(rgb, m) if (rgb is not None and self.uses_rgb()) else None
        depth_p = pad_to_multiple(depth, m) if (depth is not None and self.uses_depth()) else None
        return rgb_p, depth_p, h, w

    def forward(
        self, rgb: Tensor | None, depth: Tensor | None = None, K: Tensor | None = None
    ) -> Tensor | SegOutput:
        rgb_p, depth_p, h, w = self.pad_inputs(rgb, depth, K)
        if self.needs_intrinsics:
            # such a subclass's forward_padded takes K third (class doc); the base's does not
            result = self.forward_padded(rgb_p, depth_p, K)  # type: ignore[call-arg]
        else:
            result = self.forward_padded(rgb_p, depth_p)
        logits, aux = result[0], result[1]
        hp = logits.shape[-2]
        logits = logits[..., :h, :w]
        if not self.training:
            return logits
        aux = tuple(crop_aux(a, h, w, hp) for a in aux)
        depth_out = result[2] if len(result) > 2 else None
        if depth_out is not None:
            depth_out = DepthPredictions(
                tuple(crop_aux(b, h, w, hp) for b in depth_out.bin_logits),
                tuple(crop_aux(d, h, w, hp) for d in depth_out.log_depth),
                depth_out.bin_edges_fz,
            )
        return SegOutput(logits, aux, tuple(self.aux_weights[: len(aux)]), depth_out)


def needs_intrinsics(model: nn.Module) -> bool:
    """Whether ``forward`` of ``model`` reads K, i.e. a caller must feed it.

    Only a :class:`SegBackend` can declare that; any other module (a test double taking
    ``(rgb, depth)``) is called without K.
    """
    return isinstance(model, SegBackend) and model.needs_intrinsics


def runs_without_depth(model: nn.Module) -> bool:
    """Whether ``model`` segments a frame that has no valid depth (it reads none, or gates
    with its own depth estimate where the sensor has none): a node keeps publishing when depth
    drops out. Only a :class:`SegBackend` can declare that."""
    return isinstance(model, SegBackend) and not model.requires_depth()


def init_weights(module: nn.Module, bias: float = 0.0) -> None:
    """He (fan-in, ReLU) init for the convolutions of newly created layers; BN to (1, 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
            if m.bias is not None:
                nn.init.constant_(m.bias, bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm below ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def count_parameters(module: nn.Module, with_bn_stats: bool = False) -> int:
    """Trainable-tensor element count; with BN running mean/var too (as TF variables count)."""
    total = sum(p.numel() for p in module.parameters())
    if with_bn_stats:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None  # BatchNorm tracks both or neither
                total += m.running_mean.numel() + m.running_var.numel()
    return total


__all__ = [
    'DepthPredictions',
    'PaddedOutput',
    'SegBackend',
    'SegOutput',
    'count_parameters',
    'crop_aux',
    'init_weights',
    'needs_intrinsics',
    'pad_to_multiple',
    'set_bn_momentum',
]
