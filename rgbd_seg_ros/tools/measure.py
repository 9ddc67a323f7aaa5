"""Forward-latency measurement shared by ``rgbd-seg bench`` and the tests.

``time_forward`` runs a model in eval mode without autograd, synchronising CUDA around each
pass so the numbers are wall-clock latencies of complete forwards (what a ROS node sees per
frame), and reports the median, the 95th percentile and the throughput implied by the median.

To say how far a path is from the device's limit the benchmark also needs the work done and
the ceiling: :func:`count_flops` counts one forward's FLOPs with torch's ``FlopCounterMode``
(matmul and convolution as 2 x multiply-accumulates; element-wise ops, normalisation,
pooling and interpolation are not counted, so the figure is a lower bound of the arithmetic),
:func:`measure_matmul_peak` measures the best GEMM throughput the device reaches in a given
dtype, and :class:`PeakMemory` records the memory a block of passes needs.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from types import TracebackType
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


def count_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one ``model(*inputs)`` without autograd (matmul/conv counted as 2 x MACs).

    The forward runs on a ``meta``-device copy of the model (shapes only, no arithmetic, so
    counting a 720x1280 forward costs no compute); a model whose forward needs real values
    (data-dependent control flow) is counted on the real inputs instead.
    """
    from torch.utils.flop_counter import FlopCounterMode

    try:
        clone = copy.deepcopy(model).to('meta')
        meta_inputs = [torch.empty_like(t, device='meta') for t in inputs]
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            clone(*meta_inputs)
        return int(counter.get_total_flops())
    except Exception:  # any meta-device limitation: count on the real inputs instead
        pass
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


def default_gemm_sizes(device: torch.device) -> tuple[int, ...]:
    """Square GEMM sizes large enough to reach the device's plateau, small enough to be quick."""
    return (2048, 4096, 8192) if device.type == 'cuda' else (512, 1024, 2048)


def measure_matmul_peak(
    device: Any, dtype: torch.dtype = torch.float32, sizes: Sequence[int] | None = None
) -> float:
    """Best FLOP/s of square ``n x n`` GEMMs on ``device`` in ``dtype`` (the reference peak).

    On the CPU the GEMMs run with torch's current thread count (what the forwards use). On CUDA
    in float32, torch's default lets cuDNN convolutions use TF32 tensor cores
    (``torch.backends.cudnn.allow_tf32``), so the fp32 reference is then measured with TF32
    matmuls too; otherwise fp32 convolutions could exceed "100 %" of an IEEE-fp32 peak.
    """
    device = torch.device(device)
    sizes = tuple(sizes) if sizes else default_gemm_sizes(device)
    cuda = device.type == 'cuda'
    warmup, batches, per_batch = (3, 3, 10) if cuda else (1, 3, 1)
    saved = torch.get_float32_matmul_precision()
    if cuda and dtype == torch.float32 and fp32_uses_tf32(device):
        torch.set_float32_matmul_precision('high')
    best = 0.0
    try:
        for n in sizes:
            a = torch.randn(n, n, device=device).to(dtype)
            b = torch.randn(n, n, device=device).to(dtype)
            c = torch.empty(n, n, device=device, dtype=dtype)
            for _ in range(warmup):
                torch.matmul(a, b, out=c)
            _sync(device)
            for _ in range(batches):
                start = time.perf_counter()
                for _ in range(per_batch):
                    torch.matmul(a, b, out=c)
                _sync(device)
                elapsed = time.perf_counter() - start
                if elapsed > 0:
                    best = max(best, 2.0 * n**3 * per_batch / elapsed)
            del a, b, c
    finally:
        torch.set_float32_matmul_precision(saved)
    return best


def fp32_uses_tf32(device: Any) -> bool:
    """Whether fp32 convolutions on ``device`` may run in TF32 (torch's CUDA default)."""
    return torch.device(device).type == 'cuda' and bool(torch.backends.cudnn.allow_tf32)


def release_free_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim(0)``); False elsewhere.

    Without it, passes after the warm-up reuse pages the heap already holds and the resident
    set does not grow at all, so an RSS-growth figure would read ~0 for every model.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library('c')
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


class PeakMemory:
    """Peak memory of the passes run inside the ``with`` block.

    CUDA: ``torch.cuda.max_memory_allocated`` after resetting the peak statistics on entry --
    the tensors torch's allocator holds at the peak (weights included; not the cached pool,
    and nothing other libraries allocate, e.g. ONNX Runtime): ``kind = 'cuda_allocated'``.
    CPU: the largest resident-set size a background thread samples (every ``interval_s``)
    minus the RSS on entry, after the C heap's free pages went back to the OS
    (:func:`release_free_heap`): ``kind = 'rss_growth'``, about the working memory of the
    passes beyond the weights. Memory a library keeps in its own pool (ONNX Runtime's arena,
    filled during the warm-up) is not growth, so ONNX Runtime rows read near 0. ``mb`` and
    ``kind`` are None when the measurement is unavailable (no psutil).
    """

    def __init__(self, device: Any, interval_s: float = 0.002) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.mb: float | None = None
        self.kind: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._base = 0
        self._peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = 'cuda_allocated'
            return self
        try:
            import psutil
        except ImportError:
            return self
        self._process = psutil.Process()
        release_free_heap()
        self._base = self._peak = self._process.memory_info().rss
        self.kind = 'rss_growth'
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.kind == 'cuda_allocated':
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._process.memory_info().rss)
            self.mb = max(0, self._peak - self._base) / 2**20
