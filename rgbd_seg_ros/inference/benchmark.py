"""Forward-latency measurement shared by ``rgbd-seg bench`` and the tests.

``time_forward`` runs a model in eval mode without autograd, synchronising CUDA around each
pass so the numbers are wall-clock latencies of complete forwards (what a ROS node sees per
frame), and reports the median, the 95th percentile and the throughput implied by the median.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]) of a non-empty list."""
    if not values:
        raise ValueError('percentile of an empty list')
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_callable(fn: Callable[[], Any], warmup: int, iters: int, device: Any = 'cpu') -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then ``iters`` timed ones."""
    if iters < 1:
        raise ValueError(f'iters must be at least 1, got {iters}')
    device = torch.device(device)
    for _ in range(max(0, warmup)):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    p50 = percentile(times, 50)
    return {
        'p50_ms': p50,
        'p95_ms': percentile(times, 95),
        'fps': 1000.0 / p50 if p50 > 0 else float('inf'),
        'iters': iters,
    }


def time_forward(
    model: nn.Module,
    rgb: torch.Tensor | None,
    depth: torch.Tensor | None,
    warmup: int = 3,
    iters: int = 10,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Latency of ``model(rgb, depth)`` in eval mode: ``dict(p50_ms, p95_ms, fps, iters)``.

    ``autocast_dtype`` (``torch.float16``/``torch.bfloat16``) runs the forward under autocast
    on the inputs' device. The model's train/eval mode is restored afterwards.
    """
    ref = rgb if rgb is not None else depth
    if ref is None:
        raise ValueError('time_forward needs rgb or depth')
    device = ref.device
    was_training = model.training
    model.eval()
    ctx = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )

    def forward() -> None:
        with torch.inference_mode(), ctx:
            model(rgb, depth)

    try:
        return time_callable(forward, warmup, iters, device)
    finally:
        model.train(was_training)
