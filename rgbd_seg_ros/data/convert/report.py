"""The conversion report: what happened to every recording and frame, as typed values.

:func:`build_report` folds the plans and the chunk results into a :class:`ConversionReport`;
:meth:`ConversionReport.to_dict` is the layout of ``conversion_report.json`` (and of
``bag2dataset --json``); :func:`format_report` is the summary a person reads.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from rgbd_seg_ros.data.convert.chunk import ChunkResult
from rgbd_seg_ros.data.convert.colour_streams import ColourSources
from rgbd_seg_ros.data.convert.options import LabelSource
from rgbd_seg_ros.data.convert.planning import RecordingPlan, SelectionCounts
from rgbd_seg_ros.data.convert.topics import TopicChoice
from rgbd_seg_ros.data.pairing_offline import PairingStats

_MAX_EXAMPLES = 10


@dataclass
class FrameCounts:
    """What became of a recording's planned frames."""

    written: int = 0
    skipped_existing: int = 0
    near_duplicate: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # frames not written, by reason
    error_examples: list[str] = field(default_factory=list)
    unmapped_label_pixels: int = 0
    low_confidence_pixels: int = 0
    label_ids: list[int] = field(default_factory=list)  # ids present in the written labels
    colour_topics: dict[str, int] = field(default_factory=dict)  # frames written, by topic

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


@dataclass
class RecordingReport:
    """One recording: its plan (topics, pairing, selection), its frames, its damage."""

    recording: str
    path: str
    frames: FrameCounts
    damage: list[str] = field(default_factory=list)
    topics: TopicChoice | None = None
    pairing: PairingStats | None = None
    selection: SelectionCounts | None = None
    colour_sources: ColourSources | None = None  # raw and /compressed colour merged
    error: str | None = None  # why the recording could not be converted at all

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {'recording': self.recording, 'path': self.path}
        if self.topics is not None:
            out['topics'] = asdict(self.topics)
        if self.colour_sources is not None:
            out['colour_sources'] = self.colour_sources.to_dict()
        out['damage'] = list(self.damage)
        if self.pairing is not None:
            out['pairing'] = self.pairing.to_dict()
        if self.selection is not None:
            out['selection'] = asdict(self.selection)
        if self.error is not None:
            out['error'] = self.error
        out['frames'] = asdict(self.frames)
        return out


@dataclass
class Totals:
    """Sums over all recordings."""

    written: int = 0
    skipped_existing: int = 0
    near_duplicate: int = 0
    frame_errors: int = 0
    failed_recordings: int = 0
    damaged_recordings: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # pairs pairing dropped, by reason

    def to_dict(self) -> dict[str, int]:
        out = {k: v for k, v in asdict(self).items() if k != 'dropped'}
        out.update({f'dropped_{reason}': n for reason, n in self.dropped.items()})
        return out


@dataclass
class ConversionReport:
    """The result of one :func:`convert` run."""

    output: str
    recordings: list[RecordingReport]
    totals: Totals
    seconds: float
    frames_per_second: float
    dataset_frames: int  # frames in the dataset after this run (earlier runs included)
    ignore_index: int
    label_source: LabelSource

    def label_ids(self) -> set[int]:
        """Label ids present in the frames this run wrote, over all recordings."""
        return {i for r in self.recordings for i in r.frames.label_ids}

    def problems(self) -> list[str]:
        """Why the run did not do its job (empty when it did): a non-zero exit status."""
        t = self.totals
        found = []
        if t.failed_recordings:
            found.append(f'{t.failed_recordings} recording(s) could not be converted')
        if t.written == 0 and t.frame_errors:
            found.append(f'every frame failed ({t.frame_errors}); nothing was written')
        if self.dataset_frames == 0:
            found.append(f'no dataset frame in {self.output}: nothing to train on')
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            'output': self.output,
            'recordings': [r.to_dict() for r in self.recordings],
            'totals': self.totals.to_dict(),
            'seconds': self.seconds,
            'frames_per_second': self.frames_per_second,
            'dataset_frames': self.dataset_frames,
            'ignore_index': self.ignore_index,
            'label_source': self.label_source,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _frame_counts(results: list[ChunkResult]) -> FrameCounts:
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    return FrameCounts(
        written=sum(r.written for r in results),
        skipped_existing=sum(r.skipped_existing for r in results),
        near_duplicate=sum(r.near_duplicate for r in results),
        errors=dict(errors),
        error_examples=[e for r in results for e in r.examples][:_MAX_EXAMPLES],
        unmapped_label_pixels=sum(r.unmapped_label_pixels for r in results),
        low_confidence_pixels=sum(r.low_confidence_pixels for r in results),
        label_ids=sorted(set().union(*(r.label_ids for r in results))),
        colour_topics=dict(sum((r.colour_topics for r in results), Counter())),
    )


def recording_report(plan: RecordingPlan, results: list[ChunkResult]) -> RecordingReport:
    """One recording's entry: its plan and the results of its chunks."""
    damage = list(plan.damage)
    for r in results:
        damage.extend(d for d in r.damage if d not in damage)
    return RecordingReport(
        recording=plan.name,
        path=plan.path,
        frames=_frame_counts(results),
        damage=damage,
        topics=plan.topics,
        pairing=plan.pairing,
        selection=plan.selection,
        colour_sources=plan.colour_sources,
        error=plan.error,
    )


