"""A test backend whose logits are a known function of metric depth (for pseudo-labels).

Encoded depth x = depth_m / 10; logits ``[0, 10x - 1, 20x - 4]``: 'near' below 1 m, 'middle'
to 3 m, 'far' beyond.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec, save_checkpoint
from rgbd_seg_ros.backends.registry import list_backends, register_backend

NAME = '_test_bag2dataset_bins'


@dataclass
class BinsConfig:
    encoder: str = 'none'
    depth_channels: int = 1


class Bins(nn.Module):
    output_stride = 1

    def __init__(self, num_classes: int, config: BinsConfig) -> None:
        super().__init__()
        self.num_classes, self.config = num_classes, config
        self.head = nn.Conv2d(1, num_classes, 1)
        with torch.no_grad():
            self.head.weight[:, 0, 0, 0] = torch.tensor([0.0, 10.0, 20.0])
            self.head.bias[:] = torch.tensor([0.0, -1.0, -4.0])

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return self.head(depth)


if NAME not in list_backends():
    register_backend(NAME, BinsConfig, summary='test-only depth bins')(Bins)


def write_depth_bins_checkpoint(path) -> None:
    meta = CheckpointMeta(
        backend=NAME,
        config={'encoder': 'none', 'depth_channels': 1},
        class_names=['near', 'middle', 'far'],
        palette=[(255, 0, 0), (0, 255, 0), (0, 0, 255)],
        input_spec=InputSpec(depth_encoding='metric', depth_params={'max_depth_m': 10.0}),
        provenance={'made_by': 'test_bag2dataset'},
    )
    save_checkpoint(path, Bins(3, BinsConfig()), meta)
