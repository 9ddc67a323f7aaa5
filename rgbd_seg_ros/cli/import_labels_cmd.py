"""``rgbd-seg import-labels``: annotated label PNGs -> a dataset's labels/ folder."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-labels`` subcommand."""
    p = subparsers.add_parser(
        'import-labels',
        help='bring annotated label PNGs back into a dataset, by frame id',
        description='Copy <frame_id>[SUFFIX].png label images from FOLDER into DATASET/labels/ '
        'after checking sizes and class ids. Single-channel PNGs hold class ids; colour PNGs '
        'are mapped through the dataset palette.',
    )
    p.add_argument('dataset', help='dataset folder (written by bag2dataset)')
    p.add_argument('folder', help='folder with the annotated PNGs')
    p.add_argument('--suffix', default='', help='file-name suffix after the frame id, e.g. _label')
    p.add_argument('--mode', choices=('auto', 'ids', 'palette'), default='auto')
    p.add_argument(
        '--unknown',
        choices=('error', 'ignore'),
        default='error',
        help='unknown ids/colours: reject the file, or set them to ignore',
    )
    p.add_argument('--overwrite', action='store_true', help='replace existing labels')
    p.add_argument('--classes', help='class list file to set in dataset.yaml first')
    p.add_argument('--json', action='store_true', help='print the report as JSON')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rgbd_seg_ros.data.class_files import load_classes
    from rgbd_seg_ros.data.labels_import import format_import_report, import_labels

    classes = ignore = None
    if args.classes:
        classes, ignore = load_classes(args.classes)
    report = import_labels(
        args.dataset,
        args.folder,
        suffix=args.suffix,
        mode=args.mode,
        unknown=args.unknown,
        overwrite=args.overwrite,
        classes=classes,
        ignore_index=ignore,
    )
    print(json.dumps(report, indent=2) if args.json else format_import_report(report))
    return 0 if not report['rejected'] else 1
