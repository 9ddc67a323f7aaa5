"""The dataset layout (``rgbd_seg_ros.data.layout``) as a torch Dataset, and its samplers.

Each item is a dict of tensors: ``rgb`` (3xHxW float32, normalised with the input spec's mean
and std), ``depth`` (CxHxW float32, the backend's depth encoding via ``encode_depth_numpy``),
``labels`` (HxW int64 output indices: the classes' ids in ascending order become 0..K-1, the
ignore id and ids outside the class list become ``target_ignore``), ``K`` (3x3 float32, the
camera of the network input, see below) and ``index``; with ``depth_targets`` also ``depth_m``
(1xHxW float32 metres at the labels' resolution, 0 = invalid), the target of a backend's depth
branch.

``K`` follows every resize, crop and flip. Under ``depth_follows_scale`` the random zoom ``s``
is already in the depth values (divided by ``s``: the camera moved closer), so ``K``'s focal
lengths leave it out; ``f / Z`` then measures apparent size the way it does on a real frame,
which is what depth-aware gating bins on (otherwise the zoom would count twice).

Training randomness is reproducible and independent of worker count: the batch sampler yields
``(frame index, stream position)`` pairs and each sample's augmentation draws from a generator
seeded with ``(seed, position)``. The sampler walks an endless stream made of one permutation
of the split per epoch, so a run resumed at step ``k`` sees exactly the batches it would have
seen (``start_step=k``). Under DDP each rank takes its own slice of every global batch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from rgbd_seg_ros.core.label_space import output_lut, target_ignore, to_outputs
from rgbd_seg_ros.core.parent_death import die_with_parent
from rgbd_seg_ros.data.layout import META_FILE
from rgbd_seg_ros.errors import DatasetError, EmptySplitError
from rgbd_seg_ros.modes import DepthEncoding
from rgbd_seg_ros.training.augment import Frame, augment_frame, resize_frame
from rgbd_seg_ros.training.config import AugmentConfig


class SegDataset(Dataset):
    """Frames of one split that have labels (``EmptySplitError`` when it has none)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        depth_encoding: DepthEncoding,
        depth_params: dict[str, Any] | None = None,
        rgb_mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        rgb_std: tuple[float, ...] = (0.229, 0.224, 0.225),
        augment: AugmentConfig | None = None,
        out_hw: tuple[int, int] | None = None,
        seed: int = 0,
        max_frames: int | None = None,
        class_ids: list[int] | None = None,
        depth_targets: bool = False,
    ) -> None:
        from rgbd_seg_ros.core.depth import resolve_depth_params
        from rgbd_seg_ros.data.layout import DatasetReader

        self.root = Path(root)
        self.reader = DatasetReader(self.root)
        self.meta = self.reader.meta
        self.split = split
        self.records = [r for r in self.reader.frames(split) if self.reader.has_labels(r.frame_id)]
        if max_frames is not None:
            self.records = self.records[:max_frames]
        if not self.records:
            raise EmptySplitError(f'{self.root}: no labelled frames in split {split!r}')
        self.ignore_index = int(self.meta.ignore_index)
        # The outputs: the dataset's classes, or the ids of a model being evaluated.
        self.class_ids = list(self.meta.class_ids if class_ids is None else class_ids)
        if not self.class_ids:
            raise DatasetError(
                f'{self.root}: {META_FILE} lists no classes (nothing to train or score)'
            )
        self.num_classes = len(self.class_ids)
        # What unlabelled pixels are among output indices (the loss and metrics skip it).
        self.target_ignore = target_ignore(self.ignore_index, self.num_classes)
        self._lut = output_lut(self.class_ids, self.target_ignore)
        # Only the dataset's classes are ground truth, whatever else a model knows.
        foreign = sorted(set(self.class_ids) - set(self.meta.class_ids))
        self._lut[foreign] = self.target_ignore
        self.depth_encoding = depth_encoding
        self.depth_params = resolve_depth_params(depth_encoding, depth_params)
        self.mean = np.asarray(rgb_mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(rgb_std, np.float32) * 255.0)
        self.augment = augment if augment is not None and augment.enabled else None
        self.out_hw = (out_hw[0], out_hw[1]) if out_hw else None
        self.seed = seed
        self.depth_targets = depth_targets

    def __len__(self) -> int:
        return len(self.records)

    def load_frame(self, index: int) -> Frame:
        from rgbd_seg_ros.core.depth import depth_to_metres

        sample = self.reader.load(self.records[index].frame_id)
        labels = sample.labels
        if labels is not None and labels.dtype not in (np.uint8, np.uint16):
            labels = labels.astype(np.uint16)
        return Frame(sample.rgb, depth_to_metres(sample.depth_mm), labels, sample.record.K)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, position = item if isinstance(item, tuple) else (item, None)
        frame = self.load_frame(index)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, index if position is None else position])
            frame = augment_frame(frame, self.augment, rng, self.ignore_index, self.out_hw)
        elif self.out_hw is not None:
            frame = resize_frame(frame, self.out_hw, self.ignore_index)
        return self.to_tensors(frame, index)

    def outputs_of(self, labels: np.ndarray) -> np.ndarray:
        """int64 output index per pixel; ids that are not among ``class_ids`` are ignored."""
        return to_outputs(labels, self._lut, self.target_ignore)

    def to_tensors(self, frame: Frame, index: int) -> dict[str, torch.Tensor]:
        from rgbd_seg_ros.core.depth import encode_depth_numpy

        rgb = (frame.rgb.astype(np.float32) - self.mean) * self.inv_std
        depth = encode_depth_numpy(frame.depth_m, frame.K, self.depth_encoding, self.depth_params)
        assert frame.labels is not None  # the split holds labelled frames only
        labels = self.outputs_of(frame.labels)
        K = frame.K.astype(np.float64, copy=True)
        K[:2, :2] /= frame.depth_zoom  # the zoom is in the depth values already
        item = {
            'rgb': torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            'depth': torch.from_numpy(np.ascontiguousarray(depth)),
            'labels': torch.from_numpy(labels),
            'K': torch.from_numpy(K.astype(np.float32)),
            'index': torch.tensor(index),
        }
        if self.depth_targets:
            item['depth_m'] = torch.from_numpy(
                np.ascontiguousarray(frame.depth_m, dtype=np.float32)[None]
            )
        return item


