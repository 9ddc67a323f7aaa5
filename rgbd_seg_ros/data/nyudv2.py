"""NYU Depth v2 (labelled part) -> the dataset layout (``rgbd-seg import-dataset nyudv2``).

Inputs (nothing is downloaded; give the paths of files you already have):

``nyu_depth_v2_labeled.mat``
    MATLAB v7.3 (HDF5), read with h5py. Datasets ``images`` [N, 3, W, H] uint8,
    ``depths`` [N, W, H] float32 metres, ``labels`` [N, W, H] uint16 (0 = unlabelled,
    1..894 = classes), optionally ``names`` (894 class names). MATLAB stores arrays
    column-major, so h5py sees them with the axes reversed: image i is
    ``images[i].transpose(2, 1, 0)`` -> H x W x 3.

splits (``--splits``, default ``splits.mat`` next to the data file)
    The official split: ``trainNdxs`` (795) and ``testNdxs`` (654), **1-based** frame numbers,
    in a .mat file (v5 or v7.3), or the same as YAML/JSON: ``{train: [1, 2, ...], test: [...]}``
    (also 1-based). Frames in neither list are skipped.

40-class mapping (``--mapping``, default ``classMapping40.mat`` next to the data file)
    ``mapClass``: 894 values, the 40-class id (1..40, 0 = unlabelled) of each of the 894
    classes, and optionally ``className``: the 40 names; as a .mat file (v5 or v7.3) or YAML
    /JSON ``{map: [894 ints], names: [40 names]}`` (a ``{source_id: target_id}`` mapping works
    for ``map`` too). Without a mapping file, ``--raw-labels`` keeps the 894 ids.

Output ids: 40-class id - 1 (0..39), unlabelled = 255. With ``--raw-labels``: ids 1..894 as
uint16, unlabelled (0) becomes 65535. Frame ids are ``nyudv2_0001`` .. (1-based, as the
official indices). Intrinsics are the NYU toolbox's colour camera parameters.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rgbd_seg_ros.core.image_codec import depth_to_millimetres
from rgbd_seg_ros.data import layout
from rgbd_seg_ros.data.layout import ClassInfo, DatasetMeta, FrameRecord
from rgbd_seg_ros.errors import ConfigError, DatasetError

# Colour camera of the NYU Depth v2 toolbox (camera_params.m).
FX, FY, CX, CY = 518.8579, 519.4696, 325.5824, 253.7362
NYU40_NAMES = (
    'wall',
    'floor',
    'cabinet',
    'bed',
    'chair',
    'sofa',
    'table',
    'door',
    'window',
    'bookshelf',
    'picture',
    'counter',
    'blinds',
    'desk',
    'shelves',
    'curtain',
    'dresser',
    'pillow',
    'mirror',
    'floor mat',
    'clothes',
    'ceiling',
    'books',
    'refridgerator',
    'television',
    'paper',
    'towel',
    'shower curtain',
    'box',
    'whiteboard',
    'person',
    'night stand',
    'toilet',
    'sink',
    'lamp',
    'bathtub',
    'bag',
    'otherstructure',
    'otherfurniture',
    'otherprop',
)
NUM_RAW_CLASSES = 894


def _structured(path: Path) -> object:
    import json

    import yaml

    text = path.read_text(encoding='utf-8')
    return json.loads(text) if path.suffix == '.json' else yaml.safe_load(text)


def load_splits(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{'train': 1-based indices, 'test': ...}`` from splits.mat or YAML/JSON."""
    from rgbd_seg_ros.data.matfile import load_mat

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'splits file {path} does not exist (give it with --splits)')
    if path.suffix == '.mat':
        data = load_mat(path, ['trainNdxs', 'testNdxs'])
        if 'trainNdxs' not in data or 'testNdxs' not in data:
            raise DatasetError(f'{path} must hold trainNdxs and testNdxs')
        raw = {'train': data['trainNdxs'], 'test': data['testNdxs']}
    else:
        doc = _structured(path)
        if not isinstance(doc, dict) or 'train' not in doc:
            raise DatasetError(f'{path} must be a mapping with train (and test) lists')
        raw = {k: doc.get(k, []) for k in ('train', 'val', 'test')}
    out = {}
    for split, values in raw.items():
        arr = np.asarray(values, np.float64).ravel()
        if arr.size and (np.any(arr < 1) or np.any(arr != np.round(arr))):
            raise DatasetError(f'{path}: {split} indices must be 1-based integers')
        out[split] = arr.astype(np.int64)
    return out


