"""Frame selection and train/val/test splits for recordings.

* :func:`select_min_gap` keeps frames at least ``min_gap_ns`` apart (greedy, in stamp order);
* :func:`subsample` thins to at most ``max_count`` frames, evenly over the recording;
* :class:`DuplicateFilter` skips frames whose colour image barely differs from the last kept
  one (mean absolute difference of a small grey thumbnail, on the 0..255 scale);
* :func:`assign_splits` cuts the recording into contiguous time blocks and gives whole blocks
  to splits, so neighbouring (near-identical) frames never land in different splits; frames
  within ``guard_ns`` of a boundary between blocks of different splits are dropped.
"""

from __future__ import annotations

import numpy as np

from rgbd_seg_ros.errors import ConfigError


def select_min_gap(stamps: np.ndarray, min_gap_ns: int) -> np.ndarray:
    """Indices (into sorted ``stamps``) of frames kept greedily at least ``min_gap_ns`` apart."""
    stamps = np.asarray(stamps, np.int64)
    if min_gap_ns <= 0 or len(stamps) == 0:
        return np.arange(len(stamps))
    kept = [0]
    last = stamps[0]
    for i in range(1, len(stamps)):
        if stamps[i] - last >= min_gap_ns:
            kept.append(i)
            last = stamps[i]
    return np.asarray(kept, np.int64)


def subsample(indices: np.ndarray, max_count: int | None) -> np.ndarray:
    """At most ``max_count`` of ``indices``, evenly spaced (first and last kept)."""
    indices = np.asarray(indices)
    if max_count is None or len(indices) <= max_count:
        return indices
    if max_count <= 0:
        return indices[:0]
    picks = np.unique(np.round(np.linspace(0, len(indices) - 1, max_count)).astype(np.int64))
    return indices[picks]


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``'0.8,0.1,0.1'`` (train,val,test; normalised to sum 1) -> a tuple; ConfigError when
    malformed."""
    try:
        values = tuple(float(v) for v in text.split(','))
    except ValueError:
        raise ConfigError(
            f'split ratios must be three numbers like 0.8,0.1,0.1, got {text!r}'
        ) from None
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise ConfigError(f'split ratios must be three non-negative numbers, got {text!r}')
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


SPLIT_NAMES = ('train', 'val', 'test')


def assign_splits(
    stamps: np.ndarray,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    block_ns: int = 10_000_000_000,
    guard_ns: int = 0,
) -> list[str | None]:
    """Split name per frame (``stamps`` sorted ascending); ``None`` for frames in a guard band.

    Blocks of ``block_ns`` from the first stamp are handed out in time order, each to the split
    furthest below its share of frames so far (ties: train, val, test), which interleaves the
    splits over the recording while every block stays whole.

    Every split with a positive share gets frames whenever the recording has enough of them, so
    a short recording still has held-out frames (doc/design.md §4.1): while a split is left
    without a block, the blocks (and the guard) are halved; when even one frame per block
    leaves a split out, the last blocks of the recording go to the missing splits (test last,
    val before it). The guard never takes a split's last frames.
    """
    stamps = np.asarray(stamps, np.int64)
    if len(stamps) == 0:
        return []
    if block_ns <= 0:
        raise ConfigError('split block length must be positive')
    wanted = {i for i, r in enumerate(ratios) if r > 0}
    while True:
        block_of = (stamps - stamps[0]) // block_ns
        blocks, first, sizes = np.unique(block_of, return_index=True, return_counts=True)
        block_split = _deal_blocks(blocks.tolist(), sizes.tolist(), ratios)
        if wanted <= set(block_split.values()) or len(blocks) == len(stamps) or block_ns == 1:
            break
        block_ns, guard_ns = max(block_ns // 2, 1), guard_ns // 2
    _give_missing_splits(block_split, blocks.tolist(), wanted)
    split = np.asarray([block_split[b] for b in block_of.tolist()])
    names: list[str | None] = [SPLIT_NAMES[s] for s in split.tolist()]
    if guard_ns > 0 and len(first) > 1:
        guarded = np.zeros(len(stamps), bool)
        for k in range(1, len(blocks)):
            if block_split[int(blocks[k - 1])] == block_split[int(blocks[k])]:
                continue
            # Guard both sides of the boundary: frames of either block close to it.
            guarded |= np.abs(stamps - stamps[first[k]]) < guard_ns
        for s in set(split.tolist()):
            mine = split == s
            if not (mine & ~guarded).any():
                guarded &= ~mine  # the guard would empty this split: keep its frames
        for i in np.nonzero(guarded)[0].tolist():
            names[i] = None
    return names


def _deal_blocks(
    blocks: list[int], sizes: list[int], ratios: tuple[float, float, float]
) -> dict[int, int]:
    """Split index per block: each to the split furthest below its share so far."""
    assigned = np.zeros(3)
    target = np.asarray(ratios, np.float64)
    block_split: dict[int, int] = {}
    for block, size in zip(blocks, sizes, strict=True):
        total = assigned.sum() + size
        deficit = target * total - assigned
        deficit[target == 0] = -np.inf
        choice = int(np.argmax(deficit))
        block_split[block] = choice
        assigned[choice] += size
    return block_split


def _give_missing_splits(block_split: dict[int, int], blocks: list[int], wanted: set[int]) -> None:
    """Hand the last blocks to wanted splits that have none (test last, val before it), each
    taken from a split that keeps at least one block."""
    for missing in sorted(wanted - set(block_split.values()), reverse=True):
        for block in reversed(blocks):
            if list(block_split.values()).count(block_split[block]) >= 2:
                block_split[block] = missing
                break


class DuplicateFilter:
    """Skips near-duplicate colour frames; ``threshold`` <= 0 disables it."""

    def __init__(self, threshold: float, size: tuple[int, int] = (32, 24)) -> None:
        self.threshold = float(threshold)
        self.size = size
        self._last: np.ndarray | None = None

    def thumbnail(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        grey = rgb.mean(axis=2, dtype=np.float32) if rgb.ndim == 3 else rgb.astype(np.float32)
        return cv2.resize(grey, self.size, interpolation=cv2.INTER_AREA)

    def is_duplicate(self, rgb: np.ndarray) -> bool:
        """True when ``rgb`` is within ``threshold`` of the last kept frame; otherwise it
        becomes the last kept frame."""
        if self.threshold <= 0:
            return False
        thumb = self.thumbnail(rgb)
        if self._last is not None and float(np.abs(thumb - self._last).mean()) < self.threshold:
            return True
        self._last = thumb
        return False
