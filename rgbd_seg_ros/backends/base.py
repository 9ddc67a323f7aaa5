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


class SegOutput(NamedTuple):
    """What a backend returns in training mode."""

    logits: Tensor  # [B, K, H, W] at input size
    aux: tuple[Tensor, ...] = ()  # auxiliary logits, each [B, K, h_i, w_i] at its own stride
    aux_weights: tuple[float, ...] = ()  # loss weight of each auxiliary output


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
    ``pad_multiple`` and returns ``(logits, aux)`` at the padded size. A subclass that sets
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

    def forward_padded(
        self, rgb: Tensor | None, depth: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        raise NotImplementedError

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
            logits, aux = self.forward_padded(rgb_p, depth_p, K)  # type: ignore[call-arg]
        else:
            logits, aux = self.forward_padded(rgb_p, depth_p)
        hp = logits.shape[-2]
        logits = logits[..., :h, :w]
        if not self.training:
            return logits
        aux = tuple(crop_aux(a, h, w, hp) for a in aux)
        return SegOutput(logits, aux, tuple(self.aux_weights[: len(aux)]))


def needs_intrinsics(model: nn.Module) -> bool:
    """Whether ``forward`` of ``model`` reads K, i.e. a caller must feed it.

    Only a :class:`SegBackend` can declare that; any other module (a test double taking
    ``(rgb, depth)``) is called without K.
    """
    return isinstance(model, SegBackend) and model.needs_intrinsics


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
    'SegBackend',
    'SegOutput',
    'count_parameters',
    'crop_aux',
    'init_weights',
    'needs_intrinsics',
    'pad_to_multiple',
    'set_bn_momentum',
]
