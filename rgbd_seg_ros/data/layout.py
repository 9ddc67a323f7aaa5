"""The on-disk dataset layout that recording conversion and importers write and training reads.

```
root/dataset.yaml          classes [{id, name, color}], ignore_index, depth_unit (mm), provenance
root/index.csv             frame_id, stamp_ns, split, source, topics, width, height, fx, fy, cx, cy
root/rgb/<id>.png          8-bit colour
root/depth/<id>.png        uint16 millimetres, 0 = no depth
root/labels/<id>.png       uint8 or uint16 class ids, ignore = 255 / 65535   (optional per frame)
root/confidence/<id>.png   uint16 = round(confidence * 65535)                (optional)
```

Writing is crash-safe and resumable:

* every file is written to a temporary name in its folder, flushed and renamed into place, so a
  reader never sees half a PNG;
* a frame counts as written only once its row is appended (and fsync'ed) to a journal,
  ``root/.journal/<writer>.jsonl``, after all of its files are in place;
* :meth:`DatasetWriter.close` folds ``index.csv`` and every journal into a new ``index.csv``
  (atomic rename), then removes the journals it folded. Several writers (one per process) may
  share a root; only a writer with ``finalize=True`` folds.

A finalising writer (and ``bag2dataset`` / ``import-labels`` as a whole) owns the dataset: it
holds an exclusive flock on ``root/.lock``, so two runs never write one dataset at once, and the
per-process writers it starts write only while it does (:mod:`.dataset_lock`).

After a crash the journals still hold every finished frame: a rerun with ``resume=True`` skips
them (``has_frame``) and :class:`DatasetReader` reads them too. Taking the lock removes the
temporaries a killed writer left.

Frame ids are restricted to ``[A-Za-z0-9._-]`` (no leading dot, at most 160 characters) so they
are safe file names; :func:`safe_frame_id` turns arbitrary text (topic names, recording names)
into such an id.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rgbd_seg_ros.core.atomic_files import atomic_write_bytes
from rgbd_seg_ros.data.dataset_lock import DatasetLock, WriterLock
from rgbd_seg_ros.errors import DatasetError

FORMAT_VERSION = 1
META_FILE = 'dataset.yaml'
INDEX_FILE = 'index.csv'
JOURNAL_DIR = '.journal'
RGB_DIR, DEPTH_DIR, LABELS_DIR, CONFIDENCE_DIR = 'rgb', 'depth', 'labels', 'confidence'
SPLITS: tuple[str, ...] = ('train', 'val', 'test')
INDEX_COLUMNS: tuple[str, ...] = (
    'frame_id',
    'stamp_ns',
    'split',
    'source',
    'topics',
    'width',
    'height',
    'fx',
    'fy',
    'cx',
    'cy',
)

_FRAME_ID_RE = re.compile(r'^[A-Za-z0-9_-][A-Za-z0-9._-]{0,159}$')
_UNSAFE_RE = re.compile(r'[^A-Za-z0-9._-]+')
# zlib level 1, run-length strategy, the UP filter on every row: on noisy 640x480 camera-like
# images about 1.6x faster than OpenCV's default (level 1, default strategy, a filter chosen
# per row) and 10-15% smaller. PNG stays lossless whatever these are.
_PNG_LEVEL = 1


# --------------------------------------------------------------------------------------------
# Frame ids and paths
# --------------------------------------------------------------------------------------------


def is_valid_frame_id(frame_id: str) -> bool:
    """True when ``frame_id`` can be used as a file name as it is."""
    return isinstance(frame_id, str) and bool(_FRAME_ID_RE.match(frame_id))


def check_frame_id(frame_id: str) -> str:
    """Return ``frame_id`` or raise DatasetError when it is not a safe file name."""
    if not is_valid_frame_id(frame_id):
        raise DatasetError(
            f'invalid frame id {frame_id!r}: use 1-160 characters of [A-Za-z0-9._-], '
            'not starting with a dot'
        )
    return frame_id


def safe_frame_id(text: str, max_length: int = 120) -> str:
    """Arbitrary text (topic name, file stem) -> a valid frame id fragment.

    Runs of unsafe characters become ``_``, leading dots and underscores are stripped, and long
    names are shortened with a hash suffix so distinct long inputs stay distinct.
    """
    cleaned = _UNSAFE_RE.sub('_', str(text)).lstrip('._') or 'x'
    if len(cleaned) > max_length:
        import hashlib

        digest = hashlib.sha1(str(text).encode('utf-8', 'surrogatepass')).hexdigest()[:8]
        cleaned = cleaned[: max_length - 9].rstrip('._-') + '-' + digest
    return cleaned


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


@dataclass
class ClassInfo:
    """One class of the dataset: its label id, name and display colour (RGB)."""

    id: int
    name: str
    color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        self.id = int(self.id)
        self.name = str(self.name)
        color = tuple(int(c) for c in self.color)
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise DatasetError(f'class {self.name!r}: colour must be 3 values in 0..255')
        self.color = color


@dataclass
class DatasetMeta:
    """Contents of ``dataset.yaml``."""

    classes: list[ClassInfo] = field(default_factory=list)
    ignore_index: int = 255
    depth_unit: str = 'mm'
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = [c if isinstance(c, ClassInfo) else ClassInfo(**c) for c in self.classes]
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise DatasetError(f'duplicate class ids in {ids}')
        if self.ignore_index in ids:
            raise DatasetError(f'ignore_index {self.ignore_index} is also a class id')
        if self.depth_unit != 'mm':
            raise DatasetError(f'depth_unit must be "mm", got {self.depth_unit!r}')

    @property
    def class_ids(self) -> list[int]:
        """The label ids that are classes, ascending: a network's outputs, in order."""
        return sorted(c.id for c in self.classes)

    def classes_by_id(self) -> list[ClassInfo]:
        """The classes in ascending id order (the order of a network's outputs)."""
        return sorted(self.classes, key=lambda c: c.id)

    @property
    def num_classes(self) -> int:
        """One more than the largest class id (label images indexed by id; a network has
        ``len(class_ids)`` outputs instead)."""
        return max((c.id for c in self.classes), default=-1) + 1

    @property
    def class_names(self) -> list[str]:
        """Names indexed by class id (``''`` for unused ids)."""
        names = [''] * self.num_classes
        for c in self.classes:
            names[c.id] = c.name
        return names

    @property
    def palette(self) -> np.ndarray:
        """uint8 [num_classes, 3] colours indexed by class id."""
        pal = np.zeros((self.num_classes, 3), np.uint8)
        for c in self.classes:
            pal[c.id] = c.color
        return pal

    def to_dict(self) -> dict:
        return {
            'format_version': FORMAT_VERSION,
            'classes': [
                {'id': c.id, 'name': c.name, 'color': list(c.color)} for c in self.classes
            ],
            'ignore_index': int(self.ignore_index),
            'depth_unit': self.depth_unit,
            'index': INDEX_FILE,
            'provenance': _plain(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: dict) -> DatasetMeta:
        if not isinstance(data, dict) or 'classes' not in data:
            raise DatasetError('dataset.yaml must be a mapping with a "classes" list')
        version = int(data.get('format_version', FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise DatasetError(f'dataset format_version {version} is newer than this reader')
        try:
            classes = [
                ClassInfo(int(c['id']), str(c['name']), tuple(c.get('color', (0, 0, 0))))
                for c in data['classes']
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f'bad class entry in dataset.yaml: {err}') from err
        return cls(
            classes=classes,
            ignore_index=int(data.get('ignore_index', 255)),
            depth_unit=str(data.get('depth_unit', 'mm')),
            provenance=dict(data.get('provenance') or {}),
        )

    def save(self, path: str | os.PathLike) -> None:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        atomic_write_bytes(Path(path), text.encode('utf-8'))

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetMeta:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding='utf-8'))
        except OSError as err:
            raise DatasetError(f'cannot read {path}: {err}') from err
        except yaml.YAMLError as err:
            raise DatasetError(f'{path} is not valid YAML: {err}') from err
        return cls.from_dict(data)


def _plain(value: object) -> object:
    """Provenance values as YAML-safe plain types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@dataclass
class FrameRecord:
    """One row of ``index.csv``."""

    frame_id: str
    stamp_ns: int
    split: str
    source: str
    topics: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        self.stamp_ns = int(self.stamp_ns)
        self.width, self.height = int(self.width), int(self.height)
        self.fx, self.fy, self.cx, self.cy = (
            float(v) for v in (self.fx, self.fy, self.cx, self.cy)
        )

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the camera matrix is called K everywhere
        """3x3 float64 camera matrix."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], np.float64
        )

    def to_row(self) -> dict[str, str]:
        row = asdict(self)
        return {k: (repr(v) if isinstance(v, float) else str(v)) for k, v in row.items()}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> FrameRecord:
        """The record of a CSV row, each text converted by its field's declared type."""
        try:
            values: dict[str, Any] = {
                f.name: _ROW_TYPES[str(f.type)](row[f.name]) for f in fields(cls)
            }
            return cls(**values)
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f'bad index row {row!r}: {err}') from err


