"""Helpers shared by the backend tests (a plain module, so every test file can import it
under a unique name; ``conftest`` names collide across test folders)."""

from __future__ import annotations

import torch


def make_inputs(
    batch: int, height: int, width: int, depth_channels: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking rgb [B,3,H,W] and depth [B,C,H,W] float32 tensors."""
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.randn(batch, 3, height, width, generator=gen)
    depth = torch.rand(batch, depth_channels, height, width, generator=gen) * 4.0
    return rgb, depth


def make_K(batch: int, height: int, width: int, focal: float | None = None) -> torch.Tensor:
    """Camera matrices ``[B,3,3]`` of an input of ``height x width`` (the forward contract's K):
    focal ``focal`` (default: the width) for every item, principal point at the centre."""
    f = float(width if focal is None else focal)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    return K.expand(batch, 3, 3).contiguous()


def make_labels(
    batch: int, height: int, width: int, num_classes: int, ignore_index: int = 255, seed: int = 1
) -> torch.Tensor:
    """Random labels with about 10 % ignore pixels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch, height, width), generator=gen)
    labels[torch.rand(batch, height, width, generator=gen) < 0.1] = ignore_index
    return labels


def randomise_bn_statistics(model: torch.nn.Module, seed: int = 2) -> None:
    """Give every BatchNorm non-trivial running statistics (so round trips cover buffers)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
