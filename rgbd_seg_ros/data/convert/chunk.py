"""Converting one chunk of planned frames: a worker's unit of work.

A chunk is a run of consecutive frames of one recording. Its worker reads just the chunk's
time range, keeps each message until every frame using it is done, decodes the frames with the
rules of :mod:`rgbd_seg_ros.core.messages`, labels them, and writes them atomically with a
:class:`DatasetWriter` of its own (a journal the parent folds into ``index.csv``). A frame that
cannot be made is counted under a reason, never fatal.
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rgbd_seg_ros.core import messages
from rgbd_seg_ros.data import layout
from rgbd_seg_ros.data.convert.labelling import Labeller, LabelMapper, PseudoLabels
from rgbd_seg_ros.data.convert.options import ConvertOptions
from rgbd_seg_ros.data.convert.planning import FramePlan, MsgKey
from rgbd_seg_ros.data.convert.topics import TopicChoice
from rgbd_seg_ros.data.layout import DatasetMeta, FrameRecord
from rgbd_seg_ros.data.recording_types import RawMessage
from rgbd_seg_ros.data.recordings import Recording
from rgbd_seg_ros.data.selection import DuplicateFilter
from rgbd_seg_ros.errors import DatasetError, FrameError

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
_MAX_EXAMPLES = 10


class Progress(Protocol):
    """Where a chunk reports frames done (a process queue, or a progress bar inline)."""

    def put(self, n: int) -> None: ...


@dataclass(frozen=True)
class ChunkSettings:
    """The options a chunk uses (the labeller travels separately: see :func:`convert_chunk`)."""

    duplicate_threshold: float = 0.0
    label_map: dict[int, int] | None = None
    check_label_ids: bool = False  # label topic with a given class list: others become ignore
    confidence_threshold: float = 0.5
    fsync: bool = True

    @classmethod
    def of(cls, options: ConvertOptions) -> ChunkSettings:
        return cls(
            duplicate_threshold=options.duplicate_threshold,
            label_map=options.label_map,
            # Without a given list every id is a class (named at the end from the dataset).
            check_label_ids=options.label_source == 'topic' and options.classes is not None,
            confidence_threshold=options.confidence_threshold,
            fsync=options.fsync,
        )


@dataclass
class ChunkJob:
    path: str
    frames: list[FramePlan]
    topics: TopicChoice
    root: str
    meta: DatasetMeta
    settings: ChunkSettings
    source: str
    owner_pid: int  # the process that owns the dataset lock for this run


@dataclass
class ChunkResult:
    recording: str
    written: int = 0
    skipped_existing: int = 0
    near_duplicate: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    label_ids: set[int] = field(default_factory=set)
    colour_topics: Counter[str] = field(default_factory=Counter)  # frames written, by topic
    unmapped_label_pixels: int = 0
    low_confidence_pixels: int = 0
    seconds: float = 0.0
    stopped: bool = False  # the run was stopped before the chunk was done


class _FrameProcessor:
    """Decodes, labels and writes the frames of one chunk."""

    def __init__(
        self,
        job: ChunkJob,
        rec: Recording,
        writer: layout.DatasetWriter,
        result: ChunkResult,
        labeller: Labeller | None,
    ) -> None:
        self.job, self.rec, self.writer, self.result = job, rec, writer, result
        settings, ignore = job.settings, job.meta.ignore_index
        self.dedup = DuplicateFilter(settings.duplicate_threshold)
        class_ids = [c.id for c in job.meta.classes] if settings.check_label_ids else None
        self.mapper = LabelMapper(ignore, settings.label_map, class_ids)
        self.pseudo = (
            None
            if labeller is None
            else PseudoLabels(labeller, settings.confidence_threshold, ignore)
        )

    def fail(self, reason: str, frame: FramePlan, detail: str) -> None:
        self.result.errors[reason] += 1
        if len(self.result.examples) < _MAX_EXAMPLES:
            self.result.examples.append(f'{frame.frame_id}: {reason}: {detail}')

    def process(self, frame: FramePlan, msgs: dict[MsgKey, RawMessage]) -> None:
        exists = self.writer.has_frame(frame.frame_id)
        try:
            rgb = messages.decode_colour(self.rec.deserialize(msgs[frame.colour]))
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
            labels = self.mapper(labels)
        elif self.pseudo is not None:
            labels, confidence = self.pseudo(rgb, depth, K)
        record = FrameRecord(
            frame_id=frame.frame_id,
            stamp_ns=frame.stamp_ns,
            split=frame.split,
            source=self.job.source,
            topics=self.job.topics.describe(colour=frame.colour[0]),
            width=w,
            height=h,
            fx=K[0, 0],
            fy=K[1, 1],
            cx=K[0, 2],
            cy=K[1, 2],
        )
        self.writer.write_frame(record, rgb, depth, labels, confidence)
        self.result.written += 1
        self.result.colour_topics[frame.colour[0]] += 1

    def finish(self) -> None:
        """Fold the label counters into the result."""
        self.result.label_ids |= self.mapper.ids_seen
        self.result.unmapped_label_pixels += self.mapper.unmapped_pixels
        if self.pseudo is not None:
            self.result.low_confidence_pixels += self.pseudo.low_confidence_pixels


def convert_chunk(
    job: ChunkJob,
    progress: Progress | None = None,
    labeller: Labeller | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ChunkResult:
    """Convert one chunk of planned frames; ``labeller`` pseudo-labels frames without labels.

    The labeller is an argument rather than part of the job so a worker process receives it
    once (and loads its model once), not once per chunk. ``should_stop`` is polled between
    frames: a run being stopped ends its chunks at a frame boundary, every written frame
    journalled.
    """
    started = time.perf_counter()
    result = ChunkResult(recording=job.source)
    writer = layout.DatasetWriter(
        job.root,
        job.meta,
        resume=True,
        finalize=False,
        fsync=job.settings.fsync,
        owner_pid=job.owner_pid,
    )
    need_messages = job.settings.duplicate_threshold > 0
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
        for key in frame.message_keys():
            users.setdefault(key, []).append(i)
    missing = [len(f.message_keys()) for f in todo]
    remaining = {key: len(v) for key, v in users.items()}
    buffer: dict[MsgKey, RawMessage] = {}
    done = [False] * len(todo)
    start = min(key[1] for key in users)
    stop = max(key[1] for key in users) + 1
    pending = 0
    try:
        with Recording(job.path) as rec:
            proc = _FrameProcessor(job, rec, writer, result, labeller)
            for msg in rec.messages(job.topics.topics(), start=start, stop=stop):
                if should_stop():
                    result.stopped = True
                    break
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
                        for k in todo[i].message_keys():
                            remaining[k] -= 1
                            if remaining[k] == 0:
                                buffer.pop(k, None)
                        if progress is not None and pending >= 10:
                            progress.put(pending)
                            pending = 0
            proc.finish()
            result.damage = list(rec.damage)
        lost = 0 if result.stopped else done.count(False)
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
