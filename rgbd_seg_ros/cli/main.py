"""Entry point of the ``rgbd-seg`` command.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func``. Modules import heavy dependencies (torch, rosbags)
inside their handlers so that ``rgbd-seg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rgbd_seg_ros import __version__
from rgbd_seg_ros.errors import RgbdSegError

# Subcommand modules, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    'backends_cmd',
    'bench_cmd',
    'bench_nonlocal_cmd',
    'bag2dataset_cmd',
    'synth_cmd',
    'import_labels_cmd',
    'import_dataset_cmd',
    'train_cmd',
    'eval_cmd',
    'export_cmd',
    'seal_cmd',
)


def build_parser() -> argparse.ArgumentParser:
    """Assemble the top-level parser from every subcommand module."""
    parser = argparse.ArgumentParser(
        prog='rgbd-seg',
        description='RGB-D semantic segmentation: inference, recordings, training, benchmarks.',
    )
    parser.add_argument('--version', action='version', version=f'rgbd-seg {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f'rgbd_seg_ros.cli.{name}')
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the chosen subcommand, turn domain errors into exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except RgbdSegError as err:
        print(f'rgbd-seg {args.command}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
