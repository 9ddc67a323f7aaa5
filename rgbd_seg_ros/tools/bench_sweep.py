"""The forward sweep of ``rgbd-seg bench``: backends x encoders x sizes x precisions x modes.

Each row times one (backend, encoder, device, size, precision, mode) with batch 1 and states
how far it is from the device's limit: FLOPs of one forward (``count_flops``), the TFLOP/s
this latency implies and their fraction of the measured matmul peak of that device and
precision, the peak memory of the timed passes, and the ratio of its median latency to the
baseline backend's (``esanet_add``, the plain two-stream addition network) at the same
encoder, size, device, precision and mode. A mode that cannot run is a ``skipped`` row and one
that raises is a ``failed`` row, each with the reason; neither stops the sweep.
"""

from __future__ import annotations

import datetime
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from rgbd_seg_ros.inference.precision import TORCH_DTYPES
from rgbd_seg_ros.inference.threads import available_cores
from rgbd_seg_ros.modes import PRECISIONS, BenchMode, Precision
from rgbd_seg_ros.tools.measure import (
    PeakMemory,
    count_flops,
    default_gemm_sizes,
    fp32_uses_tf32,
    measure_matmul_peak,
    time_callable,
)
from rgbd_seg_ros.tools.runners import (
    ModeUnavailableError,
    Runner,
    available_modes,
    make_runner,
)

FLOPS_NOTE = (
    'gflops: FLOPs of one forward counted by torch.utils.flop_counter.FlopCounterMode '
    '(matmul and convolution as 2 x multiply-accumulates; element-wise ops, normalisation, '
    'pooling and resizing not counted); achieved_tflops = gflops / p50_ms; fraction_of_peak = '
    'achieved / matmul_peak of the same device and precision'
)
DIFF_NOTE = (
    'diff_to_fp32_eager: max |logits - fp32 eager logits| / max |fp32 eager logits| of one more '
    'forward of the row, same inputs and weights (0 for eager fp32 on the CPU; CUDA fp32 eager '
    'may use TF32, so its own rows are not 0 there)'
)
MEMORY_NOTE = (
    "peak_mem_mb with peak_mem_kind 'cuda_allocated': torch.cuda.max_memory_allocated over the "
    'timed passes (weights included; None for onnxruntime on CUDA, whose memory torch does not '
    "see); 'rss_growth': peak resident set during the timed passes minus the resident set at "
    'their start, after malloc_trim returned free heap pages (memory held in a pool such as '
    "ONNX Runtime's arena since the warm-up is not growth)"
)
RATIO_KEYS = ('encoder', 'size', 'device', 'precision', 'mode')


@dataclass
class SweepConfig:
    """What to time (the parsed ``rgbd-seg bench`` options)."""

    backends: list[str]
    encoders: list[str]
    sizes: list[tuple[int, int]]
    devices: list[str]
    modes: list[BenchMode] | None = None  # None: every mode available on each device
    precisions: list[Precision] | None = None  # None: fp32 on CPU, fp32/fp16/bf16 on CUDA
    iters: int = 10
    warmup: int = 2
    num_classes: int = 20
    depth_channels: int = 1
    baseline: str | None = 'esanet_add'
    echo: Callable[[str], None] = field(default=print)


def device_precisions(device: str) -> list[Precision]:
    """Precisions a device runs: fp32 on the CPU; fp32, fp16 and bf16 (autocast) on CUDA."""
    return list(PRECISIONS) if torch.device(device).type == 'cuda' else ['fp32']


def planned_precisions(config: SweepConfig, device: str) -> list[Precision]:
    return list(config.precisions) if config.precisions else device_precisions(device)