def load_mapping(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """(lut over 0..894 -> 40-class id 1..40 / 0, 40 names) from classMapping40.mat or YAML."""
    from rgbd_seg_ros.data.matfile import load_mat

    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f'40-class mapping {path} does not exist (give it with --mapping, or use --raw-labels)'
        )
    if path.suffix == '.mat':
        data = load_mat(path, ['mapClass', 'className'])
        if 'mapClass' not in data:
            raise DatasetError(f'{path} must hold mapClass (894 values)')
        values, names = data['mapClass'], data.get('className')
    else:
        doc = _structured(path)
        if not isinstance(doc, dict) or 'map' not in doc:
            raise DatasetError(f'{path} must be a mapping with a "map" entry')
        values, names = doc['map'], doc.get('names')
    lut = np.zeros(65536, np.int64)
    if isinstance(values, dict):
        for src, dst in values.items():
            lut[int(src)] = int(dst)
    else:
        arr = np.asarray(values, np.float64).ravel()
        if arr.size != NUM_RAW_CLASSES:
            raise DatasetError(f'{path}: mapClass has {arr.size} values, expected 894')
        lut[1 : NUM_RAW_CLASSES + 1] = arr.astype(np.int64)
    if lut.min() < 0 or lut.max() > 255:
        raise DatasetError(f'{path}: mapped ids must be in 0..255')
    count = int(lut.max())
    if names is None:
        names = list(NYU40_NAMES[:count]) + [f'class_{i}' for i in range(len(NYU40_NAMES), count)]
    listed = _class_names(names, path)
    if len(listed) < count:
        raise DatasetError(f'{path}: {len(listed)} names for {count} classes')
    return lut, listed[:count]


def _class_names(names: object, path: Path) -> list[str]:
    """The mapping's class names as strings. A file whose names are one string or a number
    is refused: iterating a string would name the classes after its letters."""
    if isinstance(names, np.ndarray):
        names = names.ravel().tolist()
    if not isinstance(names, list | tuple):
        raise DatasetError(f'{path}: class names must be a list, got {type(names).__name__}')
    return [str(n) for n in names]


def _colour(row: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in row)
    return r, g, b


def _palette(n: int) -> np.ndarray:
    try:
        from rgbd_seg_ros.core.palette import default_palette

        return np.asarray(default_palette(n), np.uint8)
    except ImportError:  # pragma: no cover
        return np.random.default_rng(0).integers(0, 256, (n, 3), dtype=np.uint8)


def _raw_names(f) -> list[str] | None:
    if 'names' not in f:
        return None
    try:
        from rgbd_seg_ros.data.matfile import _h5_value

        names = _h5_value(f, f['names'])
        return [str(n) for n in names] if isinstance(names, list) else None
    except Exception:
        return None


