"""Efficiency of the asymmetric non-local blocks against the standard one (ANN paper, Table 1).

One block at C = 2048, C^ = 256: multiply-accumulates in closed form, peak memory of the
live tensors of one forward, and the mean time per pass. ``rgbd-seg bench-nonlocal`` prints the
table; the networks themselves are in :mod:`rgbd_seg_ros.backends.nonlocal_blocks`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rgbd_seg_ros.backends.nonlocal_blocks import APNB, NonLocalBlock

# Efficiency measurement (paper Table 1: one block, C = 2048, C^ = 256, input 256x128)
# --------------------------------------------------------------------------------------------

#: The paper's Table 1 (Titan Xp): (GFLOPs, memory MB, time ms) per (block, H, W).
PAPER_TABLE1: dict[tuple[str, int, int], tuple[float, float, float]] = {
    ('NB', 96, 96): (58.0, 609.0, 19.5),
    ('APNB', 96, 96): (15.5, 150.0, 12.4),
    ('NB', 128, 256): (601.4, 7797.0, 179.4),
    ('APNB', 128, 256): (43.5, 277.0, 30.8),
}


@dataclass(frozen=True)
class BenchRow:
    """One measured block: multiply-accumulates (G), peak memory (MB), mean time (ms)."""

    block: str
    height: int
    width: int
    gmacs: float
    peak_mb: float
    time_ms: float
    device: str
    memory_method: str


def analytic_gmacs(
    block: str, channels: int, key: int, height: int, width: int, *, anchors: int = 110
) -> float:
    """Closed-form MACs of one block (shared q/k projection, value, W_o, two matmuls)."""
    n = height * width
    m = anchors if block == 'APNB' else n
    proj = (channels * key + channels * key + key * channels) * n
    return (proj + 2 * key * n * m) / 1e9


class _LiveTensorTracker:
    """Peak bytes of live tensor storages created while active (CPU allocator accounting).

    A ``TorchDispatchMode`` sees every op's outputs; each new storage is counted until Python
    releases it (a weakref finaliser). Deterministic, unlike RSS; counts what the caching-free
    CPU allocator hands out for tensors, not interpreter overhead.
    """

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._see(out)
                return out

        self.mode = _Mode()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int, nbytes: int) -> None:
        if self.live.pop(key, None) is not None:
            self.current -= nbytes

    def _see(self, out: object) -> None:
        import weakref

        from torch.utils._pytree import tree_flatten

        for item in tree_flatten(out)[0]:
            if not isinstance(item, torch.Tensor):
                continue
            storage = item.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self.live:
                continue
            self.live[key] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key, nbytes)

    def __enter__(self) -> _LiveTensorTracker:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


def _measure(module: nn.Module, x: torch.Tensor, iters: int) -> tuple[float, float, str, float]:
    """(GMACs from the flop counter, peak MB, memory method, mean ms) of ``module(x)``."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            module(x)
        gmacs = counter.get_total_flops() / 2e9
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
            torch.cuda.reset_peak_memory_stats(x.device)
            base = torch.cuda.memory_allocated(x.device)
            module(x)
            torch.cuda.synchronize(x.device)
            peak = (torch.cuda.max_memory_allocated(x.device) - base) / 2**20
            method = 'cuda allocator (max_memory_allocated)'
        else:
            with _LiveTensorTracker() as tracker:
                out = module(x)
                del out
            peak = tracker.peak / 2**20
            method = 'cpu live-tensor tracker'
        module(x)  # warm-up
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        for _ in range(iters):
            module(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        ms = (time.perf_counter() - start) * 1000 / max(iters, 1)
    return gmacs, peak, method, ms


def bench_nonlocal(
    height: int = 128,
    width: int = 256,
    *,
    channels: int = 2048,
    key_channels: int = 256,
    iters: int = 2,
    device: str = 'cpu',
    blocks: Sequence[str] = ('NB', 'APNB'),
) -> list[BenchRow]:
    """Measure APNB against the standard non-local block at one input size (batch 1).

    The paper's Table 1 uses 256x128 (W x H), C = 2048, C^ = 256. Peak memory excludes the input
    and the weights; the NB at 256x128 needs about 9 GB (two 32768^2 fp32 maps) on CPU.
    """
    torch.manual_seed(0)
    dev = torch.device(device)
    x = torch.randn(1, channels, height, width, device=dev)
    rows = []
    for name in blocks:
        module: nn.Module
        if name == 'NB':
            module = NonLocalBlock(channels, key_channels, key_channels)
        elif name == 'APNB':
            module = APNB(
                channels,
                channels,
                key_channels=key_channels,
                value_channels=key_channels,
                fuse=False,
            )
        else:
            raise ValueError(f'unknown block {name!r}; valid: NB, APNB')
        module = module.to(dev).eval()
        gmacs, peak, method, ms = _measure(module, x, iters)
        rows.append(BenchRow(name, height, width, gmacs, peak, ms, dev.type, method))
        del module
    return rows


def format_bench_table(rows: Sequence[BenchRow], channels: int = 2048, key: int = 256) -> str:
    """Plain-text table of measured rows next to the paper's Table 1 where it has the size."""
    head = (
        f'{"block":6s} {"input WxH":>10s} {"GMACs":>9s} {"(calc)":>9s} {"peak MB":>10s} '
        f'{"time ms":>10s} | {"paper GFLOPs":>12s} {"MB":>7s} {"ms":>7s}'
    )
    lines = [head, '-' * len(head)]
    by_block = {}
    for row in rows:
        paper = PAPER_TABLE1.get((row.block, row.height, row.width))
        calc = analytic_gmacs(row.block, channels, key, row.height, row.width)
        ptxt = f'{paper[0]:12.1f} {paper[1]:7.0f} {paper[2]:7.1f}' if paper else f'{"-":>12s}'
        lines.append(
            f'{row.block:6s} {f"{row.width}x{row.height}":>10s} {row.gmacs:9.1f} {calc:9.1f} '
            f'{row.peak_mb:10.1f} {row.time_ms:10.1f} | {ptxt}'
        )
        by_block[row.block] = row
    if 'NB' in by_block and 'APNB' in by_block:
        nb, ap = by_block['NB'], by_block['APNB']
        lines.append(
            f'NB / APNB: {nb.gmacs / ap.gmacs:.1f}x MACs, '
            f'{nb.peak_mb / max(ap.peak_mb, 1e-9):.1f}x memory, '
            f'{nb.time_ms / max(ap.time_ms, 1e-9):.1f}x time '
            f'(paper at 256x128: 13.8x FLOPs, 28.1x memory, 5.8x time)'
        )
    if rows:
        lines.append(
            f'device: {rows[0].device}; memory: {rows[0].memory_method}; '
            'GMACs from torch.utils.flop_counter (paper "GFLOPs" are MAC counts, '
            'see doc/backends/ann.md §4.4)'
        )
    return '\n'.join(lines)
