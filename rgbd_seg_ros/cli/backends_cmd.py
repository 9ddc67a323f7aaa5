"""``rgbd-seg backends``: list the registered backends and what they are; with
``--defaults NAME``, print one backend's default options as commented YAML (from its config
dataclass, the only place they are defined)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``backends`` subcommand."""
    parser = subparsers.add_parser(
        'backends',
        help='list the installed backends, or print the default options of one',
        description=__doc__,
    )
    parser.add_argument(
        '--defaults',
        metavar='NAME',
        default=None,
        help="print backend NAME's default options as YAML (for a recipe's model.options)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per registered backend, or the defaults of ``--defaults NAME``."""
    from rgbd_seg_ros.backends.registry import backend_summary, list_backends

    if args.defaults is not None:
        from rgbd_seg_ros.backends.defaults import defaults_yaml

        print(defaults_yaml(args.defaults), end='')  # ConfigError lists the valid names
        return 0
    names = list_backends()
    if not names:
        print('no backends installed')
        return 0
    for name in names:
        print(f'{name:14s} {backend_summary(name)}')
    return 0
