"""``rgbd-seg backends``: list the registered backends and what they are."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``backends`` subcommand."""
    parser = subparsers.add_parser('backends', help='list the installed backends')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per registered backend."""
    from rgbd_seg_ros.backends.registry import backend_summary, list_backends

    names = list_backends()
    if not names:
        print('no backends installed')
        return 0
    for name in names:
        print(f'{name:14s} {backend_summary(name)}')
    return 0
