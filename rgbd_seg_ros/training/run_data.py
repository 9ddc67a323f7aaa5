"""The datasets of a training run and what follows from them, read once before the first stage.

Every stage of a run trains on the same split, validates on the same split and weighs the
classes the same way, so these are built once and handed to each stage whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import torch

from rgbd_seg_ros.data.layout import DatasetMeta
from rgbd_seg_ros.errors import ConfigError, EmptySplitError
from rgbd_seg_ros.modes import DepthEncoding
from rgbd_seg_ros.training import distributed as dd
from rgbd_seg_ros.training.config import TrainConfig
from rgbd_seg_ros.training.dataset import (
    SegDataset,
    class_frequencies,
    median_frequency_weights,
)


class _SplitOptions(TypedDict):
    """What the training and the validation split are opened with alike."""

    depth_encoding: DepthEncoding
    depth_params: dict[str, Any]
    rgb_mean: tuple[float, ...]
    rgb_std: tuple[float, ...]
    seed: int


@dataclass(frozen=True)
class RunData:
    """Training and validation splits, the label conventions and the loss's class weights."""

    train_set: SegDataset
    val_set: SegDataset | None  # None: the split has no labelled frame; stages keep the last
    fixed_hw: tuple[int, int] | None  # the network's input size under the 'fixed' policy
    ignore_index: int  # among output indices (the loss's); the dataset's id is meta.ignore_index
    class_weights: torch.Tensor | None  # per class, for the loss; None: unweighted

    @property
    def meta(self) -> DatasetMeta:
        return self.train_set.meta

    @property
    def num_classes(self) -> int:
        return self.train_set.num_classes


def fixed_input_size(resolution: dict[str, Any] | None) -> tuple[int, int] | None:
    """(height, width) under the 'fixed' resolution policy, None under 'native'."""
    res = resolution or {'policy': 'native'}
    if res.get('policy') != 'fixed':
        return None
    return int(res['height']), int(res['width'])


def wants_depth_targets(config: TrainConfig) -> bool:
    """Whether a stage supervises a depth branch, so training samples carry metric depth."""
    for stage in config.stages:
        loss = config.stage_loss(stage)
        if loss.depth_bin_weight > 0 or loss.depth_reg_weight > 0:
            return True
    return False


def load_run_data(
    config: TrainConfig, dist: dd.DistContext, note: Callable[[str], None]
) -> RunData:
    """Open the splits of ``config.data``; a validation split without labelled frames is
    noted and the run goes on without validation, any other problem is raised."""
    c = config
    if not c.data.root:
        raise ConfigError('data.root: the dataset folder is required')
    fixed_hw = fixed_input_size(c.data.resolution)
    common: _SplitOptions = {
        'depth_encoding': c.data.depth_encoding,
        'depth_params': c.data.depth_params,
        'rgb_mean': tuple(c.data.rgb_mean),
        'rgb_std': tuple(c.data.rgb_std),
        'seed': c.seed,
    }
    train_set = SegDataset(
        c.data.root,
        c.data.train_split,
        augment=c.augment,
        out_hw=fixed_hw if c.augment.crop is None else None,
        max_frames=c.data.max_frames,
        depth_targets=wants_depth_targets(c),
        **common,
    )
    val_set = None
    try:
        val_set = SegDataset(
            c.data.root, c.data.val_split, augment=None, max_frames=c.data.max_frames, **common
        )
    except EmptySplitError as err:
        note(f'no validation ({err}); keeping the last weights')
    ignore_index = train_set.target_ignore if c.loss.ignore_index is None else c.loss.ignore_index
    return RunData(
        train_set,
        val_set,
        fixed_hw,
        ignore_index,
        _class_weights(c.data.class_weighting, train_set, dist),
    )


def _class_weights(
    weighting: str, train_set: SegDataset, dist: dd.DistContext
) -> torch.Tensor | None:
    """Rank 0 counts the labels, every rank gets its weights."""
    if weighting != 'median_frequency':
        return None
    weights = None
    if dist.is_main:
        weights = median_frequency_weights(*class_frequencies(train_set)).tolist()
    weights = dd.broadcast_object(dist, weights)
    return torch.tensor(weights, dtype=torch.float32)
