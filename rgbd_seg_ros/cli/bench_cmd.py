"""``rgbd-seg bench``: how fast each backend's forward and the whole node are, and how far
from the device's limit.

Forward sweep (batch 1, random weights: latency does not depend on them): every backend x
encoder x size (``--sizes``, default 480x640 and 720x1280) x precision (fp32 on the CPU;
fp32, fp16 and bf16 autocast with channels_last tensors on CUDA) x execution mode
(``--modes``, default every mode the device has: ``eager``, ``compile`` (torch.compile),
``cudagraph`` (CUDA only), ``onnxruntime`` (the fp32 ONNX export on the CPU or CUDA
provider); see ``rgbd_seg_ros.tools.runners``). Each row gives latency p50/p95 and
throughput, the FLOPs of one forward (torch's FlopCounterMode: matmul/conv as 2 x MACs), the
TFLOP/s that latency implies and its fraction of the device's matmul peak (measured once per
device and precision with square GEMMs and printed in the header), the peak memory of the
timed passes (CUDA: torch's max allocated; CPU: growth of the resident set), and
``ratio_to_baseline``: p50 over the p50 of the baseline backend (``--baseline``, default
``esanet_add``, a plain two-stream network with addition fusion in ESANet's shape) at the same
encoder, size, device, precision and mode. Each row's logits are compared with the fp32 eager
forward (``diff_to_fp32_eager`` in the JSON). A mode that cannot run is a ``skipped`` row and a
mode that raises a ``failed`` row, with the reason; the sweep goes on.

``--node`` also replays frames through the running segmentation node
(``rgbd_seg_ros.tools.node_bench``, in-process; ``--no-forward`` runs only that), and the HHA
encoding is timed on a synthetic 480x640 depth image unless ``--no-hha``. ``--json`` writes
one document: ``machine``, ``matmul_peak``, ``forward`` rows, ``hha``, ``node``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from rgbd_seg_ros.modes import BENCH_MODES, PRECISIONS

DEFAULT_BACKENDS = ('adapnetpp', 'ssma')
DEFAULT_ENCODERS = ('resnet18', 'preact_resnet50')
DEFAULT_SIZES = ((480, 640), (720, 1280))


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must be HxW, e.g. 480x640, got {text!r}') from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f'size must be positive, got {text!r}')
    return h, w


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        'bench',
        help='forward latency, FLOPs, fraction of peak and memory of the backends; node replay',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        '--backends',
        nargs='+',
        default=list(DEFAULT_BACKENDS),
        help='backends to time (default: adapnetpp ssma; the baseline is added)',
    )
    parser.add_argument(
        '--encoders',
        nargs='+',
        default=list(DEFAULT_ENCODERS),
        help="encoders (default: resnet18 preact_resnet50, the paper's ResNet-50)",
    )
    parser.add_argument(
        '--sizes',
        nargs='+',
        type=_size,
        default=None,
        help='input sizes HxW (default: 480x640 720x1280)',
    )
    parser.add_argument('--size', type=_size, default=None, help='one size HxW (= --sizes HxW)')
    parser.add_argument(
        '--modes',
        nargs='+',
        choices=BENCH_MODES,
        default=None,
        help='execution modes (default: every mode available on the device)',
    )
    parser.add_argument(
        '--precisions',
        nargs='+',
        choices=PRECISIONS,
        default=None,
        help='precisions (default: fp32 on the CPU, fp32 fp16 bf16 on CUDA)',
    )
    parser.add_argument('--iters', type=int, default=10, help='timed passes (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed passes (default 2)')
    parser.add_argument('--num-classes', type=int, default=20, help='classes (default 20)')
    parser.add_argument(
        '--depth-channels',
        type=int,
        default=1,
        help='depth tensor channels (default 1, metric depth)',
    )
    parser.add_argument(
        '--devices',
        nargs='+',
        default=None,
        help='devices (default: cpu, plus cuda when available)',
    )
    parser.add_argument(
        '--baseline',
        default='esanet_add',
        help='backend every row is stated as a ratio to (default esanet_add)',
    )
    parser.add_argument('--no-baseline', action='store_true', help='no baseline rows or ratios')
    parser.add_argument('--no-forward', action='store_true', help='skip the forward sweep')
    parser.add_argument('--no-hha', action='store_true', help='skip the HHA timing')
    parser.add_argument(
        '--cudnn-benchmark',
        action='store_true',
        help="let cuDNN time its algorithms for each shape first (torch's "
        'backends.cudnn.benchmark; off by default, as in the node)',
    )
    parser.add_argument(
        '--node', action='store_true', help='also run the node replay (node_bench)'
    )
    parser.add_argument(
        '--node-checkpoint',
        default='',
        help="node replay model (default: node_bench's random SSMA with ResNet-18 experts)",
    )
    parser.add_argument(
        '--node-seconds', type=float, default=20.0, help='node replay length (default 20)'
    )
    parser.add_argument(
        '--node-size', type=_size, default=(480, 640), help='node camera size HxW (480x640)'
    )
    parser.add_argument('--node-device', default='auto', help='node device (default auto)')
    parser.add_argument(
        '--node-precision', choices=PRECISIONS, default='fp32', help='node precision (fp32)'
    )
    parser.add_argument('--json', type=Path, default=None, help='write the results to PATH')
    parser.set_defaults(func=run)


def sweep_config(args: argparse.Namespace) -> Any:
    """The forward sweep's settings from the parsed options (checks names and devices)."""
    import torch

    from rgbd_seg_ros.backends.registry import get_entry
    from rgbd_seg_ros.errors import ConfigError
    from rgbd_seg_ros.tools.bench_sweep import SweepConfig

    if args.iters < 1:
        raise ConfigError(f'--iters must be at least 1, got {args.iters}')
    if args.size is not None and args.sizes is not None:
        raise ConfigError('give --sizes or --size, not both')
    sizes = [args.size] if args.size is not None else list(args.sizes or DEFAULT_SIZES)
    devices = args.devices or (['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    for device in devices:
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise ConfigError('--devices cuda requested but CUDA is not available')
    baseline = None if args.no_baseline else args.baseline
    for name in [*args.backends, *([baseline] if baseline else [])]:
        get_entry(name)  # ConfigError listing the valid names
    return SweepConfig(
        backends=list(args.backends),
        encoders=list(args.encoders),
        sizes=sizes,
        devices=list(devices),
        modes=list(args.modes) if args.modes else None,
        precisions=list(args.precisions) if args.precisions else None,
        iters=args.iters,
        warmup=args.warmup,
        num_classes=args.num_classes,
        depth_channels=args.depth_channels,
        baseline=baseline,
        echo=lambda line: print(line, flush=True),
    )


def bench_hha(iters: int, warmup: int = 1) -> dict[str, Any] | None:
    """Time ``hha_encode`` at 480x640 on a synthetic depth image; None when HHA is absent."""
    import importlib

    import numpy as np

    from rgbd_seg_ros.tools.measure import time_callable

    try:
        hha = importlib.import_module('rgbd_seg_ros.core.hha')
        encode = hha.hha_encode
    except (ImportError, AttributeError):
        print('hha: rgbd_seg_ros.core.hha.hha_encode is not installed; HHA timing skipped')
        return None
    h, w = 480, 640
    K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]], dtype=np.float64)
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    depth = 1.0 + 3.0 * rows / h + 0.5 * np.sin(cols / 40.0)  # floor-like ramp with structure
    depth = depth.astype(np.float32)
    depth[200:240, 300:360] = 0.0  # a hole
    stats = time_callable(lambda: encode(depth, K), warmup, iters)
    print(
        f'hha_encode 480x640 (numpy, CPU)  p50 {stats["p50_ms"]:9.1f} ms  '
        f'p95 {stats["p95_ms"]:9.1f} ms  {stats["fps"]:7.2f} fps'
    )
    return {'size': '480x640', **stats}


