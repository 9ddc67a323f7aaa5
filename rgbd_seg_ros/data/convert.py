"""Recordings -> dataset layout (``rgbd-seg bag2dataset``).

Per recording, a planning pass reads only header stamps: topics are chosen (or checked), colour
/ depth / camera_info (/ labels) are paired offline (:mod:`pairing_offline`), frames are
selected (minimum gap, maximum count) and given splits by contiguous time blocks
(:mod:`selection`). The selected frames are then cut into chunks of consecutive frames; each
chunk is one job for a worker process, which reads just its time range, decodes, optionally
labels with a checkpoint, and writes frames atomically with a :class:`DatasetWriter` of its own.
The parent folds the journals into ``index.csv`` and writes ``conversion_report.json``.

Nothing already written is touched by a rerun: frames whose row is in the index (or a journal)
are skipped, so an interrupted conversion resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rgbd_seg_ros.core import messages
from rgbd_seg_ros.data import layout
from rgbd_seg_ros.data.layout import ClassInfo, DatasetMeta, FrameRecord
from rgbd_seg_ros.data.pairing_offline import pair_streams
from rgbd_seg_ros.data.recordings import (
    IMAGE_TYPES,
    INFO_TYPE,
    RawMessage,
    Recording,
    find_recordings,
    format_topics,
    recording_name,
)
from rgbd_seg_ros.data.selection import DuplicateFilter, assign_splits, select_min_gap, subsample
from rgbd_seg_ros.errors import ConfigError, DatasetError, FrameError, RgbdSegError

REPORT_FILE = 'conversion_report.json'
MsgKey = tuple[str, int, int]  # (topic, log time, header stamp)

_COLOUR_HINTS = ('color', 'colour', 'rgb')
_NOT_COLOUR = (
    'depth',
    'label',
    'semantic',
    'segment',
    'mask',
    'confidence',
    'infra',
    'ir/',
    'disparity',
    'overlay',
    'normal',
)
_DEPTH_HINTS = ('registered', 'aligned', 'align')
_TRANSPORT_SUFFIXES = ('/compressed', '/compresseddepth', '/theora', '/zstd')


# --------------------------------------------------------------------------------------------
# Options and topic choice
# --------------------------------------------------------------------------------------------


@dataclass
class ConvertOptions:
    """Everything ``bag2dataset`` can be told; times in seconds."""

    colour_topic: str | None = None
    depth_topic: str | None = None
    info_topic: str | None = None
    label_topic: str | None = None
    slop_s: float = 0.02
    info_slop_s: float = 1.0
    min_gap_s: float = 0.0
    duplicate_threshold: float = 0.0
    max_frames: int | None = None
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    block_s: float = 10.0
    guard_s: float = 0.0
    label_map: dict[int, int] | None = None
    classes: list[ClassInfo] | None = None
    ignore_index: int = 255
    checkpoint: str | None = None
    confidence_threshold: float = 0.5
    device: str = 'cpu'
    jobs: int = 1
    chunk_frames: int = 300
    resume: bool = True
    fsync: bool = True
    progress: bool = True

    def check(self) -> None:
        if self.label_topic and self.checkpoint:
            raise ConfigError('choose one label source: --label-topic or --checkpoint')
        if self.slop_s <= 0 or self.info_slop_s <= 0:
            raise ConfigError('slop values must be positive')
        if self.jobs < 1 or self.chunk_frames < 1:
            raise ConfigError('--jobs and --chunk-frames must be at least 1')
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ConfigError('--confidence-threshold must be in [0, 1]')
        if self.label_map and not self.label_topic:
            raise ConfigError('--label-map only applies to --label-topic')


@dataclass(frozen=True)
class TopicChoice:
    colour: str
    depth: str
    info: str
    label: str | None = None

    def describe(self) -> str:
        parts = [f'rgb={self.colour}', f'depth={self.depth}', f'info={self.info}']
        if self.label:
            parts.append(f'labels={self.label}')
        return ';'.join(parts)


def _pick(
    candidates: list[str], hints: Sequence[str], what: str, flag: str, rec: Recording
) -> str:
    if len(candidates) == 1:
        return candidates[0]
    preferred = [c for c in candidates if any(h in c.lower() for h in hints)]
    if len(preferred) == 1:
        return preferred[0]
    # image_transport republishes raw images under .../compressed(Depth): prefer the raw one.
    raw = [c for c in (preferred or candidates) if not c.lower().endswith(_TRANSPORT_SUFFIXES)]
    if len(raw) == 1:
        return raw[0]
    listing = '\n'.join(f'  {c}' for c in (preferred or candidates))
    if not candidates:
        raise DatasetError(
            f'{rec.path.name}: no {what} topic found; give it with {flag}. Available topics:\n'
            + format_topics(rec.topics.values())
        )
    raise DatasetError(
        f'{rec.path.name}: several {what} topics, choose one with {flag}:\n{listing}'
    )


def choose_topics(rec: Recording, options: ConvertOptions) -> TopicChoice:
    """The topics to convert: the given ones (checked), the rest picked when unambiguous."""
    topics = rec.topics
    images = [t.name for t in topics.values() if t.msgtype in IMAGE_TYPES]
    if options.colour_topic:
        colour = rec.require_topic(options.colour_topic, IMAGE_TYPES).name
    else:
        cands = [n for n in images if not any(x in n.lower() for x in _NOT_COLOUR)]
        colour = _pick(cands, _COLOUR_HINTS, 'colour image', '--rgb-topic', rec)
    if options.depth_topic:
        depth = rec.require_topic(options.depth_topic, IMAGE_TYPES).name
    else:
        cands = [n for n in images if 'depth' in n.lower() and n != colour]
        depth = _pick(cands, _DEPTH_HINTS, 'depth image', '--depth-topic', rec)
    if options.info_topic:
        info = rec.require_topic(options.info_topic, (INFO_TYPE,)).name
    else:
        infos = [t.name for t in topics.values() if t.msgtype == INFO_TYPE]
        colour_ns = colour.rsplit('/', 1)[0]
        same_ns = [n for n in infos if n.rsplit('/', 1)[0] == colour_ns]
        info = _pick(same_ns or infos, (), 'camera_info', '--info-topic', rec)
    label = None
    if options.label_topic:
        label = rec.require_topic(options.label_topic, IMAGE_TYPES).name
    return TopicChoice(colour, depth, info, label)


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


@dataclass
class FramePlan:
    frame_id: str
    stamp_ns: int
    split: str
    colour: MsgKey
    depth: MsgKey
    info: MsgKey
    label: MsgKey | None


@dataclass
class RecordingPlan:
    path: str
    name: str
    topics: TopicChoice | None = None
    frames: list[FramePlan] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    error: str | None = None


def plan_recording(path: str, root: str | None, options: ConvertOptions) -> RecordingPlan:
    """Choose topics, pair, select and split one recording (reads header stamps only)."""
    name = recording_name(Path(path), Path(root) if root else None)
    plan = RecordingPlan(path=str(path), name=name)
    try:
        with Recording(path) as rec:
            choice = choose_topics(rec, options)
            plan.topics = choice
            streams: dict[str, list[MsgKey]] = {t: [] for t in _topic_list(choice)}
            for msg in rec.messages(list(streams)):
                try:
                    stamp = rec.header_stamp(msg)
                except DatasetError:
                    continue
                streams[msg.topic].append((msg.topic, msg.log_time_ns, stamp))
            damage = list(rec.damage)
    except RgbdSegError as err:
        plan.error = str(err)
        return plan

    def stamps(topic: str | None) -> np.ndarray | None:
        if topic is None:
            return None
        return np.asarray([k[2] for k in streams[topic]], np.int64)

    pairs, stats = pair_streams(
        stamps(choice.colour),
        stamps(choice.depth),
        stamps(choice.info),
        stamps(choice.label),
        slop_ns=int(options.slop_s * 1e9),
        info_slop_ns=int(options.info_slop_s * 1e9),
    )
    pair_stamps = np.asarray([p.stamp_ns for p in pairs], np.int64)
    kept = select_min_gap(pair_stamps, int(options.min_gap_s * 1e9))
    after_gap = len(kept)
    kept = subsample(kept, options.max_frames)
    splits = assign_splits(
        pair_stamps[kept], options.ratios, int(options.block_s * 1e9), int(options.guard_s * 1e9)
    )
    guard_dropped = 0
    for idx, split in zip(kept.tolist(), splits, strict=True):
        if split is None:
            guard_dropped += 1
            continue
        p = pairs[idx]
        plan.frames.append(
            FramePlan(
                frame_id=f'{name}_{p.stamp_ns}',
                stamp_ns=p.stamp_ns,
                split=split,
                colour=streams[choice.colour][p.colour],
                depth=streams[choice.depth][p.depth],
                info=streams[choice.info][p.info],
                label=None if p.label is None else streams[choice.label][p.label],
            )
        )
    plan.report = {
        'recording': name,
        'path': str(path),
        'topics': asdict(choice),
        'damage': damage,
        'pairing': stats.to_dict(),
        'selection': {
            'paired': len(pairs),
            'dropped_min_gap': len(pairs) - after_gap,
            'dropped_max_frames': after_gap - len(kept),
            'dropped_split_guard': guard_dropped,
            'planned': len(plan.frames),
            'splits': dict(Counter(f.split for f in plan.frames)),
        },
    }
    return plan


def _topic_list(choice: TopicChoice) -> list[str]:
    topics = [choice.colour, choice.depth, choice.info]
    if choice.label:
        topics.append(choice.label)
    return list(dict.fromkeys(topics))


# --------------------------------------------------------------------------------------------
# Chunk conversion (runs in worker processes)
# --------------------------------------------------------------------------------------------


@dataclass
class ChunkJob:
    path: str
    frames: list[FramePlan]
    topics: TopicChoice
    root: str
    meta: DatasetMeta
    options: ConvertOptions
    source: str


@dataclass
class ChunkResult:
    recording: str
    written: int = 0
    skipped_existing: int = 0
    near_duplicate: int = 0
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    label_ids: set[int] = field(default_factory=set)
    unmapped_label_pixels: int = 0
    low_confidence_pixels: int = 0
    seconds: float = 0.0


_ENGINES: dict[tuple[str, str], Any] = {}
# What a damaged or malformed message can raise while it is deserialised and decoded.
_DECODE_ERRORS = (
    FrameError,
    DatasetError,
    KeyError,
    ValueError,
    IndexError,
    TypeError,
    struct.error,
    AssertionError,
)


def _engine(options: ConvertOptions) -> Any:
    key = (str(options.checkpoint), options.device)
    if key not in _ENGINES:
        from rgbd_seg_ros.inference.engine import Engine

        _ENGINES[key] = Engine.from_checkpoint(options.checkpoint, device=options.device)
    return _ENGINES[key]


class _FrameProcessor:
    """Decodes and writes the frames of one chunk."""

    def __init__(
        self, job: ChunkJob, rec: Recording, writer: layout.DatasetWriter, result: ChunkResult
    ) -> None:
        self.job, self.rec, self.writer, self.result = job, rec, writer, result
        self.options = job.options
        self.dedup = DuplicateFilter(self.options.duplicate_threshold)
        self.ignore = job.meta.ignore_index
        self.lut: np.ndarray | None = None
        if self.options.label_map is not None:
            self.lut = np.full(65536, self.ignore, np.uint16)
            for src, dst in self.options.label_map.items():
                self.lut[int(src)] = int(dst)
        self.known: np.ndarray | None = None  # which ids are classes (or ignore)
        if job.meta.classes and self.options.label_topic:
            self.known = np.zeros(65536, bool)
            self.known[[c.id for c in job.meta.classes]] = True
            self.known[self.ignore] = True

    def fail(self, reason: str, frame: FramePlan, detail: str) -> None:
        self.result.errors[reason] += 1
        if len(self.result.examples) < 10:
            self.result.examples.append(f'{frame.frame_id}: {reason}: {detail}')

    def process(self, frame: FramePlan, msgs: dict[MsgKey, RawMessage]) -> None:
        exists = self.writer.has_frame(frame.frame_id)
        try:
            colour_msg = self.rec.deserialize(msgs[frame.colour])
            rgb = messages.decode_colour(colour_msg)
        except _DECODE_ERRORS as err:
            self.fail('colour_undecodable', frame, str(err))
            return
        if self.dedup.is_duplicate(rgb):
            self.result.near_duplicate += 1
            return
        if exists:
            self.result.skipped_existing += 1
            return
        try:
            depth = messages.decode_depth_mm(self.rec.deserialize(msgs[frame.depth]))
        except _DECODE_ERRORS as err:
            self.fail('depth_undecodable', frame, str(err))
            return
        try:
            intrinsics = messages.camera_intrinsics(self.rec.deserialize(msgs[frame.info]))
        except _DECODE_ERRORS as err:
            self.fail('camera_info_invalid', frame, str(err))
            return
        h, w = rgb.shape[:2]
        if depth.shape != (h, w):
            self.fail(
                'size_mismatch', frame, f'colour {w}x{h}, depth {depth.shape[1]}x{depth.shape[0]}'
            )
            return
        if (intrinsics.width, intrinsics.height) != (w, h):
            got = f'{intrinsics.width}x{intrinsics.height}'
            self.fail('size_mismatch', frame, f'colour {w}x{h}, camera_info {got}')
            return
        K = intrinsics.K
        labels = confidence = None
        if frame.label is not None:
            try:
                labels = messages.decode_labels(self.rec.deserialize(msgs[frame.label]))
            except _DECODE_ERRORS as err:
                self.fail('labels_undecodable', frame, str(err))
                return
            if labels.shape != (h, w):
                got = f'{labels.shape[1]}x{labels.shape[0]}'
                self.fail('size_mismatch', frame, f'colour {w}x{h}, labels {got}')
                return
            labels = self._map_labels(labels)
        elif self.options.checkpoint:
            labels, confidence = self._pseudo_labels(rgb, depth, K)
        record = FrameRecord(
            frame_id=frame.frame_id,
            stamp_ns=frame.stamp_ns,
            split=frame.split,
            source=self.job.source,
            topics=self.job.topics.describe(),
            width=w,
            height=h,
            fx=K[0, 0],
            fy=K[1, 1],
            cx=K[0, 2],
            cy=K[1, 2],
        )
        self.writer.write_frame(record, rgb, depth, labels, confidence)
        self.result.written += 1

    def _map_labels(self, labels: np.ndarray) -> np.ndarray:
        if self.lut is not None:
            mapped = self.lut[labels]
            self.result.unmapped_label_pixels += int(
                np.count_nonzero((mapped == self.ignore) & (labels != self.ignore))
            )
        else:
            mapped = labels
            if self.known is not None:
                unknown = ~self.known[labels]
                n = int(np.count_nonzero(unknown))
                if n:
                    self.result.unmapped_label_pixels += n
                    mapped = np.where(unknown, self.ignore, labels)
        present = np.flatnonzero(np.bincount(mapped.ravel(), minlength=1))
        self.result.label_ids.update(int(i) for i in present if i != self.ignore)
        wide = self.ignore > 255 or (present.size and present[-1] > 255)
        return mapped.astype(np.uint16 if wide else np.uint8, copy=False)

    def _pseudo_labels(
        self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        # torch.from_numpy warns on read-only arrays (zero-copy views of message buffers).
        rgb = rgb if rgb.flags.writeable else rgb.copy()
        depth = depth if depth.flags.writeable else depth.copy()
        pred = _engine(self.options).predict(rgb, depth, K, outputs=('labels', 'confidence'))
        confidence = np.asarray(pred.confidence, np.float32)
        labels = np.asarray(pred.labels).astype(np.int64)
        low = confidence < self.options.confidence_threshold
        self.result.low_confidence_pixels += int(np.count_nonzero(low))
        labels[low] = self.ignore
        dtype = np.uint8 if self.ignore <= 255 and labels.max(initial=0) <= 255 else np.uint16
        return labels.astype(dtype), confidence


def convert_chunk(job: ChunkJob, progress: Any = None) -> ChunkResult:
    """Convert one chunk of planned frames (a worker's unit of work)."""
    started = time.perf_counter()
    result = ChunkResult(recording=job.source)
    writer = layout.DatasetWriter(
        job.root, job.meta, resume=True, finalize=False, fsync=job.options.fsync
    )
    need_messages = job.options.duplicate_threshold > 0
    todo = [f for f in job.frames if need_messages or not writer.has_frame(f.frame_id)]
    result.skipped_existing += len(job.frames) - len(todo)
    if progress is not None and len(job.frames) > len(todo):
        progress.put(len(job.frames) - len(todo))
    if not todo:
        writer.close()
        return result
    # Which frames need which message; camera_info messages may be shared.
    users: dict[MsgKey, list[int]] = {}
    for i, frame in enumerate(todo):
        for key in (frame.colour, frame.depth, frame.info, frame.label):
            if key is not None:
                users.setdefault(key, []).append(i)
    missing = [sum(1 for k in (f.colour, f.depth, f.info, f.label) if k is not None) for f in todo]
    remaining = {key: len(v) for key, v in users.items()}
    buffer: dict[MsgKey, RawMessage] = {}
    done = [False] * len(todo)
    start = min(key[1] for key in users)
    stop = max(key[1] for key in users) + 1
    pending = 0
    try:
        with Recording(job.path) as rec:
            proc = _FrameProcessor(job, rec, writer, result)
            topics = _topic_list(job.topics)
            for msg in rec.messages(topics, start=start, stop=stop):
                stamp = rec.header_stamp(msg)
                key = (msg.topic, msg.log_time_ns, stamp)
                if key not in users or key in buffer:
                    continue
                buffer[key] = msg
                for i in users[key]:
                    missing[i] -= 1
                    if missing[i] == 0 and not done[i]:
                        done[i] = True
                        proc.process(todo[i], buffer)
                        pending += 1
                        for k in (todo[i].colour, todo[i].depth, todo[i].info, todo[i].label):
                            if k is not None:
                                remaining[k] -= 1
                                if remaining[k] == 0:
                                    buffer.pop(k, None)
                        if progress is not None and pending >= 10:
                            progress.put(pending)
                            pending = 0
            result.damage = list(rec.damage)
        lost = done.count(False)
        if lost:
            result.errors['messages_missing'] += lost
            result.examples.append(
                f'{lost} frame(s) lost messages that could not be read back'
                + (' (recording damaged)' if result.damage else '')
            )
    finally:
        writer.close()
        if progress is not None:
            progress.put(pending + done.count(False))
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def _initial_meta(root: Path, options: ConvertOptions) -> DatasetMeta:
    if options.checkpoint:
        from rgbd_seg_ros.backends.checkpoint import load_checkpoint

        meta, _ = load_checkpoint(options.checkpoint)
        palette = list(meta.palette) or [(0, 0, 0)] * meta.num_classes
        classes = [
            ClassInfo(i, name, tuple(palette[i]) if i < len(palette) else (0, 0, 0))
            for i, name in enumerate(meta.class_names)
        ]
        return DatasetMeta(classes=classes, ignore_index=int(meta.ignore_index))
    if options.classes is not None:
        return DatasetMeta(classes=list(options.classes), ignore_index=options.ignore_index)
    existing = root / layout.META_FILE
    if existing.is_file():
        old = DatasetMeta.load(existing)
        return DatasetMeta(classes=old.classes, ignore_index=old.ignore_index)
    return DatasetMeta(classes=[], ignore_index=options.ignore_index)


def _provenance(options: ConvertOptions, plans: list[RecordingPlan]) -> dict:
    from rgbd_seg_ros import __version__

    opts = {k: v for k, v in asdict(options).items() if k not in ('classes', 'progress')}
    opts['label_map'] = (
        {str(k): v for k, v in options.label_map.items()} if options.label_map else None
    )
    return {
        'tool': 'rgbd-seg bag2dataset',
        'version': __version__,
        'created_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'recordings': [{'name': p.name, 'path': p.path} for p in plans],
        'options': opts,
    }


def _chunks(plan: RecordingPlan, size: int) -> list[list[FramePlan]]:
    if plan.report.get('damage'):
        # Damaged files are read by a fallback reader that scans (or copies) the whole file:
        # do that once, not once per chunk.
        size = max(len(plan.frames), 1)
    return [plan.frames[i : i + size] for i in range(0, len(plan.frames), size)]


def convert(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    options: ConvertOptions,
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> dict:
    """Convert every recording under ``inputs`` into the dataset at ``out``; returns the
    report (also written to ``out/conversion_report.json``)."""
    options.check()
    started = time.perf_counter()
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DatasetError(f'{root} exists and is not a folder')
    paths: list[tuple[Path, Path]] = []
    for item in inputs:
        base = Path(item)
        paths.extend((p, base) for p in find_recordings(base))
    names = [recording_name(p, b) for p, b in paths]
    if len(set(names)) != len(names):
        dupes = sorted(n for n, c in Counter(names).items() if c > 1)
        raise DatasetError(
            f'several recordings map to the same name: {dupes}; convert them '
            'separately or rename them'
        )
    if not options.resume and (root / layout.INDEX_FILE).exists():
        raise DatasetError(f'{root} already holds a dataset; pass --resume or pick a new folder')
    root.mkdir(parents=True, exist_ok=True)
    with layout.DatasetLock(root):
        return _convert_locked(paths, root, options, log, started)


def _convert_locked(
    paths: list[tuple[Path, Path]],
    root: Path,
    options: ConvertOptions,
    log: Callable[[str], None],
    started: float,
) -> dict:
    meta = _initial_meta(root, options)
    executor, queue = _executor(options.jobs)
    try:
        log(f'planning {len(paths)} recording(s)')
        plan_args = [(str(p), str(b) if b.is_dir() else None, options) for p, b in paths]
        if executor is None:
            plans = [plan_recording(*a) for a in plan_args]
        else:
            plans = list(executor.map(plan_recording, *zip(*plan_args, strict=True)))
        for plan in plans:
            if plan.error:
                log(f'{plan.name}: {plan.error}')
        meta.provenance = _provenance(options, plans)
        layout.DatasetWriter(root, meta, resume=options.resume, finalize=False).close()
        jobs = [
            ChunkJob(plan.path, chunk, plan.topics, str(root), meta, options, plan.name)
            for plan in plans
            if plan.topics is not None
            for chunk in _chunks(plan, options.chunk_frames)
        ]
        total = sum(len(j.frames) for j in jobs)
        results = _run_jobs(executor, queue, jobs, total, options.progress)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
        layout.finalize_index(root)
    report = _report(plans, results, meta, root, time.perf_counter() - started)
    report['label_source'] = (
        'topic' if options.label_topic else 'checkpoint' if options.checkpoint else 'none'
    )
    if options.label_topic and options.classes is None and not options.checkpoint:
        _update_auto_classes(root, meta, report)
    layout.atomic_write_bytes(root / REPORT_FILE, json.dumps(report, indent=2).encode())
    return report


_PROGRESS: Any = None  # a worker's progress queue (set by _init_worker)


def _init_worker(queue: Any) -> None:
    global _PROGRESS
    _PROGRESS = queue


def _convert_chunk_in_worker(job: ChunkJob) -> ChunkResult:
    return convert_chunk(job, _PROGRESS)


def _executor(jobs: int) -> tuple[Any, Any]:
    """A spawn-context process pool (torch and OpenCV threads make fork unsafe) and the queue
    its workers report progress on; (None, None) for jobs <= 1."""
    if jobs <= 1:
        return None, None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context('spawn')
    queue = context.Queue()
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(queue,)
    )
    return pool, queue


def _run_jobs(
    executor: Any, queue: Any, jobs: list[ChunkJob], total: int, show: bool
) -> list[ChunkResult]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit='frame', file=sys.stderr, disable=not show, dynamic_ncols=True)
    try:
        if executor is None:
            inline = _InlineQueue(bar)
            return [convert_chunk(job, inline) for job in jobs]
        stop = threading.Event()

        def pump() -> None:
            import queue as queue_module

            while not stop.is_set():
                try:
                    bar.update(queue.get(timeout=0.1))
                except queue_module.Empty:
                    continue

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        try:
            futures = [executor.submit(_convert_chunk_in_worker, job) for job in jobs]
            return [f.result() for f in futures]
        finally:
            stop.set()
            thread.join(timeout=5)
    finally:
        bar.close()