def totals(recordings: list[RecordingReport]) -> Totals:
    out = Totals()
    dropped: Counter[str] = Counter()
    for entry in recordings:
        out.written += entry.frames.written
        out.skipped_existing += entry.frames.skipped_existing
        out.near_duplicate += entry.frames.near_duplicate
        out.frame_errors += entry.frames.failed
        out.failed_recordings += entry.error is not None
        out.damaged_recordings += bool(entry.damage)
        if entry.pairing is not None:
            dropped.update({k: int(v) for k, v in entry.pairing.dropped.items() if v})
    out.dropped = dict(dropped)
    return out


def build_report(
    plans: list[RecordingPlan],
    results: list[ChunkResult],
    *,
    output: str,
    seconds: float,
    dataset_frames: int,
    ignore_index: int,
    label_source: LabelSource,
) -> ConversionReport:
    by_rec: dict[str, list[ChunkResult]] = {}
    for r in results:
        by_rec.setdefault(r.recording, []).append(r)
    recordings = [recording_report(p, by_rec.get(p.name, [])) for p in plans]
    sums = totals(recordings)
    return ConversionReport(
        output=output,
        recordings=recordings,
        totals=sums,
        seconds=round(seconds, 3),
        frames_per_second=round(sums.written / seconds, 2) if seconds > 0 else 0.0,
        dataset_frames=dataset_frames,
        ignore_index=ignore_index,
        label_source=label_source,
    )


def _format_plan(entry: RecordingReport, lines: list[str]) -> None:
    pairing, sel = entry.pairing, entry.selection
    if entry.colour_sources is not None:
        lines.append(f'  colour stamps: {entry.colour_sources.describe()}')
    if pairing is not None:
        lines.append(
            f'  messages: colour {pairing.colour_msgs}, depth {pairing.depth_msgs}, camera_info '
            f'{pairing.info_msgs}'
            + (f', labels {pairing.label_msgs}' if pairing.label_msgs else '')
        )
        drops = pairing.to_dict()['dropped']
        dropped = ', '.join(f'{k} {v}' for k, v in drops.items()) or 'none'
        lines.append(
            f'  pairs: {pairing.pairs} (dropped: {dropped}; unused depth {pairing.unused_depth})'
        )
        if pairing.out_of_order:
            lines.append(f'  out-of-order stamps: {pairing.out_of_order}')
        if pairing.slop_ms:
            s = pairing.slop_ms
            lines.append(
                f'  |dt| ms: median {s["median"]}, p95 {s["p95"]}, max {s["max"]}; '
                f'histogram {s["histogram"]}'
            )
        for start_ns, end_ns, n in pairing.info_gaps:
            lines.append(
                f'  camera_info missing for {n} frame(s) between '
                f'{start_ns / 1e9:.3f} s and {end_ns / 1e9:.3f} s'
            )
    if sel is not None:
        lines.append(
            f'  selection: {sel.planned} planned {sel.splits} (min-gap -{sel.dropped_min_gap}, '
            f'max-frames -{sel.dropped_max_frames}, split guard -{sel.dropped_split_guard})'
        )


def _format_frames(frames: FrameCounts, lines: list[str]) -> None:
    lines.append(
        f'  frames: written {frames.written}, already there {frames.skipped_existing}'
        f', near-duplicates {frames.near_duplicate}'
    )
    if len(frames.colour_topics) > 1:
        by_topic = ', '.join(
            f'{n} from {topic}' for topic, n in sorted(frames.colour_topics.items())
        )
        lines.append(f'  colour of the frames written: {by_topic}')
    for reason, n in frames.errors.items():
        lines.append(f'  error {reason}: {n}')
    for example in frames.error_examples[:3]:
        lines.append(f'    e.g. {example}')
    if frames.unmapped_label_pixels:
        lines.append(
            f'  label pixels set to ignore (unmapped/unknown ids): {frames.unmapped_label_pixels}'
        )
    if frames.low_confidence_pixels:
        lines.append(
            f'  pseudo-label pixels below the confidence threshold: {frames.low_confidence_pixels}'
        )


def format_report(report: ConversionReport) -> str:
    """A human-readable summary of a :class:`ConversionReport`."""
    lines: list[str] = []
    for entry in report.recordings:
        lines.append(f'{entry.recording}:')
        if entry.error is not None:
            lines.append(f'  FAILED: {entry.error}')
            continue
        _format_plan(entry, lines)
        _format_frames(entry.frames, lines)
        for note in entry.damage:
            lines.append(f'  DAMAGE: {note}')
    t = report.totals
    lines.append(
        f'total: {t.written} written, {t.skipped_existing} already there, '
        f'{t.frame_errors} frame errors, {t.failed_recordings} failed and '
        f'{t.damaged_recordings} damaged recording(s); dataset has '
        f'{report.dataset_frames} frames; {report.seconds} s '
        f'({report.frames_per_second} frames/s)'
    )
    if report.label_source == 'none' and report.dataset_frames:
        lines.append(
            f'no labels: annotate {report.output}/rgb/<frame_id>.png, save one PNG per frame '
            f'named <frame_id>.png, then run `rgbd-seg import-labels {report.output} FOLDER`'
        )
    return '\n'.join(lines)
