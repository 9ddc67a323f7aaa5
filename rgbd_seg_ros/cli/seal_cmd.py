"""``rgbd-seg seal``: give checkpoints without an integrity digest one.

    rgbd-seg seal hand_made.safetensors old_export.pt

Every checkpoint rgbd_seg_ros writes carries a digest, and a file without one is refused. A
file made by hand or by another tool, that you have checked and trust, is sealed here: it is
read and validated like any load (metadata, bounds, weights), then rewritten atomically with
its digest. A file whose digest is present but wrong is refused, not re-sealed: sealing says
"this content is what I meant", and must not be used to paper over damage.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``seal`` subcommand."""
    parser = subparsers.add_parser(
        'seal',
        help='add the integrity digest to checkpoints that have none',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('checkpoints', nargs='+', metavar='CHECKPOINT')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rgbd_seg_ros.backends.checkpoint import seal_checkpoint

    for path in args.checkpoints:
        meta = seal_checkpoint(path)
        print(f'sealed {path}: {meta.backend}, {meta.num_classes} classes')
    return 0