def import_nyudv2(
    mat_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    splits: str | os.PathLike | None = None,
    mapping: str | os.PathLike | None = None,
    raw_labels: bool = False,
    resume: bool = True,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> dict:
    """Write NYUDv2 into the layout at ``out``; returns a report."""
    import h5py
    from tqdm import tqdm

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise DatasetError(f'{mat_path} does not exist')
    here = mat_path.parent
    split_table = load_splits(Path(splits) if splits else here / 'splits.mat')
    if raw_labels and mapping:
        raise ConfigError('--raw-labels and --mapping exclude each other')
    try:
        f = h5py.File(mat_path, 'r')
    except OSError as err:
        raise DatasetError(f'{mat_path} is not an HDF5 (MATLAB v7.3) file: {err}') from err
    with f:
        for key in ('images', 'depths', 'labels'):
            if key not in f:
                raise DatasetError(f'{mat_path} has no {key!r} dataset (found {sorted(f)})')
        images, depths, labels = f['images'], f['depths'], f['labels']
        n = images.shape[0]
        if images.ndim != 4 or images.shape[1] != 3:
            raise DatasetError(f'images must be [N, 3, W, H], got {images.shape}')
        width, height = images.shape[2], images.shape[3]
        for name, ds in (('depths', depths), ('labels', labels)):
            if ds.shape != (n, width, height):
                raise DatasetError(
                    f'{name} must be [N, W, H] = {(n, width, height)}, got {ds.shape}'
                )
        if raw_labels:
            names = _raw_names(f) or [f'class_{i}' for i in range(1, NUM_RAW_CLASSES + 1)]
            lut = np.arange(65536, dtype=np.int64)
            lut[0] = 65535
            pal = _palette(len(names) + 1)
            classes = [ClassInfo(i + 1, n_, _colour(pal[i + 1])) for i, n_ in enumerate(names)]
            ignore, dtype = 65535, np.uint16
        else:
            map_lut, names = load_mapping(
                Path(mapping) if mapping else here / 'classMapping40.mat'
            )
            lut = np.where(map_lut > 0, map_lut - 1, 255)
            pal = _palette(len(names))
            classes = [ClassInfo(i, n_, _colour(pal[i])) for i, n_ in enumerate(names)]
            ignore, dtype = 255, np.uint8
        split_of: dict[int, str] = {}
        for split, idx in split_table.items():
            for i in idx.tolist():
                if i > n:
                    raise DatasetError(f'split index {i} is beyond the {n} frames of {mat_path}')
                split_of[i] = split
        meta = DatasetMeta(
            classes=classes,
            ignore_index=ignore,
            provenance={
                'source': 'NYU Depth v2 (labelled)',
                'file': str(mat_path),
                'splits': str(splits or here / 'splits.mat'),
                'labels': 'raw 894' if raw_labels else '40-class (Gupta et al. 2013)',
                'tool': 'rgbd-seg import-dataset nyudv2',
            },
        )
        order = sorted(split_of)[:limit] if limit else sorted(split_of)
        written = skipped = 0
        unmapped = 0
        with layout.DatasetWriter(out, meta, resume=resume) as writer:
            for number in tqdm(order, unit='frame', file=sys.stderr, disable=not progress):
                frame_id = f'nyudv2_{number:04d}'
                if writer.has_frame(frame_id):
                    skipped += 1
                    continue
                i = number - 1
                rgb = np.ascontiguousarray(np.asarray(images[i]).transpose(2, 1, 0))
                depth = depth_to_millimetres(np.asarray(depths[i], np.float32).T)
                raw = np.asarray(labels[i]).T.astype(np.int64)
                ids = lut[raw]
                unmapped += int(np.count_nonzero((ids == ignore) & (raw != 0)))
                record = FrameRecord(
                    frame_id=frame_id,
                    stamp_ns=number,
                    split=split_of[number],
                    source=mat_path.name,
                    topics='nyudv2',
                    width=width,
                    height=height,
                    fx=FX,
                    fy=FY,
                    cx=CX,
                    cy=CY,
                )
                writer.write_frame(
                    record,
                    rgb,
                    np.ascontiguousarray(depth),
                    np.ascontiguousarray(ids.astype(dtype)),
                )
                written += 1
    report = {
        'dataset': str(out),
        'frames': len(order),
        'written': written,
        'skipped_existing': skipped,
        'splits': {s: sum(1 for v in order if split_of[v] == s) for s in ('train', 'val', 'test')},
        'classes': len(classes),
        'unlabelled_pixels_from_unmapped_classes': unmapped,
        'frames_not_in_any_split': n - len(split_of),
    }
    log(
        f'NYUDv2: {written} frame(s) written, {skipped} already there '
        f'(splits {report["splits"]}), {len(classes)} classes -> {out}'
    )
    return report
