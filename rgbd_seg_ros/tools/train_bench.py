"""Training throughput per backend (images/s) on random data at a fixed resolution.

One measured step is what the trainer does per batch: forward in training mode, the loss with
auxiliary heads, backward, optimiser step. Warm-up steps are not timed; on CUDA the clock is
read after ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from rgbd_seg_ros.training.evaluate import autocast
from rgbd_seg_ros.training.losses import SegLoss


@dataclass
class BenchResult:
    backend: str
    device: str
    precision: str
    batch_size: int
    height: int
    width: int
    steps: int
    seconds_per_step: float
    params_m: float

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.seconds_per_step


def bench_training(
    backend: str,
    *,
    options: dict[str, Any] | None = None,
    num_classes: int = 40,
    batch_size: int = 2,
    height: int = 480,
    width: int = 640,
    steps: int = 3,
    warmup: int = 1,
    device: str = 'cpu',
    precision: str = 'fp32',
    channels_last: bool = True,
) -> BenchResult:
    """Time ``steps`` training steps of ``backend`` built with ``options``."""
    from rgbd_seg_ros.backends.registry import build_backend

    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_backend(backend, num_classes=num_classes, **(options or {})).to(dev)
    depth_ch = model.config.depth_channels
    fmt = (
        torch.channels_last if (channels_last and dev.type == 'cuda') else torch.contiguous_format
    )
    model = model.to(memory_format=fmt).train()
    precision = precision if dev.type == 'cuda' else 'fp32'
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler('cuda', enabled=precision == 'fp16')
    loss_fn = SegLoss(ignore_index=255)
    rgb = torch.randn(batch_size, 3, height, width, device=dev).contiguous(memory_format=fmt)
    depth = torch.rand(batch_size, depth_ch, height, width, device=dev)
    depth = depth.contiguous(memory_format=fmt)
    labels = torch.randint(0, num_classes, (batch_size, height, width), device=dev)

    def step() -> None:
        with autocast(dev, precision):
            out = model(rgb, depth)
        loss, _ = loss_fn(out, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if dev.type == 'cuda':
            torch.cuda.synchronize(dev)

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return BenchResult(
        backend, str(dev), precision, batch_size, height, width, steps, elapsed / steps, params
    )


def format_results(results: list[BenchResult]) -> str:
    lines = [
        f'{"backend":14s} {"device":8s} {"prec":5s} {"batch":>5s} {"size":>9s} '
        f'{"params(M)":>9s} {"s/step":>8s} {"images/s":>9s}'
    ]
    for r in results:
        lines.append(
            f'{r.backend:14s} {r.device:8s} {r.precision:5s} {r.batch_size:5d} '
            f'{r.height:4d}x{r.width:<4d} {r.params_m:9.1f} {r.seconds_per_step:8.3f} '
            f'{r.images_per_s:9.2f}'
        )
    return '\n'.join(lines)
