"""Batch approximate-time pairing over whole recordings (the node uses core/pairing.py, a
streaming pairer; offline we can see every stamp at once and do better).

Colour is the reference stream. Every colour message is paired with the depth (and label)
message nearest in header stamp within ``slop``; each image message is used at most once,
assigned greedily by increasing time difference over all candidate pairs, so a late or early
message never steals the partner of a closer one. camera_info is matched to the nearest
message within ``info_slop`` and may be shared by several frames (it describes the camera,
not one exposure, and is often published at a different rate). Stamps may arrive out of order;
everything is sorted first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

#: Drop reasons, in the order reports list them.
DROP_REASONS = (
    'duplicate_colour_stamp',
    'no_depth_within_slop',
    'no_label_within_slop',
    'no_camera_info_within_slop',
)


@dataclass(frozen=True)
class PairedFrame:
    """Indices into the input stamp arrays of one colour/depth/info(/label) tuple."""

    stamp_ns: int  # the colour stamp: the frame's stamp
    colour: int
    depth: int
    info: int
    label: int | None
    dt_depth_ns: int
    dt_label_ns: int | None


@dataclass
class PairingStats:
    """What pairing did with a recording's messages."""

    colour_msgs: int = 0
    depth_msgs: int = 0
    info_msgs: int = 0
    label_msgs: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)
    unused_depth: int = 0
    unused_labels: int = 0
    out_of_order: int = 0
    slop_ms: dict = field(default_factory=dict)
    info_gaps: list = field(default_factory=list)  # [(start_ns, end_ns, frames)]

    def to_dict(self) -> dict:
        return {
            'messages': {
                'colour': self.colour_msgs,
                'depth': self.depth_msgs,
                'camera_info': self.info_msgs,
                'labels': self.label_msgs,
            },
            'pairs': self.pairs,
            'dropped': {k: int(self.dropped[k]) for k in DROP_REASONS if self.dropped[k]},
            'unused_depth': self.unused_depth,
            'unused_labels': self.unused_labels,
            'out_of_order_stamps': self.out_of_order,
            'slop_ms': self.slop_ms,
            'camera_info_gaps': [
                {'start_ns': a, 'end_ns': b, 'frames': n} for a, b, n in self.info_gaps
            ],
        }


