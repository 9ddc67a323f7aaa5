"""A backend whose logits are a known function of depth, to check the engine end to end.

With the 'metric' depth encoding (x = depth / max_depth) its three logits are
``[0, 10x - 1, 20x - 4]``, so the argmax is class 0 below 1 m, class 1 between 1 m and 3 m and
class 2 beyond 3 m (max_depth 10 m). Extra classes get a constant -100 logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rgbd_seg_ros.backends import registry
from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec, save_checkpoint

NAME = '_test_depth_bins'


@dataclass
class DepthBinsConfig:
    encoder: str = 'none'
    depth_channels: int = 1


class DepthBins(nn.Module):
    """Linear function of the encoded depth; ignores colour."""

    output_stride = 1

    def __init__(self, num_classes: int, config: DepthBinsConfig) -> None:
        super().__init__()
        self.num_classes, self.config = num_classes, config
        self.head = nn.Conv2d(1, num_classes, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.fill_(-100.0)
            self.head.weight[:3, 0, 0, 0] = torch.tensor([0.0, 10.0, 20.0])
            self.head.bias[:3] = torch.tensor([0.0, -1.0, -4.0])

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return self.head(depth)


def register(monkeypatch) -> None:
    """Register DepthBins in a per-test copy of the registry, so registry-wide suites never
    see this test-only backend."""
    registry.list_backends()  # load the real backends first
    monkeypatch.setattr(registry, '_REGISTRY', dict(registry._REGISTRY))
    registry.register_backend(NAME, DepthBinsConfig, summary='test-only')(DepthBins)


def expected_labels(depth_m):
    """Ground truth of DepthBins for metric depth in metres (invalid depth encodes as 0)."""
    import numpy as np

    x = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m, 0.0) / 10.0
    logits = np.stack([np.zeros_like(x), 10 * x - 1, 20 * x - 4])
    return logits.argmax(0), logits


def near_a_boundary(depth_m, margin_m: float):
    """Pixels within ``margin_m`` of a label boundary (1 m, 3 m): half precision may round
    their near-tied logits either way."""
    import numpy as np

    d = np.nan_to_num(depth_m, nan=0.0, posinf=0.0)
    return (np.abs(d - 1.0) < margin_m) | (np.abs(d - 3.0) < margin_m)


def write_checkpoint(path, num_classes: int = 3, resolution=None) -> CheckpointMeta:
    meta = CheckpointMeta(
        backend=NAME,
        config={'encoder': 'none', 'depth_channels': 1},
        class_names=[f'class_{i}' for i in range(num_classes)],
        input_spec=InputSpec(
            depth_encoding='metric',
            depth_params={'max_depth_m': 10.0},
            resolution=resolution or {'policy': 'native'},
        ),
        provenance={'made_by': 'test'},
    )
    save_checkpoint(path, DepthBins(num_classes, DepthBinsConfig()), meta)
    return meta
