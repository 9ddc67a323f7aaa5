"""Process entry point of a training run, for ``torchrun`` and for ``rgbd-seg train``.

    torchrun --standalone --nproc_per_node 2 -m rgbd_seg_ros.training.run \\
        --recipe adapnetpp --set data.root=/data/nyu --set output_dir=runs/nyu

One process per rank; each joins the process group from torchrun's environment (NCCL on
GPUs, gloo on CPU). The arguments become a :class:`TrainConfig` here; nothing of argparse goes
further.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rgbd_seg_ros.errors import RgbdSegError


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``rgbd-seg train`` and this module."""
    parser.add_argument(
        '--recipe',
        '-r',
        default=None,
        help='recipe name in config/train (adapnetpp, ssma, finetune, tiny_cpu, '
        '...) or a YAML path; with --resume defaults to <output-dir>/config.yaml',
    )
    parser.add_argument(
        '--set',
        '-s',
        dest='overrides',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='override a configuration value (dotted keys, YAML values), e.g. '
        '--set optim.lr=1.0e-4 --set stages.0.steps=200; repeatable',
    )
    parser.add_argument('--data', default=None, help='dataset folder (same as --set data.root=)')
    parser.add_argument(
        '--output-dir', '-o', default=None, help='output folder (same as --set output_dir=)'
    )
    parser.add_argument(
        '--resume',
        action='store_true',
        help='continue the run in --output-dir exactly where it stopped',
    )


def config_from_args(args: argparse.Namespace):  # -> TrainConfig
    """Recipe + overrides (+ the saved config when resuming) -> validated TrainConfig."""
    from rgbd_seg_ros.errors import ConfigError
    from rgbd_seg_ros.training.config import load_config

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f'data.root={args.data}')
    if args.output_dir:
        overrides.append(f'output_dir={args.output_dir}')
    recipe = args.recipe
    if recipe is None and args.resume:
        if not args.output_dir:
            raise ConfigError('--resume needs --output-dir (or a recipe naming output_dir)')
        recipe = Path(args.output_dir) / 'config.yaml'
        if not recipe.is_file():
            raise ConfigError(f'nothing to resume: {recipe} does not exist')
    return load_config(recipe, overrides)


def print_progress(info: dict) -> None:
    """Default progress sink of the CLI: a line per validation and at the end."""
    if info.get('event') == 'step' and info.get('val_miou') is not None:
        print(
            f'[{info["stage"]}] step {info["step"]}/{info["total_steps"]} '
            f'loss {info.get("loss", float("nan")):.4f} val mIoU {100 * info["val_miou"]:.2f}',
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m rgbd_seg_ros.training.run',
        description='Train a backend (one process per rank).',
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        from rgbd_seg_ros.training.trainer import run_training

        config = config_from_args(args)
        path = run_training(config, progress=print_progress, resume=args.resume)
    except RgbdSegError as err:
        print(f'train: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    import os

    if os.environ.get('RANK', '0') == '0':
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
