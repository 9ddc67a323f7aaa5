"""``rgbd-seg import-dataset``: public RGB-D datasets -> the dataset layout."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-dataset`` subcommand."""
    p = subparsers.add_parser(
        'import-dataset',
        help='import a public dataset (NYUDv2) into the dataset layout',
        description='Import NYU Depth v2 from nyu_depth_v2_labeled.mat with its official '
        '795/654 split and the 40-class mapping. Nothing is downloaded. Splits: splits.mat '
        '(trainNdxs/testNdxs, 1-based) or YAML {train: [...], test: [...]} (1-based). '
        'Mapping: classMapping40.mat (mapClass: 894 values in 0..40, className: 40 names) or '
        'YAML {map: [894 ints], names: [...]}. Both default to files next to the .mat.',
    )
    p.add_argument('name', choices=('nyudv2',), help='dataset kind')
    p.add_argument('path', help='nyu_depth_v2_labeled.mat')
    p.add_argument('-o', '--out', required=True, help='output dataset folder')
    p.add_argument('--splits', help='splits file (default: splits.mat next to PATH)')
    p.add_argument('--mapping', help='40-class mapping (default: classMapping40.mat next to PATH)')
    p.add_argument('--raw-labels', action='store_true', help='keep the 894 raw class ids')
    p.add_argument('--limit', type=int, help='import only the first N frames (for trials)')
    p.add_argument('--no-resume', dest='resume', action='store_false')
    p.add_argument('--no-progress', dest='progress', action='store_false')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rgbd_seg_ros.data.nyudv2 import import_nyudv2

    report = import_nyudv2(
        args.path,
        args.out,
        splits=args.splits,
        mapping=args.mapping,
        raw_labels=args.raw_labels,
        resume=args.resume,
        limit=args.limit,
        progress=args.progress,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    return 0