def bench_node(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``node_bench`` in-process (it starts the node as a child process); prints its report."""
    from rgbd_seg_ros.tools import node_bench

    h, w = args.node_size
    argv = [
        '--checkpoint',
        args.node_checkpoint,
        '--seconds',
        str(args.node_seconds),
        '--size',
        f'{w}x{h}',  # node_bench takes WxH
        '--device',
        args.node_device,
        '--precision',
        args.node_precision,
    ]
    with tempfile.TemporaryDirectory(prefix='rgbd_bench_node_') as workdir:
        result = node_bench.measure(node_bench.parse_args(argv), Path(workdir))
    print(node_bench.report(result), flush=True)
    return result


def _header(machine: dict[str, Any], peaks: list[dict[str, Any]]) -> str:
    lines = [
        f'{machine["cpu"]}, {machine["cpu_cores"]} cores ({machine["torch_threads"]} torch '
        f'threads)'
        + (f', {machine["gpu"]}' if machine['gpu'] else ', no GPU')
        + f'; torch {machine["torch"]}, onnxruntime {machine["onnxruntime"]}; {machine["date"]}'
        + ('; cuDNN benchmark on' if machine.get('cudnn_benchmark') else '')
    ]
    for entry in peaks:
        value = entry.get('tflops')
        figure = 'n/a' if value is None else f'{value:.3f} TFLOP/s'
        note = ' (TF32)' if entry.get('tf32') else ''
        sizes = '/'.join(str(n) for n in entry['gemm_sizes'])
        lines.append(
            f'matmul peak {entry["device"]} {entry["precision"]}{note}: {figure} '
            f'(best square GEMM of {sizes})'
        )
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print/write the figures."""
    import torch

    from rgbd_seg_ros.tools.bench_sweep import (
        DIFF_NOTE,
        FLOPS_NOTE,
        MEMORY_NOTE,
        machine_info,
        measure_peaks,
        sweep_forward,
    )

    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    config = None if args.no_forward else sweep_config(args)
    machine = machine_info()
    machine['cudnn_benchmark'] = torch.backends.cudnn.benchmark
    peaks = measure_peaks(config) if config else []
    print(_header(machine, peaks), flush=True)
    rows = sweep_forward(config, peaks) if config else []
    hha = None if args.no_hha else bench_hha(max(1, min(args.iters, 10)))
    node = bench_node(args) if args.node else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            'machine': machine,
            'settings': {
                'iters': args.iters,
                'warmup': args.warmup,
                'batch': 1,
                'num_classes': args.num_classes,
                'depth_channels': args.depth_channels,
                'baseline': config.baseline if config else None,
            },
            'matmul_peak': peaks,
            'flops_note': FLOPS_NOTE,
            'diff_note': DIFF_NOTE,
            'memory_note': MEMORY_NOTE,
            'forward': rows,
            'hha': hha,
            'node': node,
        }
        args.json.write_text(json.dumps(doc, indent=2) + '\n', encoding='utf-8')
        print(f'wrote {args.json}')
    if node is not None and node.get('node_exit_code') not in (0, None):
        return 1
    return 0
