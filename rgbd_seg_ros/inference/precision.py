"""The torch side of the shared precision modes (the modes are ``rgbd_seg_ros.modes``).

One table for the engine, the benchmark runners and evaluation, so 'fp16' means the same dtype
everywhere; fp32 runs without autocast.
"""

from __future__ import annotations

import torch

from rgbd_seg_ros.modes import PRECISIONS, Precision, as_choice

TORCH_DTYPES: dict[Precision, torch.dtype] = {
    'fp32': torch.float32,
    'fp16': torch.float16,
    'bf16': torch.bfloat16,
}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast runs ``precision`` in; None for fp32 (no autocast)."""
    checked = as_choice(precision, PRECISIONS, 'precision')
    return None if checked == 'fp32' else TORCH_DTYPES[checked]
