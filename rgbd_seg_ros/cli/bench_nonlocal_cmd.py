"""``rgbd-seg bench-nonlocal``: APNB against a standard non-local block (ANN paper, Table 1).

Measures one block at batch 1 -- multiply-accumulates (torch's flop counter), peak memory (the
CUDA allocator on a GPU; on CPU a live-tensor tracker of the allocations the block makes) and
mean time -- and prints them next to the paper's figures. The defaults are the paper's setting
(input 256x128, C = 2048, C^ = 256); on CPU the non-local block then needs about 9 GB and tens
of seconds per pass, so keep ``--iters`` small or pass ``--blocks APNB``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench-nonlocal`` subcommand."""
    parser = subparsers.add_parser(
        'bench-nonlocal',
        help='APNB vs non-local block: MACs, peak memory, time (ANN paper Table 1)',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('--height', type=int, default=128, help='input height (default 128)')
    parser.add_argument('--width', type=int, default=256, help='input width (default 256)')
    parser.add_argument('--channels', type=int, default=2048, help='C (default 2048)')
    parser.add_argument('--key-channels', type=int, default=256, help='C^ (default 256)')
    parser.add_argument('--iters', type=int, default=2, help='timed passes per block (default 2)')
    parser.add_argument('--device', default='auto', help="'cpu', 'cuda' or 'auto' (default)")
    parser.add_argument(
        '--blocks',
        nargs='+',
        default=['NB', 'APNB'],
        choices=['NB', 'APNB'],
        help='blocks to measure (default: NB APNB)',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure and print the table."""
    import torch

    from rgbd_seg_ros.errors import ConfigError
    from rgbd_seg_ros.tools.nonlocal_bench import bench_nonlocal, format_bench_table

    device = args.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError('--device cuda requested but CUDA is not available')
    if min(args.height, args.width, args.channels, args.key_channels, args.iters) < 1:
        raise ConfigError('sizes, channels and --iters must be positive')
    rows = bench_nonlocal(
        args.height,
        args.width,
        channels=args.channels,
        key_channels=args.key_channels,
        iters=args.iters,
        device=device,
        blocks=args.blocks,
    )
    print(format_bench_table(rows, args.channels, args.key_channels))
    return 0