def class_frequencies(dataset: SegDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per class: labelled pixel count, and pixel count of the images containing the class."""
    k = dataset.num_classes
    counts = np.zeros(k, np.int64)
    image_pixels = np.zeros(k, np.int64)
    for record in dataset.records:
        labels = dataset.reader.load(record.frame_id).labels
        assert labels is not None  # the split holds labelled frames only
        flat = dataset.outputs_of(labels).reshape(-1)
        hist = np.bincount(flat[(flat >= 0) & (flat < k)], minlength=k)[:k]
        counts += hist
        image_pixels[hist > 0] += flat.size
    return counts, image_pixels


def median_frequency_weights(counts: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """Eigen & Fergus median-frequency balancing: w_c = median(f) / f_c,
    f_c = pixels of c / pixels of the images where c appears. Absent classes get weight 0."""
    present = counts > 0
    weights = np.zeros(len(counts), np.float32)
    if not present.any():
        return weights
    freq = counts[present] / image_pixels[present]
    weights[present] = np.median(freq) / freq
    return weights


class StreamBatchSampler(Sampler):
    """Endless, resumable, rank-sharded batches of ``(index, stream position)`` pairs.

    The global stream is one seeded permutation of ``range(n)`` per epoch, concatenated. Step
    ``k`` covers positions ``[k*B*W, (k+1)*B*W)``; rank ``r`` takes the ``r``-th block of ``B``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self._perms: dict[int, np.ndarray] = {}

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, 7919, epoch]).permutation(self.n)
            self._perms = {epoch: perm}
        return int(perm[offset])

    def epoch_of(self, step: int) -> int:
        return step * self.batch_size * self.world_size // self.n

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            first = (step * self.world_size + self.rank) * self.batch_size
            yield [(self._index(p), p) for p in range(first, first + self.batch_size)]
            step += 1


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Evaluation shard of a rank: every index exactly once over all ranks (no padding)."""
    return list(range(rank, n, world_size))


def worker_init(_: int, parent_pid: int | None = None) -> None:
    """Data-loader workers: one thread each for torch and OpenCV; with ``parent_pid`` they die
    with that process (a killed training job does not leave its loaders behind)."""
    import cv2

    if parent_pid is not None:
        die_with_parent(parent_pid)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def loader_worker_init() -> Callable[[int], None]:
    """``worker_init_fn`` for a loader iterated by this process: its workers die with it."""
    return functools.partial(worker_init, parent_pid=os.getpid())