# FrameRecord's field types as written in its annotations (strings: postponed evaluation).
_ROW_TYPES: dict[str, Callable[[str], Any]] = {'str': str, 'int': int, 'float': float}


class Sample(NamedTuple):
    """One frame as loaded by :class:`DatasetReader`."""

    rgb: np.ndarray  # uint8 HxWx3 RGB
    depth_mm: np.ndarray  # uint16 HxW
    labels: np.ndarray | None  # uint8/uint16 HxW
    confidence: np.ndarray | None  # float32 HxW in [0, 1]
    record: FrameRecord


# --------------------------------------------------------------------------------------------
# PNG files
# --------------------------------------------------------------------------------------------


def encode_png(array: np.ndarray) -> bytes:
    """uint8 HxW / HxWx3 (RGB) or uint16 HxW to PNG bytes."""
    import cv2

    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    params = [
        cv2.IMWRITE_PNG_COMPRESSION,
        _PNG_LEVEL,
        cv2.IMWRITE_PNG_STRATEGY,
        cv2.IMWRITE_PNG_STRATEGY_RLE,
    ]
    if hasattr(cv2, 'IMWRITE_PNG_FILTER'):  # OpenCV >= 4.11
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, data = cv2.imencode('.png', array, params)
    if not ok:
        raise DatasetError(f'cannot encode {array.dtype} {array.shape} as PNG')
    return data.tobytes()


