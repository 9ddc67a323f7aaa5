"""``rgbd-seg bench``: forward latency of the backends (batch 1) and of the HHA encoding.

For every backend x encoder it builds the network with random weights (latency does not depend
on the weights) and times ``model(rgb, depth)`` at ``--size`` on the CPU, and, when CUDA is
available, on the GPU in fp32, fp16 and bf16 (autocast) with channels_last tensors. It then
times ``rgbd_seg_ros.core.hha.hha_encode`` on a synthetic 480x640 depth image when that module
is installed. ``--json`` writes every figure to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

DEFAULT_BACKENDS = ('adapnetpp', 'ssma')
DEFAULT_ENCODERS = ('resnet18', 'preact_resnet50')


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
        help='forward latency p50/p95 of the backends and HHA encoding time',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        '--backends',
        nargs='+',
        default=list(DEFAULT_BACKENDS),
        help='backends to time (default: adapnetpp ssma)',
    )
    parser.add_argument(
        '--encoders',
        nargs='+',
        default=list(DEFAULT_ENCODERS),
        help="encoders (default: resnet18 preact_resnet50, the paper's ResNet-50)",
    )
    parser.add_argument('--size', type=_size, default=(480, 640), help='HxW (default 480x640)')
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
    parser.add_argument('--no-hha', action='store_true', help='skip the HHA timing')
    parser.add_argument('--json', type=Path, default=None, help='write the results to PATH')
    parser.set_defaults(func=run)


def _precisions(device: str) -> list[str]:
    return ['fp32', 'fp16', 'bf16'] if device.startswith('cuda') else ['fp32']


def bench_backends(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time every backend x encoder x device x precision; prints one line each."""
    import torch

    from rgbd_seg_ros.backends.registry import build_backend
    from rgbd_seg_ros.inference.benchmark import time_forward

    devices = args.devices or (['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    h, w = args.size
    rows = []
    for device in devices:
        for backend in args.backends:
            for encoder in args.encoders:
                torch.manual_seed(0)
                model = (
                    build_backend(
                        backend,
                        args.num_classes,
                        encoder=encoder,
                        depth_channels=args.depth_channels,
                    )
                    .eval()
                    .to(device)
                )
                rgb = torch.randn(1, 3, h, w, device=device)
                depth = torch.rand(1, args.depth_channels, h, w, device=device)
                if device.startswith('cuda'):
                    model = model.to(memory_format=torch.channels_last)
                    rgb = rgb.contiguous(memory_format=torch.channels_last)
                    depth = depth.contiguous(memory_format=torch.channels_last)
                for precision in _precisions(device):
                    dtype = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}[
                        precision
                    ]
                    stats = time_forward(
                        model, rgb, depth, args.warmup, args.iters, autocast_dtype=dtype
                    )
                    row = {
                        'backend': backend,
                        'encoder': encoder,
                        'device': device,
                        'precision': precision,
                        'size': f'{h}x{w}',
                        'batch': 1,
                        **stats,
                    }
                    rows.append(row)
                    print(
                        f'{backend:10s} {encoder:16s} {device:5s} {precision:5s} '
                        f'{h}x{w}  p50 {stats["p50_ms"]:9.1f} ms  p95 {stats["p95_ms"]:9.1f} ms'
                        f'  {stats["fps"]:7.2f} fps',
                        flush=True,
                    )
                del model
    return rows


def bench_hha(iters: int, warmup: int = 1) -> dict[str, Any] | None:
    """Time ``hha_encode`` at 480x640 on a synthetic depth image; None when HHA is absent."""
    import importlib

    import numpy as np

    from rgbd_seg_ros.inference.benchmark import time_callable

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


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print/write the figures."""
    import torch

    from rgbd_seg_ros.errors import ConfigError

    if args.iters < 1:
        raise ConfigError(f'--iters must be at least 1, got {args.iters}')
    for device in args.devices or []:
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise ConfigError('--devices cuda requested but CUDA is not available')
    print(
        f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads, '
        f'{platform.processor() or platform.machine()}'
        + (f', {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else '')
    )
    rows = bench_backends(args)
    hha = None if args.no_hha else bench_hha(max(1, min(args.iters, 10)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            'torch': torch.__version__,
            'cpu_threads': torch.get_num_threads(),
            'cuda': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            'forward': rows,
            'hha': hha,
        }
        args.json.write_text(json.dumps(doc, indent=2) + '\n', encoding='utf-8')
        print(f'wrote {args.json}')
    return 0
