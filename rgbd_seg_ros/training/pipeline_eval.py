"""Scoring a model exactly the way the segmentation node runs it.

The node segments one frame at a time through the engine: colour and depth resized to the
network size, forward, the argmax labels resized to the camera size with nearest neighbour and
each output turned into its dataset label id (doc/design.md §2.6). ``rgbd-seg eval`` (by
default) and the trainer node's quality gate score that pipeline with
:func:`evaluate_engine`, so a figure printed by one is the figure the other acts on.

Scoring happens in the dataset's label-id space: ground-truth pixels of the dataset's classes
are the rows of the confusion matrix; a predicted id that is not one of them (a model trained
on another class list) is one extra column, "other", so it costs the true class a false
negative and is never a hit. Two models with different class lists are therefore compared on
the same footing. The metrics follow :mod:`rgbd_seg_ros.training.metrics`: mIoU is the mean
over the classes present in the ground truth of the frames scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rgbd_seg_ros.core.label_space import output_lut, to_outputs
from rgbd_seg_ros.data.layout import META_FILE, DatasetReader, FrameRecord
from rgbd_seg_ros.errors import DatasetError, EmptySplitError
from rgbd_seg_ros.inference.engine import Engine
from rgbd_seg_ros.training.metrics import SegMetrics, metrics_from_confusion

# Splits the gate prefers, in order: 'test' is never used to pick a checkpoint during training,
# 'val' is (best.safetensors), so it only stands in when a dataset has no labelled test frame.
HELD_OUT_SPLITS: tuple[str, ...] = ('test', 'val')


def labelled_records(
    reader: DatasetReader, split: str, max_frames: int | None = None
) -> list[FrameRecord]:
    """Frames of ``split`` that have labels, in stamp order (at most ``max_frames``)."""
    records = [r for r in reader.frames(split) if reader.has_labels(r.frame_id)]
    return records if max_frames is None else records[:max_frames]


def held_out_split(reader: DatasetReader) -> str:
    """The split the gate scores on: the first of :data:`HELD_OUT_SPLITS` with labelled frames;
    ``EmptySplitError`` when there is none."""
    for split in HELD_OUT_SPLITS:
        if labelled_records(reader, split, max_frames=1):
            return split
    raise EmptySplitError(
        f'{reader.root}: no labelled frame in {" or ".join(HELD_OUT_SPLITS)} (nothing held out)'
    )


class LabelIdConfusion:
    """Confusion matrix over a dataset's class ids, plus an "other" prediction column.

    Rows: ground-truth class (pixels with the ignore id, or any id that is no class, are
    skipped).
    Columns: predicted class, the last one for every predicted id that is no class.
    """

    def __init__(self, class_ids: Sequence[int]) -> None:
        if not class_ids:
            raise DatasetError('no classes to score')
        self.class_ids = list(class_ids)
        k = len(self.class_ids)
        self._rows = output_lut(self.class_ids, -1)  # no class (ignore id included): skipped
        self._cols = output_lut(self.class_ids, k)  # no class: the "other" column
        self.matrix = np.zeros((k + 1, k + 1), np.int64)  # last row stays 0: "other" has no GT

    def update(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Add one frame: label-id images of equal shape."""
        if predicted.shape != truth.shape:
            raise ValueError(f'prediction {predicted.shape} vs ground truth {truth.shape}')
        k = len(self.class_ids)
        rows = to_outputs(truth, self._rows, -1).reshape(-1)
        cols = to_outputs(predicted, self._cols, k).reshape(-1)
        valid = rows >= 0
        index = rows[valid] * (k + 1) + cols[valid]
        self.matrix += np.bincount(index, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)

    def compute(self) -> SegMetrics:
        """Metrics of the dataset's classes (the "other" column only as errors)."""
        full = metrics_from_confusion(torch.from_numpy(self.matrix))
        k = len(self.class_ids)
        return SegMetrics(
            miou=full.miou,
            pixel_acc=full.pixel_acc,
            mean_class_acc=full.mean_class_acc,
            iou=full.iou[:k],
            class_acc=full.class_acc[:k],
            pixels=full.pixels,
            in_gt=full.in_gt[:k],
        )


def evaluate_engine(
    engine: Engine,
    reader: DatasetReader,
    records: Sequence[FrameRecord],
    progress: Callable[[int, int], None] | None = None,
) -> SegMetrics:
    """Metrics of ``engine`` on ``records`` of ``reader``'s dataset, one frame at a time as
    the node runs it; ``progress(done, total)`` after each frame.

    ``DatasetError`` when the dataset lists no classes, ``EmptySplitError`` without frames.
    """
    meta = reader.meta
    if not meta.classes:
        raise DatasetError(f'{reader.root}: {META_FILE} lists no classes (nothing to score)')
    if not records:
        raise EmptySplitError(f'{reader.root}: no labelled frames to score')
    confusion = LabelIdConfusion(meta.class_ids)
    for done, record in enumerate(records, 1):
        sample = reader.load(record.frame_id)
        if sample.labels is None:
            raise DatasetError(f'{reader.root}: frame {record.frame_id} has no labels')
        prediction = engine.predict(sample.rgb, sample.depth_mm, record.K, outputs=('labels',))
        confusion.update(prediction.labels, sample.labels)
        if progress is not None:
            progress(done, len(records))
    return confusion.compute()