def machine_info() -> dict[str, Any]:
    """Where the figures come from: CPU model, usable cores, GPU, library versions, date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as stream:
            for line in stream:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import onnxruntime as ort

        ort_version: str | None = ort.__version__
        ort_providers: list[str] = list(ort.get_available_providers())
    except ImportError:
        ort_version, ort_providers = None, []
    cuda = torch.cuda.is_available()
    return {
        'cpu': cpu,
        'cpu_cores': available_cores(),
        'torch_threads': torch.get_num_threads(),
        'gpu': torch.cuda.get_device_name(0) if cuda else None,
        'cuda': torch.version.cuda if cuda else None,
        'torch': torch.__version__,
        'onnxruntime': ort_version,
        'onnxruntime_providers': ort_providers,
        'python': platform.python_version(),
        'platform': platform.platform(),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }


def measure_peaks(config: SweepConfig) -> list[dict[str, Any]]:
    """Matmul peak once per device and planned precision (CPU: fp32 only)."""
    peaks = []
    for device in config.devices:
        supported = device_precisions(device)
        for precision in planned_precisions(config, device):
            if precision not in supported:
                continue
            dtype = TORCH_DTYPES[precision]
            entry: dict[str, Any] = {
                'device': device,
                'precision': precision,
                'gemm_sizes': list(default_gemm_sizes(torch.device(device))),
                'threads': torch.get_num_threads() if torch.device(device).type == 'cpu' else None,
                'tf32': precision == 'fp32' and fp32_uses_tf32(device),
            }
            try:
                entry['tflops'] = measure_matmul_peak(device, dtype) / 1e12
            except RuntimeError as err:  # includes CUDA out-of-memory
                entry['tflops'], entry['error'] = None, str(err).splitlines()[0]
            peaks.append(entry)
    return peaks


def _peak_of(peaks: list[dict[str, Any]], device: str, precision: str) -> float | None:
    for entry in peaks:
        if entry['device'] == device and entry['precision'] == precision:
            return entry.get('tflops')
    return None


def baseline_ratio(row: dict[str, Any], rows: list[dict[str, Any]], baseline: str) -> Any:
    """``row``'s p50 over the baseline's p50 at the same encoder/size/device/precision/mode."""
    if row.get('status') != 'ok':
        return None
    for other in rows:
        if (
            other['backend'] == baseline
            and other.get('status') == 'ok'
            and all(other.get(k) == row.get(k) for k in RATIO_KEYS)
            and other['p50_ms'] > 0
        ):
            return row['p50_ms'] / other['p50_ms']
    return None


def add_baseline_ratios(rows: list[dict[str, Any]], baseline: str | None) -> None:
    """Set ``ratio_to_baseline`` (None without a matching successful baseline row) in place."""
    for row in rows:
        row['ratio_to_baseline'] = baseline_ratio(row, rows, baseline) if baseline else None


def _base_row(backend: str, encoder: str, device: str, size: tuple[int, int]) -> dict[str, Any]:
    return {
        'backend': backend,
        'encoder': encoder,
        'device': device,
        'size': f'{size[0]}x{size[1]}',
        'batch': 1,
    }


def _time_row(
    row: dict[str, Any],
    runner: Callable[[], None],
    config: SweepConfig,
    peak_tflops: float | None,
) -> None:
    device = torch.device(row['device'])
    for _ in range(max(0, config.warmup)):
        runner()
    with PeakMemory(device) as memory:
        stats = time_callable(runner, 0, config.iters, device)
    row.update(stats)
    row['status'] = 'ok'
    row['peak_mem_mb'] = memory.mb
    row['peak_mem_kind'] = memory.kind
    if row['mode'] == 'onnxruntime' and device.type == 'cuda':
        row['peak_mem_mb'], row['peak_mem_kind'] = None, None  # ORT memory is not torch's
    gflops = row.get('gflops')
    if gflops is not None and stats['p50_ms'] > 0:
        row['achieved_tflops'] = gflops / stats['p50_ms']  # 1e9 FLOP / 1e-3 s = 1e12 FLOP/s
        if peak_tflops:
            row['fraction_of_peak'] = row['achieved_tflops'] / peak_tflops


def reference_logits(model: torch.nn.Module, rgb: torch.Tensor, depth: torch.Tensor) -> Any:
    """The model's fp32 eager logits on these inputs (CPU float32), or None if it cannot run."""
    try:
        with torch.inference_mode():
            return Runner(lambda: model(rgb, depth)).output()
    except Exception:  # the rows say why the model cannot run
        return None


def relative_difference(output: torch.Tensor, reference: torch.Tensor) -> float | None:
    """``max |output - reference| / max |reference|``; None for outputs of another shape."""
    if output.shape != reference.shape:
        return None
    scale = float(reference.abs().max()) or 1.0
    return float((output - reference).abs().max()) / scale