def read_png(path: Path) -> np.ndarray:
    """A PNG as written by :func:`encode_png` (3-channel images come back RGB)."""
    import cv2

    try:
        data = np.fromfile(path, np.uint8)
    except OSError as err:
        raise DatasetError(f'cannot read {path}: {err}') from err
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DatasetError(f'{path} is not a readable PNG')
    if image.ndim == 3:
        image = np.ascontiguousarray(image[:, :, 2::-1])  # BGR(A) -> RGB
    return image


# --------------------------------------------------------------------------------------------
# Index and journals
# --------------------------------------------------------------------------------------------


def _read_index(root: Path) -> dict[str, FrameRecord]:
    path = root / INDEX_FILE
    records: dict[str, FrameRecord] = {}
    if not path.exists():
        return records
    with open(path, newline='', encoding='utf-8') as stream:
        reader = csv.DictReader(stream)
        missing = set(INDEX_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f'{path} lacks the columns {sorted(missing)}')
        for row in reader:
            record = FrameRecord.from_row(row)
            records[record.frame_id] = record
    return records


def _journal_files(root: Path) -> list[Path]:
    folder = root / JOURNAL_DIR
    return sorted(folder.glob('*.jsonl')) if folder.is_dir() else []


def _read_journal(path: Path) -> Iterator[FrameRecord]:
    """Rows of one journal; a torn last line (crash mid-write) is skipped."""
    with open(path, encoding='utf-8') as stream:
        for line in stream:
            if not line.endswith('\n'):
                break
            try:
                yield FrameRecord.from_row(json.loads(line))
            except (ValueError, DatasetError):
                continue


def read_all_records(root: Path) -> dict[str, FrameRecord]:
    """index.csv plus every journal (journal rows win: they are newer)."""
    records = _read_index(root)
    for path in _journal_files(root):
        for record in _read_journal(path):
            records[record.frame_id] = record
    return records


def _write_index(root: Path, records: Iterable[FrameRecord]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, lineterminator='\n')
    writer.writeheader()
    for record in sorted(records, key=lambda r: (r.stamp_ns, r.frame_id)):
        writer.writerow(record.to_row())
    atomic_write_bytes(root / INDEX_FILE, buffer.getvalue().encode('utf-8'))


def finalize_index(root: str | os.PathLike) -> int:
    """Fold every journal into ``index.csv`` (atomic) and remove them; returns the row count."""
    root = Path(root)
    journals = _journal_files(root)
    records = read_all_records(root)
    if journals or not (root / INDEX_FILE).exists():
        _write_index(root, records.values())
        for path in journals:
            path.unlink(missing_ok=True)
    return len(records)


