"""Where a converted frame's labels come from: a label topic (remapped) or a labeller.

Recorded label ids are remapped with ``--label-map`` or, given a class list, checked against
it; anything unknown becomes the ignore index and is counted. Pseudo-labels come from a
:class:`Labeller` the caller injects (the CLI and the trainer build one from a checkpoint), so
the converter never loads models itself; pixels below the confidence threshold become ignore.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Labeller(Protocol):
    """Pseudo-labels of one frame: ``(labels HxW int, confidence HxW float in [0, 1])``.

    ``rgb`` is RGB uint8 HxWx3, ``depth_mm`` uint16 millimetres HxW (0 = invalid), ``K`` the
    3x3 intrinsics; the arrays may be read-only views of message buffers. With ``--jobs`` the
    labeller is pickled into every worker process, so one that loads a model should load it
    on its first call, not when it is built.
    """

    def __call__(
        self, rgb: np.ndarray, depth_mm: np.ndarray, K: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _label_dtype(ignore: int, largest: int) -> type[np.unsignedinteger]:
    return np.uint8 if ignore <= 255 and largest <= 255 else np.uint16


class LabelMapper:
    """Recorded label ids -> dataset ids, with the ids and unknown pixels it met counted."""

    def __init__(
        self, ignore: int, label_map: dict[int, int] | None, class_ids: list[int] | None
    ) -> None:
        self.ignore = ignore
        self.lut: np.ndarray | None = None
        if label_map is not None:
            self.lut = np.full(65536, ignore, np.uint16)
            for src, dst in label_map.items():
                self.lut[int(src)] = int(dst)
        self.known: np.ndarray | None = None  # which ids are classes (or ignore)
        if class_ids:
            self.known = np.zeros(65536, bool)
            self.known[class_ids] = True
            self.known[ignore] = True
        self.ids_seen: set[int] = set()
        self.unmapped_pixels = 0

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        mapped: np.ndarray
        if self.lut is not None:
            mapped = self.lut[labels]
            self.unmapped_pixels += int(
                np.count_nonzero((mapped == self.ignore) & (labels != self.ignore))
            )
        else:
            mapped = labels
            if self.known is not None:
                unknown = ~self.known[labels]
                n = int(np.count_nonzero(unknown))
                if n:
                    self.unmapped_pixels += n
                    mapped = np.where(unknown, self.ignore, labels)
        present = np.flatnonzero(np.bincount(mapped.ravel(), minlength=1))
        self.ids_seen.update(int(i) for i in present if i != self.ignore)
        largest = int(present[-1]) if present.size else 0
        return mapped.astype(_label_dtype(self.ignore, largest), copy=False)


class PseudoLabels:
    """Runs a labeller and turns its low-confidence pixels into the ignore index."""

    def __init__(self, labeller: Labeller, threshold: float, ignore: int) -> None:
        self.labeller, self.threshold, self.ignore = labeller, threshold, ignore
        self.low_confidence_pixels = 0

    def __call__(
        self, rgb: np.ndarray, depth_mm: np.ndarray, K: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        labels, confidence = self.labeller(rgb, depth_mm, K)
        confidence = np.asarray(confidence, np.float32)
        labels = np.asarray(labels).astype(np.int64)
        low = confidence < self.threshold
        self.low_confidence_pixels += int(np.count_nonzero(low))
        labels[low] = self.ignore
        return labels.astype(_label_dtype(self.ignore, int(labels.max(initial=0)))), confidence