def run_one(
    row: dict[str, Any],
    model: torch.nn.Module,
    rgb: torch.Tensor,
    depth: torch.Tensor,
    config: SweepConfig,
    peak_tflops: float | None,
    reference: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Build the row's runner and time it; fills ``status`` (ok/skipped/failed) and figures.

    With ``reference`` (the fp32 eager logits), ``diff_to_fp32_eager`` is how far this mode's
    logits are from them, relative to their largest magnitude: a mode that is fast because it
    computes something else shows here (compiled and captured forms, ONNX export, half
    precision).
    """
    row.update({'status': None, 'reason': None, 'p50_ms': None, 'p95_ms': None, 'fps': None})
    row['diff_to_fp32_eager'] = None
    row['achieved_tflops'] = None
    row.update({'fraction_of_peak': None, 'peak_mem_mb': None, 'peak_mem_kind': None})
    device = torch.device(row['device'])
    if row['precision'] not in device_precisions(row['device']):
        row.update(status='skipped', reason=f'{device.type} runs fp32 only')
        return row
    runner = None
    try:
        with tempfile.TemporaryDirectory(prefix='rgbd_bench_') as workdir:
            runner = make_runner(row['mode'], model, rgb, depth, row['precision'], workdir=workdir)
            _time_row(row, runner, config, peak_tflops)
            if reference is not None:
                row['diff_to_fp32_eager'] = relative_difference(runner.output(), reference)
    except ModeUnavailableError as err:
        row.update(status='skipped', reason=str(err))
    except Exception as err:  # a failing mode is a row, never the end of the benchmark
        lines = str(err).strip().splitlines() or [type(err).__name__]
        row.update(status='failed', reason=f'{type(err).__name__}: {lines[0][:300]}')
    finally:
        del runner
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return row


def format_row(row: dict[str, Any]) -> str:
    """One table line."""
    head = (
        f'{row["backend"]:12s} {row["encoder"]:16s} {row["device"]:5s} '
        f'{row.get("precision", "-"):5s} {row.get("mode", "-"):17s} {row["size"]:>9s}'
    )
    if row.get('status') != 'ok':
        return f'{head}  {row.get("status", "?")}: {row.get("reason", "")}'

    def num(key: str, spec: str, scale: float = 1.0) -> str:
        value = row.get(key)
        return '-' if value is None else format(value * scale, spec)

    gflops = row.get('gflops')
    return (
        f'{head} {num("p50_ms", ".1f"):>9s} {num("p95_ms", ".1f"):>9s} {num("fps", ".1f"):>8s}'
        f' {"-" if gflops is None else format(gflops, ".1f"):>8s}'
        f' {num("achieved_tflops", ".3f"):>7s} {num("fraction_of_peak", ".1f", 100.0):>6s}'
        f' {num("peak_mem_mb", ".0f"):>7s} {num("ratio_to_baseline", ".2f"):>6s}'
    )


TABLE_HEADER = (
    f'{"backend":12s} {"encoder":16s} {"dev":5s} {"prec":5s} {"mode":17s} {"size":>9s}'
    f' {"p50 ms":>9s} {"p95 ms":>9s} {"fps":>8s} {"GFLOP":>8s} {"TFLOP/s":>7s} {"%peak":>6s}'
    f' {"mem MB":>7s} {"x base":>6s}'
)


def _backend_order(config: SweepConfig) -> list[str]:
    names = list(dict.fromkeys(config.backends))
    if config.baseline:
        names = [config.baseline] + [n for n in names if n != config.baseline]
    return names


def _build(backend: str, encoder: str, device: str, config: SweepConfig) -> Any:
    from rgbd_seg_ros.backends.registry import build_backend

    torch.manual_seed(0)
    model = build_backend(
        backend, config.num_classes, encoder=encoder, depth_channels=config.depth_channels
    ).eval()
    model = model.to(device)
    if torch.device(device).type == 'cuda':
        model = model.to(memory_format=torch.channels_last)
    return model


def _inputs(device: str, size: tuple[int, int], channels: int) -> tuple[Any, Any]:
    h, w = size
    rgb = torch.randn(1, 3, h, w, device=device)
    depth = torch.rand(1, channels, h, w, device=device)
    if torch.device(device).type == 'cuda':
        rgb = rgb.contiguous(memory_format=torch.channels_last)
        depth = depth.contiguous(memory_format=torch.channels_last)
    return rgb, depth


def sweep_forward(config: SweepConfig, peaks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Time every combination; echoes one table line per row as it is measured.

    The baseline backend goes first, so every later row's ratio is known when it is printed.
    FLOPs are counted once per backend, encoder and size.
    """
    rows: list[dict[str, Any]] = []
    flops: dict[tuple[str, str, tuple[int, int]], int | None] = {}

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        if config.baseline:
            row['ratio_to_baseline'] = baseline_ratio(row, rows, config.baseline)
        config.echo(format_row(row))

    config.echo(TABLE_HEADER)
    for device in config.devices:
        modes = list(config.modes) if config.modes else available_modes(device)
        for backend in _backend_order(config):
            for encoder in config.encoders:
                try:
                    model = _build(backend, encoder, device, config)
                except Exception as err:  # e.g. an encoder this backend does not take
                    for size in config.sizes:
                        row = _base_row(backend, encoder, device, size)
                        row.update(precision='-', mode='-', status='failed')
                        row['reason'] = f'{type(err).__name__}: {str(err).splitlines()[0]}'
                        emit(row)
                    continue
                params = sum(p.numel() for p in model.parameters())
                for size in config.sizes:
                    rgb, depth = _inputs(device, size, config.depth_channels)
                    key = (backend, encoder, size)
                    if key not in flops:
                        try:
                            flops[key] = count_flops(model, rgb, depth)
                        except Exception:  # counting is informative only
                            flops[key] = None
                    count = flops[key]
                    reference = reference_logits(model, rgb, depth)
                    for precision in planned_precisions(config, device):
                        peak = _peak_of(peaks, device, precision)
                        for mode in modes:
                            row = _base_row(backend, encoder, device, size)
                            row.update(precision=precision, mode=mode, params=params)
                            row['gflops'] = None if count is None else count / 1e9
                            emit(run_one(row, model, rgb, depth, config, peak, reference))
                del model
                if torch.device(device).type == 'cuda':
                    torch.cuda.empty_cache()
    add_baseline_ratios(rows, config.baseline)
    return rows


__all__ = [
    'DIFF_NOTE',
    'FLOPS_NOTE',
    'MEMORY_NOTE',
    'SweepConfig',
    'add_baseline_ratios',
    'baseline_ratio',
    'device_precisions',
    'format_row',
    'machine_info',
    'measure_peaks',
    'reference_logits',
    'relative_difference',
    'run_one',
    'sweep_forward',
]
