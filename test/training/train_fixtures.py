"""Shared pieces of the training tests: a tiny backend and a tiny generated RGB-D dataset.

The dataset's classes need both modalities: class 1 (near box) and class 2 (far box) have the
same colour and differ only in depth; class 3 (disc) has its own colour at the wall's depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rgbd_seg_ros.backends import registry
from rgbd_seg_ros.backends.base import SegBackend

TINY = '_test_train_tiny'
CLASS_NAMES = ['wall', 'near_box', 'far_box', 'disc']
COLOURS = [(128, 128, 128), (200, 40, 40), (200, 40, 40), (40, 60, 200)]


@dataclass
class TinyConfig:
    encoder: str = 'tiny'
    depth_channels: int = 1
    width: int = 16
    aux_weight: float = 0.4
    dropout: float = 0.1


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyNet(SegBackend):
    """Two small streams (colour, depth) summed at stride 2, a decoder, an aux head."""

    encoder_prefixes = ('encoder_rgb', 'encoder_depth')

    def __init__(self, num_classes: int, config: TinyConfig) -> None:
        super().__init__()
        self.num_classes, self.config = num_classes, config
        self.output_stride = 2
        self.pad_multiple = 2
        w = config.width
        self.encoder_rgb = nn.Sequential(_block(3, w), _block(w, w, 2))
        self.encoder_depth = nn.Sequential(_block(config.depth_channels, w), _block(w, w, 2))
        self.decoder = nn.Sequential(_block(w, w), nn.Dropout2d(config.dropout))
        self.classifier = nn.Conv2d(w, num_classes, 1)
        self.aux_head = nn.Conv2d(w, num_classes, 1)
        self.aux_weights = (config.aux_weight,)

    def forward_padded(self, rgb, depth):
        x = self.encoder_rgb(rgb) + self.encoder_depth(depth)
        y = self.decoder(x)
        logits = F.interpolate(
            self.classifier(y), scale_factor=2, mode='bilinear', align_corners=False
        )
        return logits, (self.aux_head(x),)


def register(monkeypatch: object | None = None) -> None:
    """Register TinyNet. With a MonkeyPatch, in a copy of the registry that the patch undoes
    (registry-wide backend suites never see it); without, for good (spawned DDP workers)."""
    registry.list_backends()  # load the real backends first
    if monkeypatch is not None:
        monkeypatch.setattr(registry, '_REGISTRY', dict(registry._REGISTRY))
    registry.register_backend(TINY, TinyConfig, summary='test-only')(TinyNet)


def make_frame(rng: np.random.Generator, h: int = 48, w: int = 64):
    """rgb uint8, depth uint16 mm, labels uint8 of one random scene."""
    labels = np.zeros((h, w), np.uint8)
    depth = np.full((h, w), 4000.0, np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for cls, d in ((2, 2500.0), (1, 1000.0)):  # far box first, near box may occlude it
        bh, bw = rng.integers(10, 20), rng.integers(12, 24)
        y0, x0 = rng.integers(0, h - bh), rng.integers(0, w - bw)
        labels[y0 : y0 + bh, x0 : x0 + bw] = cls
        depth[y0 : y0 + bh, x0 : x0 + bw] = d
    r = rng.integers(5, 10)
    cy, cx = rng.integers(r, h - r), rng.integers(r, w - r)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    labels[disc] = 3
    depth[disc] = 4000.0
    rgb = np.asarray(COLOURS, np.float32)[labels]
    rgb += rng.normal(0, 12, rgb.shape)
    depth += rng.normal(0, 30, depth.shape)
    depth[rng.random((h, w)) < 0.02] = 0  # a few invalid pixels
    labels[rng.random((h, w)) < 0.01] = 255  # a few unlabelled pixels
    return (
        np.clip(rgb, 0, 255).astype(np.uint8),
        np.clip(depth, 0, 65535).astype(np.uint16),
        labels,
    )


def write_dataset(
    root: Path,
    n_train: int = 24,
    n_val: int = 8,
    seed: int = 0,
    h: int = 48,
    w: int = 64,
    first_id: int = 0,
    ignore_index: int = 255,
) -> Path:
    """The generated dataset; its classes carry label ids ``first_id`` .. ``first_id + 3``
    (unlabelled pixels: ``ignore_index``)."""
    from rgbd_seg_ros.data.layout import ClassInfo, DatasetMeta, DatasetWriter, FrameRecord

    meta = DatasetMeta(
        classes=[
            ClassInfo(first_id + i, n, c)
            for i, (n, c) in enumerate(zip(CLASS_NAMES, COLOURS, strict=True))
        ],
        ignore_index=ignore_index,
        provenance={'generator': 'test/training/train_fixtures.py'},
    )
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, meta, resume=False, fsync=False) as writer:
        for i in range(n_train + n_val):
            split = 'train' if i < n_train else 'val'
            rgb, depth, labels = make_frame(rng, h, w)
            labels = np.where(labels == 255, ignore_index, labels + first_id).astype(np.uint8)
            record = FrameRecord(
                f'f{i:04d}',
                1000 * i,
                split,
                'synthetic',
                '',
                w,
                h,
                50.0,
                50.0,
                w / 2 - 0.5,
                h / 2 - 0.5,
            )
            writer.write_frame(record, rgb, depth, labels)
    return root


def tiny_overrides(root: Path, out: Path, steps: int = 40, **extra) -> list[str]:
    """Overrides on the tiny_cpu recipe pointing at the test backend and dataset."""
    values = {
        'model.backend': TINY,
        'model.options': '{}',
        'model.encoder_prefixes': '[]',
        'data.root': str(root),
        'data.num_workers': 0,
        'data.depth_encoding': 'metric',
        'data.depth_params': '{max_depth_m: 5.0}',
        'output_dir': str(out),
        'progress_bar': 'false',
        'stages': f'[{{name: train, steps: {steps}, batch_size: 4}}]',
        'eval.every_steps': 0,
        'eval.multiscale_at_end': 'false',
        'checkpoint_every': 0,
        'augment.crop': '[40, 56]',
    }
    values.update(extra)
    return [f'{k}={v}' for k, v in values.items()]


def state_allclose(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6
) -> bool:
    return set(a) == set(b) and all(
        torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=1e-5) for k in a
    )
