"""Dataset label ids <-> the network's outputs.

A network has one output per class, in ascending order of the classes' label ids, whatever
those ids are: a dataset whose labels use ids 1, 2 and 3 trains a three-output network, not a
four-output one with a phantom class 0 that nothing labels. The label ids travel with the
checkpoint (``class_ids``), so the node still publishes the dataset's ids
(doc/design.md §3.2, §3.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_LABEL_ID = 65535  # label images are uint8 or uint16


def target_ignore(ignore_index: int, num_outputs: int) -> int:
    """The value marking "no label" among output indices: the dataset's ignore id, unless that
    is itself an output index (ids 1..3 with ignore 0 give outputs 0..2), then ``num_outputs``.
    """
    return ignore_index if ignore_index >= num_outputs or ignore_index < 0 else num_outputs


def output_lut(class_ids: Sequence[int], fill: int) -> np.ndarray:
    """int64 [65536]: label id -> output index; ids that are not classes -> ``fill``."""
    lut = np.full(MAX_LABEL_ID + 1, fill, np.int64)
    lut[np.asarray(class_ids, np.int64)] = np.arange(len(class_ids), dtype=np.int64)
    return lut


def to_outputs(labels: np.ndarray, lut: np.ndarray, fill: int) -> np.ndarray:
    """int64 output indices of a label image (ids out of 0..65535 become ``fill``)."""
    raw = np.asarray(labels)
    if raw.dtype in (np.uint8, np.uint16):
        mapped: np.ndarray = lut[raw]
        return mapped
    raw = raw.astype(np.int64)
    out = np.full(raw.shape, fill, np.int64)
    valid = (raw >= 0) & (raw <= MAX_LABEL_ID)
    out[valid] = lut[raw[valid]]
    return out


def is_identity(class_ids: Sequence[int]) -> bool:
    """True when output ``c`` is label id ``c`` for every output."""
    return list(class_ids) == list(range(len(class_ids)))