def match_unique(ref: np.ndarray, other: np.ndarray, slop_ns: int) -> np.ndarray:
    """For each ``ref`` stamp, the index of an ``other`` stamp within ``slop_ns`` or -1.

    Each ``other`` index is used at most once; candidate pairs are taken greedily by
    increasing absolute time difference (ties: earlier reference first). Both arrays must be
    sorted ascending.
    """
    result = np.full(len(ref), -1, np.int64)
    if len(ref) == 0 or len(other) == 0:
        return result
    lo = np.searchsorted(other, ref - slop_ns, side='left')
    hi = np.searchsorted(other, ref + slop_ns, side='right')
    counts = hi - lo
    if counts.sum() == 0:
        return result
    ref_idx = np.repeat(np.arange(len(ref)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    other_idx = np.repeat(lo, counts) + offsets
    dt = np.abs(other[other_idx] - ref[ref_idx])
    order = np.lexsort((other_idx, ref_idx, dt))
    used = np.zeros(len(other), bool)
    for k in order:
        r, o = ref_idx[k], other_idx[k]
        if result[r] < 0 and not used[o]:
            result[r] = o
            used[o] = True
    return result


def match_nearest(ref: np.ndarray, other: np.ndarray, slop_ns: int) -> np.ndarray:
    """For each ``ref`` stamp, the index of the nearest ``other`` stamp within ``slop_ns`` (or
    -1); ``other`` indices may repeat. ``other`` must be sorted ascending."""
    if len(other) == 0:
        return np.full(len(ref), -1, np.int64)
    right = np.clip(np.searchsorted(other, ref), 0, len(other) - 1)
    left = np.clip(right - 1, 0, len(other) - 1)
    pick = np.where(np.abs(other[left] - ref) <= np.abs(other[right] - ref), left, right)
    return np.where(np.abs(other[pick] - ref) <= slop_ns, pick, -1)


def _sorted(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    order = np.argsort(stamps, kind='stable')
    inversions = int(np.count_nonzero(np.diff(stamps) < 0)) if len(stamps) > 1 else 0
    return stamps[order], order, inversions


def pair_streams(
    colour: np.ndarray,
    depth: np.ndarray,
    info: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    slop_ns: int,
    info_slop_ns: int,
) -> tuple[list[PairedFrame], PairingStats]:
    """Pair streams given their header stamps in arrival order (int64 ns).

    Returns frames in stamp order (indices refer to the arrays as given) and statistics.
    """
    colour, depth, info = (np.asarray(a, np.int64) for a in (colour, depth, info))
    stats = PairingStats(len(colour), len(depth), len(info), 0 if labels is None else len(labels))
    c_sorted, c_order, inv_c = _sorted(colour)
    d_sorted, d_order, inv_d = _sorted(depth)
    i_sorted, i_order, _ = _sorted(info)
    stats.out_of_order = inv_c + inv_d

    # Repeated colour stamps: keep the first of each.
    keep = np.ones(len(c_sorted), bool)
    if len(c_sorted) > 1:
        keep[1:] = np.diff(c_sorted) != 0
    stats.dropped['duplicate_colour_stamp'] = int(np.count_nonzero(~keep))
    c_sorted, c_order = c_sorted[keep], c_order[keep]

    d_match = match_unique(c_sorted, d_sorted, slop_ns)
    l_match = None
    if labels is not None:
        labels = np.asarray(labels, np.int64)
        l_sorted, l_order, inv_l = _sorted(labels)
        stats.out_of_order += inv_l
        l_match = match_unique(c_sorted, l_sorted, slop_ns)
    i_match = match_nearest(c_sorted, i_sorted, info_slop_ns)

    frames: list[PairedFrame] = []
    dts: list[int] = []
    gap_start = gap_end = None
    gap_frames = 0
    for k, stamp in enumerate(c_sorted.tolist()):
        if d_match[k] < 0:
            stats.dropped['no_depth_within_slop'] += 1
            continue
        if l_match is not None and l_match[k] < 0:
            stats.dropped['no_label_within_slop'] += 1
            continue
        if i_match[k] < 0:
            stats.dropped['no_camera_info_within_slop'] += 1
            if gap_start is None:
                gap_start, gap_frames = stamp, 0
            gap_end, gap_frames = stamp, gap_frames + 1
            continue
        if gap_start is not None:
            stats.info_gaps.append((gap_start, gap_end, gap_frames))
            gap_start = None
        dt_depth = int(d_sorted[d_match[k]] - stamp)
        dt_label = None
        label_index = None
        if l_match is not None:
            dt_label = int(l_sorted[l_match[k]] - stamp)
            label_index = int(l_order[l_match[k]])
        dts.append(max(abs(dt_depth), abs(dt_label or 0)))
        frames.append(
            PairedFrame(
                stamp_ns=int(stamp),
                colour=int(c_order[k]),
                depth=int(d_order[d_match[k]]),
                info=int(i_order[i_match[k]]),
                label=label_index,
                dt_depth_ns=dt_depth,
                dt_label_ns=dt_label,
            )
        )
    if gap_start is not None:
        stats.info_gaps.append((gap_start, gap_end, gap_frames))
    stats.pairs = len(frames)
    stats.unused_depth = len(depth) - len(frames)
    stats.unused_labels = 0 if labels is None else len(labels) - len(frames)
    if dts:
        arr = np.asarray(dts, np.float64) / 1e6
        stats.slop_ms = {
            'median': round(float(np.median(arr)), 3),
            'p95': round(float(np.percentile(arr, 95)), 3),
            'max': round(float(arr.max()), 3),
            'histogram': _histogram(arr, slop_ns / 1e6),
        }
    return frames, stats


def _histogram(values_ms: np.ndarray, slop_ms: float) -> dict[str, int]:
    """Counts of |dt| in four equal bins up to the slop: '0-25%', ..., '75-100%'."""
    edges = np.linspace(0.0, max(slop_ms, 1e-9), 5)
    counts, _ = np.histogram(np.clip(values_ms, 0, edges[-1]), bins=edges)
    return {f'{int(i * 25)}-{int(i * 25 + 25)}%': int(c) for i, c in enumerate(counts)}
