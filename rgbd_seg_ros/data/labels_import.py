"""Bring annotated label images back into a dataset (``rgbd-seg import-labels``).

The annotation round trip for recordings without labels: ``bag2dataset`` exports the frames
(``rgb/<frame_id>.png``), an annotation tool produces one PNG per frame named
``<frame_id>.png`` (optionally ``<frame_id><suffix>.png``), and this module checks and copies
them to ``labels/<frame_id>.png``.

Accepted label PNGs: single-channel 8- or 16-bit class ids, or colour PNGs whose colours are
the dataset palette (``palette`` mode; ``auto`` picks by channel count). Each file must match
its frame's size and use only class ids of the dataset (or the ignore index); ``unknown='ignore'``
turns unknown ids / colours into the ignore index instead of rejecting the file.

File names are only ever *looked up* in the index: the written path is built from the frame id
stored there, never from the annotation file name.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from rgbd_seg_ros.core.atomic_files import atomic_write_bytes
from rgbd_seg_ros.data import layout
from rgbd_seg_ros.data.dataset_lock import DatasetLock
from rgbd_seg_ros.data.layout import ClassInfo, DatasetMeta, DatasetReader
from rgbd_seg_ros.errors import ConfigError, DatasetError


def _to_ids(image: np.ndarray, meta: DatasetMeta, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Label ids and a mask of pixels whose colour is not in the palette (palette mode)."""
    if image.ndim == 2:
        if mode == 'palette':
            raise DatasetError('single-channel PNG given in palette mode')
        return image, np.zeros(image.shape, bool)
    if mode == 'ids':
        raise DatasetError(f'{image.shape[2]}-channel PNG given where class ids are expected')
    rgb = image[:, :, :3].astype(np.int64)
    codes = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    ids = np.full(codes.shape, meta.ignore_index, np.int64)
    known = np.zeros(codes.shape, bool)
    for c in meta.classes:
        hit = codes == ((c.color[0] << 16) | (c.color[1] << 8) | c.color[2])
        ids[hit] = c.id
        known |= hit
    return ids, ~known


def import_labels(
    root: str | os.PathLike,
    source: str | os.PathLike,
    *,
    suffix: str = '',
    mode: str = 'auto',
    unknown: str = 'error',
    overwrite: bool = False,
    classes: list[ClassInfo] | None = None,
    ignore_index: int | None = None,
) -> dict:
    """Import the label PNGs in ``source`` into the dataset at ``root``; returns a report."""
    if mode not in ('auto', 'ids', 'palette'):
        raise ConfigError(f'mode must be auto, ids or palette, got {mode!r}')
    if unknown not in ('error', 'ignore'):
        raise ConfigError(f'unknown must be error or ignore, got {unknown!r}')
    root, source = Path(root), Path(source)
    if not source.is_dir():
        raise DatasetError(f'{source} is not a folder of label PNGs')
    with DatasetLock(root):
        return _import_locked(
            root, source, suffix, mode, unknown, overwrite, classes, ignore_index
        )


def _import_locked(
    root: Path,
    source: Path,
    suffix: str,
    mode: str,
    unknown: str,
    overwrite: bool,
    classes: list[ClassInfo] | None,
    ignore_index: int | None,
) -> dict:
    reader = DatasetReader(root)
    meta = reader.meta
    if classes is not None:
        has_labels = any(reader.has_labels(r.frame_id) for r in reader.frames())
        new_meta = DatasetMeta(
            classes=classes,
            ignore_index=meta.ignore_index if ignore_index is None else ignore_index,
            provenance=meta.provenance,
        )
        if has_labels and (
            new_meta.classes != meta.classes or new_meta.ignore_index != meta.ignore_index
        ):
            raise DatasetError(
                f'{root} already has labels with other classes; refusing to change them'
            )
        new_meta.save(root / layout.META_FILE)
        meta = new_meta
    if not meta.classes:
        raise DatasetError(f'{root}/dataset.yaml lists no classes; give them with --classes')
    valid = np.zeros(65536, bool)
    valid[[c.id for c in meta.classes]] = True
    valid[meta.ignore_index] = True
    records = {r.frame_id: r for r in reader.frames()}
    counts: Counter = Counter()
    problems: list[str] = []
    unknown_pixels = 0
    files = sorted(p for p in source.iterdir() if p.suffix.lower() == '.png' and p.is_file())

    def reject(reason: str, name: str, detail: str) -> None:
        counts[reason] += 1
        if len(problems) < 20:
            problems.append(f'{name}: {detail}')

    for path in files:
        stem = path.name[: -len(path.suffix)]
        if suffix and stem.endswith(suffix):
            stem = stem[: -len(suffix)]
        record = records.get(stem)
        if record is None:
            reject('no_such_frame', path.name, 'no frame with this id in the index')
            continue
        target = layout.frame_paths(root, record.frame_id)[layout.LABELS_DIR]
        if target.exists() and not overwrite:
            reject('already_labelled', path.name, 'frame has labels (use --overwrite)')
            continue
        try:
            image = layout.read_png(path)
            ids, off_palette = _to_ids(image, meta, mode)
        except DatasetError as err:
            reject('unreadable', path.name, str(err))
            continue
        if ids.shape[:2] != (record.height, record.width):
            got = f'{ids.shape[1]}x{ids.shape[0]}'
            reject('size_mismatch', path.name, f'{got}, frame is {record.width}x{record.height}')
            continue
        ids = ids.astype(np.int64)
        bad = off_palette | ~valid[np.clip(ids, 0, 65535)] | (ids < 0) | (ids > 65535)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            if unknown == 'error':
                found = sorted({int(i) for i in np.unique(ids[bad])})[:10]
                what = (
                    'colours not in the palette' if off_palette.any() else f'unknown ids {found}'
                )
                reject('unknown_ids', path.name, f'{n_bad} pixels with {what}')
                continue
            ids[bad] = meta.ignore_index
            unknown_pixels += n_bad
        dtype = np.uint8 if ids.max(initial=0) <= 255 and meta.ignore_index <= 255 else np.uint16
        target.parent.mkdir(exist_ok=True)
        atomic_write_bytes(target, layout.encode_png(ids.astype(dtype)))
        counts['imported'] += 1
    unlabelled = sum(1 for r in records.values() if not reader.has_labels(r.frame_id))
    return {
        'dataset': str(root),
        'source': str(source),
        'files': len(files),
        'imported': counts.pop('imported', 0),
        'rejected': dict(counts),
        'problems': problems,
        'unknown_pixels_set_to_ignore': unknown_pixels,
        'frames_without_labels': unlabelled,
    }


def format_import_report(report: dict) -> str:
    lines = [
        f'{report["imported"]} of {report["files"]} label file(s) imported into '
        f'{report["dataset"]}; {report["frames_without_labels"]} frame(s) still without labels'
    ]
    for reason, n in report['rejected'].items():
        lines.append(f'  rejected ({reason}): {n}')
    lines.extend(f'    {p}' for p in report['problems'])
    if report['unknown_pixels_set_to_ignore']:
        lines.append(f'  pixels set to ignore: {report["unknown_pixels_set_to_ignore"]}')
    return '\n'.join(lines)
