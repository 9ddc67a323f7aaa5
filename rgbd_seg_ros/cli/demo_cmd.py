"""``rgbd-seg demo``: the README's main job.

Until the demo pipeline lands (synthetic recording -> node -> recorded outputs) it reports the
installed backends, which proves the environment imports torch and the registry.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser('demo', help='run the end-to-end demo on the embedded default')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the backends the demo can run."""
    from rgbd_seg_ros.cli import backends_cmd

    print('rgbd_seg_ros demo: installed backends')
    return backends_cmd.run(args)
