"""The planning pass over one recording: pair, select and split frames from stamps alone.

Only header stamps are read: colour (a camera's raw and ``/compressed`` streams merged by stamp,
:mod:`.colour_streams`) / depth / camera_info (/ labels) are paired offline
(:mod:`rgbd_seg_ros.data.pairing_offline`), frames are selected (minimum gap, maximum count)
and given splits by contiguous time blocks (:mod:`rgbd_seg_ros.data.selection`). The plan says
which message makes which part of which frame; decoding happens later, chunk by chunk.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rgbd_seg_ros.data.convert.colour_streams import ColourSources, merge_colour_stamps
from rgbd_seg_ros.data.convert.options import ConvertOptions
from rgbd_seg_ros.data.convert.topics import TopicChoice, choose_topics
from rgbd_seg_ros.data.pairing_offline import PairingStats, pair_streams
from rgbd_seg_ros.data.recordings import Recording, recording_name
from rgbd_seg_ros.data.selection import assign_splits, select_min_gap, subsample
from rgbd_seg_ros.errors import DatasetError, RgbdSegError

MsgKey = tuple[str, int, int]  # (topic, log time, header stamp)


@dataclass
class FramePlan:
    frame_id: str
    stamp_ns: int
    split: str
    colour: MsgKey
    depth: MsgKey
    info: MsgKey
    label: MsgKey | None

    def message_keys(self) -> list[MsgKey]:
        """The messages this frame is made of."""
        return [k for k in (self.colour, self.depth, self.info, self.label) if k is not None]


@dataclass
class SelectionCounts:
    """What frame selection kept of a recording's pairs, and why it dropped the rest."""

    paired: int = 0
    dropped_min_gap: int = 0
    dropped_max_frames: int = 0
    dropped_split_guard: int = 0
    planned: int = 0
    splits: dict[str, int] = field(default_factory=dict)


@dataclass
class RecordingPlan:
    """One recording's plan; ``error`` set (and no topics) when it cannot be converted."""

    path: str
    name: str
    topics: TopicChoice | None = None
    frames: list[FramePlan] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    pairing: PairingStats | None = None
    selection: SelectionCounts | None = None
    colour_sources: ColourSources | None = None  # when raw and /compressed colour are merged
    error: str | None = None

    def chunks(self, size: int) -> list[list[FramePlan]]:
        """The frames cut into runs of ``size`` consecutive frames, one job each."""
        if self.damage:
            # Damaged files are read by a fallback reader that scans (or copies) the whole
            # file: do that once, not once per chunk.
            size = max(len(self.frames), 1)
        return [self.frames[i : i + size] for i in range(0, len(self.frames), size)]


def plan_recording(path: str, root: str | None, options: ConvertOptions) -> RecordingPlan:
    """Choose topics, pair, select and split one recording (reads header stamps only)."""
    name = recording_name(Path(path), Path(root) if root else None)
    plan = RecordingPlan(path=str(path), name=name)
    try:
        with Recording(path) as rec:
            choice = choose_topics(rec, options)
            streams: dict[str, list[MsgKey]] = {t: [] for t in choice.topics()}
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
    plan.topics, plan.damage = choice, damage

    def stamps(topic: str) -> np.ndarray:
        return np.asarray([k[2] for k in streams[topic]], np.int64)

    colour = streams[choice.colour]
    if choice.colour_compressed:
        compressed = streams[choice.colour_compressed]
        fill, plan.colour_sources = merge_colour_stamps(
            [k[2] for k in colour],
            [k[2] for k in compressed],
            choice.colour,
            choice.colour_compressed,
        )
        colour = colour + [compressed[i] for i in fill]
    labels = streams[choice.label] if choice.label else []
    pairs, plan.pairing = pair_streams(
        np.asarray([k[2] for k in colour], np.int64),
        stamps(choice.depth),
        stamps(choice.info),
        stamps(choice.label) if choice.label else None,
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
                colour=colour[p.colour],
                depth=streams[choice.depth][p.depth],
                info=streams[choice.info][p.info],
                label=None if p.label is None else labels[p.label],
            )
        )
    plan.selection = SelectionCounts(
        paired=len(pairs),
        dropped_min_gap=len(pairs) - after_gap,
        dropped_max_frames=after_gap - len(kept),
        dropped_split_guard=guard_dropped,
        planned=len(plan.frames),
        splits=dict(Counter(f.split for f in plan.frames)),
    )
    return plan