# --------------------------------------------------------------------------------------------
# Writer and reader
# --------------------------------------------------------------------------------------------


def frame_paths(root: Path, frame_id: str) -> dict[str, Path]:
    """Where the files of ``frame_id`` live (after checking the id is a safe name)."""
    check_frame_id(frame_id)
    return {
        kind: root / kind / f'{frame_id}.png'
        for kind in (RGB_DIR, DEPTH_DIR, LABELS_DIR, CONFIDENCE_DIR)
    }


class DatasetWriter:
    """Writes frames into the layout; see the module docstring for the crash-safety rules.

    ``meta`` is written to ``dataset.yaml`` at once. With ``resume=True`` an existing dataset
    in ``root`` is continued: its classes must match ``meta`` (DatasetError otherwise) and
    frames already written are reported by :meth:`has_frame`. With ``resume=False`` an existing
    non-empty dataset is an error, never silently overwritten.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        meta: DatasetMeta,
        resume: bool = True,
        *,
        finalize: bool = True,
        fsync: bool = True,
        owner_pid: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.meta = meta
        self.finalize = finalize
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        # The finalising writer owns the dataset; per-process writers work under the lock of
        # their owner (``owner_pid``, default this process) and refuse to write without it.
        self._lock: DatasetLock | WriterLock = (
            DatasetLock(self.root)
            if finalize
            else WriterLock(self.root, os.getpid() if owner_pid is None else owner_pid)
        )
        try:
            self._open_existing(meta, resume)
        except BaseException:
            self._lock.close()
            raise
        for sub in (RGB_DIR, DEPTH_DIR, JOURNAL_DIR):
            (self.root / sub).mkdir(exist_ok=True)
        self._journal_path = (
            self.root / JOURNAL_DIR / f'{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl'
        )
        self._journal: io.TextIOWrapper | None = None
        self.written = 0

    def _open_existing(self, meta: DatasetMeta, resume: bool) -> None:
        meta_path = self.root / META_FILE
        existing = read_all_records(self.root)
        if meta_path.exists():
            old = DatasetMeta.load(meta_path)
            if not resume and existing:
                raise DatasetError(
                    f'{self.root} already holds a dataset with {len(existing)} frames; '
                    'resume it or choose an empty folder'
                )
            if existing and (old.classes != meta.classes or old.ignore_index != meta.ignore_index):
                raise DatasetError(
                    f'{self.root} holds a dataset with different classes or ignore index; '
                    'refusing to mix label spaces'
                )
        if not meta_path.exists() or DatasetMeta.load(meta_path) != meta:
            meta.save(meta_path)
        self._records: dict[str, FrameRecord] = existing

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries ----------------------------------------------------------------------------
    def has_frame(self, frame_id: str) -> bool:
        """True when ``frame_id`` was completely written (by this or an earlier run)."""
        return frame_id in self._records

    @property
    def records(self) -> dict[str, FrameRecord]:
        """Every finished frame known to this writer, by id."""
        return self._records

    # -- writing ----------------------------------------------------------------------------
    def write_frame(
        self,
        record: FrameRecord,
        rgb: np.ndarray,
        depth_mm: np.ndarray,
        labels: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
    ) -> None:
        """Write one frame's files, then commit its index row. Validates shapes and dtypes."""
        paths = frame_paths(self.root, record.frame_id)
        if record.split not in SPLITS:
            raise DatasetError(f'frame {record.frame_id}: split must be one of {SPLITS}')
        h, w = record.height, record.width
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape != (h, w, 3):
            raise DatasetError(
                f'frame {record.frame_id}: rgb must be uint8 {h}x{w}x3, got {rgb.dtype} '
                f'{rgb.shape}'
            )
        depth_mm = np.asarray(depth_mm)
        if depth_mm.dtype != np.uint16 or depth_mm.shape != (h, w):
            raise DatasetError(
                f'frame {record.frame_id}: depth must be uint16 mm {h}x{w}, got '
                f'{depth_mm.dtype} {depth_mm.shape}'
            )
        files = [(paths[RGB_DIR], encode_png(rgb)), (paths[DEPTH_DIR], encode_png(depth_mm))]
        if labels is not None:
            labels = np.asarray(labels)
            if labels.dtype not in (np.uint8, np.uint16) or labels.shape != (h, w):
                raise DatasetError(
                    f'frame {record.frame_id}: labels must be uint8/uint16 {h}x{w}, got '
                    f'{labels.dtype} {labels.shape}'
                )
            files.append((paths[LABELS_DIR], encode_png(labels)))
        if confidence is not None:
            confidence = np.asarray(confidence)
            if confidence.shape != (h, w):
                raise DatasetError(
                    f'frame {record.frame_id}: confidence must be {h}x{w}, got {confidence.shape}'
                )
            if confidence.dtype != np.uint16:
                conf = np.nan_to_num(confidence.astype(np.float32), nan=0.0)
                confidence = np.rint(np.clip(conf, 0.0, 1.0) * 65535.0).astype(np.uint16)
            files.append((paths[CONFIDENCE_DIR], encode_png(confidence)))
        for path, data in files:
            path.parent.mkdir(exist_ok=True)
            atomic_write_bytes(path, data, fsync=self.fsync)
        # A rewrite must not leave stale optional files from an earlier run behind.
        for kind in (LABELS_DIR, CONFIDENCE_DIR):
            if (kind == LABELS_DIR and labels is None) or (
                kind == CONFIDENCE_DIR and confidence is None
            ):
                paths[kind].unlink(missing_ok=True)
        self._commit(record)

    def _commit(self, record: FrameRecord) -> None:
        if self._journal is None:
            self._journal = open(self._journal_path, 'a', encoding='utf-8')  # noqa: SIM115
        self._journal.write(json.dumps(record.to_row()) + '\n')
        self._journal.flush()
        if self.fsync:
            os.fsync(self._journal.fileno())
        self._records[record.frame_id] = record
        self.written += 1

    def close(self) -> None:
        """Close the journal; with ``finalize`` fold all journals into ``index.csv``."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        try:
            if self.finalize:
                finalize_index(self.root)
        finally:
            self._lock.close()


class DatasetReader:
    """Reads a dataset in the layout (index.csv plus any journals of an unfinished run)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f'{self.root} is not a dataset: {META_FILE} is missing')
        self.meta = DatasetMeta.load(meta_path)
        self._records = read_all_records(self.root)

    def __len__(self) -> int:
        return len(self._records)

    def frames(self, split: str | None = None) -> list[FrameRecord]:
        """Records (of one split, or all) in stamp order."""
        records = sorted(self._records.values(), key=lambda r: (r.stamp_ns, r.frame_id))
        return [r for r in records if split is None or r.split == split]

    def record(self, frame_id: str) -> FrameRecord:
        try:
            return self._records[frame_id]
        except KeyError:
            raise DatasetError(f'no frame {frame_id!r} in {self.root}') from None

    def has_labels(self, frame_id: str) -> bool:
        return frame_paths(self.root, frame_id)[LABELS_DIR].is_file()

    def load(self, frame_id: str) -> Sample:
        """Load one frame; DatasetError when a file is missing or does not match the index."""
        record = self.record(frame_id)
        paths = frame_paths(self.root, frame_id)
        rgb = read_png(paths[RGB_DIR])
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        depth = read_png(paths[DEPTH_DIR])
        shape = (record.height, record.width)
        if rgb.shape != (*shape, 3) or rgb.dtype != np.uint8:
            raise DatasetError(f'{paths[RGB_DIR]}: expected uint8 {shape}x3, got {rgb.shape}')
        if depth.shape != shape or depth.dtype != np.uint16:
            raise DatasetError(
                f'{paths[DEPTH_DIR]}: expected uint16 {shape}, got {depth.dtype} {depth.shape}'
            )
        labels = confidence = None
        if paths[LABELS_DIR].is_file():
            labels = read_png(paths[LABELS_DIR])
            if labels.shape != shape:
                raise DatasetError(f'{paths[LABELS_DIR]}: expected {shape}, got {labels.shape}')
        if paths[CONFIDENCE_DIR].is_file():
            raw = read_png(paths[CONFIDENCE_DIR])
            if raw.shape != shape or raw.dtype != np.uint16:
                raise DatasetError(f'{paths[CONFIDENCE_DIR]}: expected uint16 {shape}')
            confidence = raw.astype(np.float32) / 65535.0
        return Sample(rgb, depth, labels, confidence, record)
