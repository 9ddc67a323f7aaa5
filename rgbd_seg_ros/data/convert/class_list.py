"""The class list of a converted dataset without a given one: every label id in the dataset.

Without ``--classes`` the label ids that occur become classes named ``class_<id>``. They are
taken from the whole dataset, not from the frames one run wrote: a conversion killed before it
named its ids and then resumed (possibly with nothing left to write) still lists every id its
labels hold, so training never silently ignores a class (doc/design.md §4.1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rgbd_seg_ros.core.palette import default_palette
from rgbd_seg_ros.data import layout
from rgbd_seg_ros.data.convert.report import ConversionReport
from rgbd_seg_ros.data.layout import ClassInfo, DatasetMeta


def label_ids_on_disk(root: Path, ignore_index: int) -> set[int]:
    """Label ids in the label images of every finished frame (index and journals)."""
    ids: set[int] = set()
    for record in layout.read_all_records(root).values():
        path = layout.frame_paths(root, record.frame_id)[layout.LABELS_DIR]
        if path.is_file():
            labels = layout.read_png(path)
            ids.update(np.flatnonzero(np.bincount(labels.ravel())).tolist())
    ids.discard(ignore_index)
    return ids


def dataset_label_ids(root: Path, report: ConversionReport) -> set[int]:
    """Ids of the run's frames, plus those on disk when earlier runs wrote frames too."""
    ids = report.label_ids()
    if report.dataset_frames > report.totals.written:
        ids |= label_ids_on_disk(root, report.ignore_index)
    return ids


def name_label_ids(root: Path, meta: DatasetMeta, ids: set[int]) -> None:
    """Add ``class_<id>`` for every id in ``ids`` that ``meta`` lacks; save dataset.yaml."""
    new = sorted(ids - {c.id for c in meta.classes})
    if not new:
        return
    palette = default_palette(max(new) + 1)
    named = []
    for i in new:
        r, g, b = (int(c) for c in palette[i])
        named.append(ClassInfo(i, f'class_{i}', (r, g, b)))
    meta.classes = sorted([*meta.classes, *named], key=lambda c: c.id)
    meta.save(root / layout.META_FILE)
