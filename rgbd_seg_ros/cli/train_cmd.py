"""``rgbd-seg train``: train a backend from a recipe, on one process or several (DDP).

    rgbd-seg train --recipe tiny_cpu --data /data/set --output-dir runs/demo
    rgbd-seg train --recipe ssma --data /data/set --set stages.0.steps=1000 --nproc 4
    rgbd-seg train --resume --output-dir runs/demo
    rgbd-seg train --bench [--backends ssma,adapnetpp] [--device cuda] [--precision bf16]

``--nproc N`` runs the documented equivalent
``python -m torch.distributed.run --standalone --nproc_per_node N -m rgbd_seg_ros.training.run
<the same arguments>``. ``--bench`` prints the training throughput (images/s) per backend on
random data (480x640 by default) and trains nothing.
"""

from __future__ import annotations

import argparse
import sys

from rgbd_seg_ros.modes import PRECISIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    from rgbd_seg_ros.training.run import add_train_arguments

    parser = subparsers.add_parser(
        'train',
        help='train or fine-tune a backend on a dataset (recipes in config/train)',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser)
    parser.add_argument(
        '--nproc',
        type=int,
        default=1,
        help='processes (GPUs) on this machine; >1 runs torchrun with DDP',
    )
    bench = parser.add_argument_group('throughput benchmark (--bench)')
    bench.add_argument(
        '--bench',
        action='store_true',
        help='measure training images/s per backend on random data and exit',
    )
    bench.add_argument(
        '--backends', default=None, help='comma-separated backends to benchmark (default: all)'
    )
    bench.add_argument(
        '--backend-option',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='backend option for the benchmark, e.g. encoder=resnet18',
    )
    bench.add_argument('--batch-size', type=int, default=2)
    bench.add_argument('--height', type=int, default=480)
    bench.add_argument('--width', type=int, default=640)
    bench.add_argument('--steps', type=int, default=3, help='timed steps per backend')
    bench.add_argument('--warmup', type=int, default=1)
    bench.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    bench.add_argument('--precision', default='fp32', choices=PRECISIONS)
    parser.set_defaults(func=run)


def torchrun_command(args: argparse.Namespace, nproc: int) -> list[str]:
    """The torchrun command line equivalent to ``args`` on ``nproc`` local processes."""
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--standalone',
        f'--nproc_per_node={nproc}',
        '-m',
        'rgbd_seg_ros.training.run',
    ]
    if args.recipe:
        cmd += ['--recipe', str(args.recipe)]
    for item in args.overrides:
        cmd += ['--set', item]
    if args.data:
        cmd += ['--data', args.data]
    if args.output_dir:
        cmd += ['--output-dir', args.output_dir]
    if args.resume:
        cmd.append('--resume')
    return cmd


def run(args: argparse.Namespace) -> int:
    if args.bench:
        return run_bench(args)
    if args.nproc > 1:
        import subprocess

        cmd = torchrun_command(args, args.nproc)
        print('+ ' + ' '.join(cmd), file=sys.stderr)
        return subprocess.call(cmd)
    from rgbd_seg_ros.training.run import config_from_args, print_progress
    from rgbd_seg_ros.training.trainer import run_training

    config = config_from_args(args)
    path = run_training(config, progress=print_progress, resume=args.resume)
    print(path)
    return 0


def _parse_options(items: list[str]) -> dict:
    import yaml

    from rgbd_seg_ros.errors import ConfigError

    options = {}
    for item in items:
        if '=' not in item:
            raise ConfigError(f'--backend-option {item!r}: expected KEY=VALUE')
        key, value = item.split('=', 1)
        options[key] = yaml.safe_load(value)
    return options


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from rgbd_seg_ros.backends.registry import list_backends
    from rgbd_seg_ros.tools.train_bench import bench_training, format_results
    from rgbd_seg_ros.training.distributed import pick_device

    names = args.backends.split(',') if args.backends else list_backends()
    device = pick_device(args.device)
    options = _parse_options(args.backend_option)
    print(
        f'training throughput, random data, {args.height}x{args.width}, batch '
        f'{args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up; '
        f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads',
        file=sys.stderr,
    )
    results = []
    for name in names:
        results.append(
            bench_training(
                name,
                options=options,
                batch_size=args.batch_size,
                height=args.height,
                width=args.width,
                steps=args.steps,
                warmup=args.warmup,
                device=str(device),
                precision=args.precision,
            )
        )
        print(format_results(results[-1:]).splitlines()[-1], file=sys.stderr)
    print(format_results(results))
    return 0