class _InlineQueue:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


def _report(
    plans: list[RecordingPlan],
    results: list[ChunkResult],
    meta: DatasetMeta,
    root: Path,
    seconds: float,
) -> dict:
    by_rec: dict[str, list[ChunkResult]] = {}
    for r in results:
        by_rec.setdefault(r.recording, []).append(r)
    recordings = []
    totals: Counter = Counter()
    for plan in plans:
        entry = dict(plan.report) if plan.report else {'recording': plan.name, 'path': plan.path}
        if plan.error:
            entry['error'] = plan.error
            totals['failed_recordings'] += 1
        chunk_results = by_rec.get(plan.name, [])
        errors: Counter = Counter()
        damage = list(entry.get('damage', []))
        for r in chunk_results:
            errors.update(r.errors)
            damage.extend(d for d in r.damage if d not in damage)
        out = {
            'written': sum(r.written for r in chunk_results),
            'skipped_existing': sum(r.skipped_existing for r in chunk_results),
            'near_duplicate': sum(r.near_duplicate for r in chunk_results),
            'errors': dict(errors),
            'error_examples': [e for r in chunk_results for e in r.examples][:10],
            'unmapped_label_pixels': sum(r.unmapped_label_pixels for r in chunk_results),
            'low_confidence_pixels': sum(r.low_confidence_pixels for r in chunk_results),
            'label_ids': sorted(set().union(*(r.label_ids for r in chunk_results))),
        }
        entry['damage'] = damage
        entry['frames'] = out
        if damage:
            totals['damaged_recordings'] += 1
        for k in ('written', 'skipped_existing', 'near_duplicate'):
            totals[k] += out[k]
        totals['frame_errors'] += sum(errors.values())
        for reason, n in entry.get('pairing', {}).get('dropped', {}).items():
            totals[f'dropped_{reason}'] += n
        recordings.append(entry)
    frames_done = totals['written']
    return {
        'output': str(root),
        'recordings': recordings,
        'totals': dict(totals),
        'seconds': round(seconds, 3),
        'frames_per_second': round(frames_done / seconds, 2) if seconds > 0 else 0.0,
        'dataset_frames': len(layout.read_all_records(root)),
        'ignore_index': meta.ignore_index,
    }


def _update_auto_classes(root: Path, meta: DatasetMeta, report: dict) -> None:
    """Without --classes, name the label ids that occurred ``class_<id>`` in dataset.yaml."""
    try:
        from rgbd_seg_ros.core.palette import default_palette
    except ImportError:  # pragma: no cover - palette module is optional here

        def default_palette(n: int) -> np.ndarray:
            rng = np.random.default_rng(0)
            return rng.integers(0, 256, (n, 3), dtype=np.uint8)

    ids = {c.id for c in meta.classes}
    seen = set()
    for entry in report['recordings']:
        seen.update(entry.get('frames', {}).get('label_ids', []))
    new = sorted(seen - ids)
    if not new:
        return
    palette = default_palette(max(new) + 1)
    meta.classes = sorted(
        [
            *meta.classes,
            *(ClassInfo(i, f'class_{i}', tuple(int(c) for c in palette[i])) for i in new),
        ],
        key=lambda c: c.id,
    )
    meta.save(root / layout.META_FILE)


def format_report(report: dict) -> str:
    """A human-readable summary of :func:`convert`'s report."""
    lines = []
    for entry in report['recordings']:
        lines.append(f'{entry["recording"]}:')
        if entry.get('error'):
            lines.append(f'  FAILED: {entry["error"]}')
            continue
        pairing = entry['pairing']
        sel = entry['selection']
        frames = entry['frames']
        m = pairing['messages']
        lines.append(
            f'  messages: colour {m["colour"]}, depth {m["depth"]}, camera_info '
            f'{m["camera_info"]}' + (f', labels {m["labels"]}' if m['labels'] else '')
        )
        dropped = ', '.join(f'{k} {v}' for k, v in pairing['dropped'].items()) or 'none'
        lines.append(
            f'  pairs: {pairing["pairs"]} (dropped: {dropped}; unused depth '
            f'{pairing["unused_depth"]})'
        )
        if pairing['out_of_order_stamps']:
            lines.append(f'  out-of-order stamps: {pairing["out_of_order_stamps"]}')
        if pairing['slop_ms']:
            s = pairing['slop_ms']
            lines.append(
                f'  |dt| ms: median {s["median"]}, p95 {s["p95"]}, max {s["max"]}; '
                f'histogram {s["histogram"]}'
            )
        for gap in pairing['camera_info_gaps']:
            lines.append(
                f'  camera_info missing for {gap["frames"]} frame(s) between '
                f'{gap["start_ns"] / 1e9:.3f} s and {gap["end_ns"] / 1e9:.3f} s'
            )
        lines.append(
            f'  selection: {sel["planned"]} planned {sel["splits"]} (min-gap -'
            f'{sel["dropped_min_gap"]}, max-frames -{sel["dropped_max_frames"]}, split guard -'
            f'{sel["dropped_split_guard"]})'
        )
        lines.append(
            f'  frames: written {frames["written"]}, already there {frames["skipped_existing"]}'
            f', near-duplicates {frames["near_duplicate"]}'
        )
        for reason, n in frames['errors'].items():
            lines.append(f'  error {reason}: {n}')
        for example in frames['error_examples'][:3]:
            lines.append(f'    e.g. {example}')
        if frames['unmapped_label_pixels']:
            lines.append(
                f'  label pixels set to ignore (unmapped/unknown ids): '
                f'{frames["unmapped_label_pixels"]}'
            )
        if frames['low_confidence_pixels']:
            lines.append(
                f'  pseudo-label pixels below the confidence threshold: '
                f'{frames["low_confidence_pixels"]}'
            )
        for note in entry.get('damage', []):
            lines.append(f'  DAMAGE: {note}')
    t = report['totals']
    lines.append(
        f'total: {t.get("written", 0)} written, {t.get("skipped_existing", 0)} already there, '
        f'{t.get("frame_errors", 0)} frame errors, {t.get("failed_recordings", 0)} failed and '
        f'{t.get("damaged_recordings", 0)} damaged recording(s); dataset has '
        f'{report["dataset_frames"]} frames; {report["seconds"]} s '
        f'({report["frames_per_second"]} frames/s)'
    )
    if report.get('label_source') == 'none':
        lines.append(
            f'no labels: annotate {report["output"]}/rgb/<frame_id>.png, save one PNG per frame '
            f'named <frame_id>.png, then run `rgbd-seg import-labels {report["output"]} FOLDER`'
        )
    return '\n'.join(lines)
