"""``rgbd-seg bag2dataset``: recordings (rosbag2 sqlite3/mcap, ROS 1 .bag) -> a dataset."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rgbd_seg_ros.data.convert import ConvertOptions, TopicChoice
    from rgbd_seg_ros.data.recordings import Recording

AUTO = 'auto'  # --label-topic auto: find it


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bag2dataset`` subcommand."""
    p = subparsers.add_parser(
        'bag2dataset',
        help='convert recordings into a dataset (rgb/, depth/, labels/, index.csv)',
        description='Convert rosbag2 (sqlite3, mcap) and ROS 1 recordings into the dataset '
        'layout. Colour, depth and camera_info are paired by approximate time; labels come '
        'from a label topic, from a checkpoint (pseudo-labels) or not at all (export for '
        'annotation, then `rgbd-seg import-labels`). Rerunning resumes.',
    )
    p.add_argument(
        'inputs',
        nargs='*',
        metavar='RECORDING',
        help='recording files, rosbag2 folders, or folders holding many',
    )
    p.add_argument('-o', '--out', help='output dataset folder')
    p.add_argument(
        '--list',
        action='store_true',
        help='print topics (type, count, rate) and the automatic topic choice',
    )
    g = p.add_argument_group('topics (picked automatically when unambiguous)')
    g.add_argument('--rgb-topic', dest='colour_topic')
    g.add_argument('--depth-topic')
    g.add_argument('--info-topic', help='camera_info matching the colour image')
    g.add_argument(
        '--label-topic',
        help="a label image topic (mono8/mono16/png), e.g. from a simulator; 'auto': the one "
        'Image topic named like labels (label, semantic, segment, class) with a class-id '
        'encoding (several or none: an error naming them)',
    )
    g = p.add_argument_group('pairing and selection')
    g.add_argument('--slop', type=float, default=0.02, help='max colour-depth(-label) |dt|, s')
    g.add_argument('--info-slop', type=float, default=1.0, help='max colour-camera_info |dt|, s')
    g.add_argument('--min-gap', type=float, default=0.0, help='min time between frames, s')
    g.add_argument(
        '--dedup-threshold',
        type=float,
        default=0.0,
        help='skip frames whose grey thumbnail differs from the last kept one by '
        'less than this mean absolute value (0..255; 0 = off)',
    )
    g.add_argument('--max-frames', type=int, help='at most this many frames per recording')
    g.add_argument('--split', default='0.8,0.1,0.1', help='train,val,test ratios')
    g.add_argument(
        '--split-block',
        type=float,
        default=10.0,
        help='length of the contiguous time blocks given to one split, s',
    )
    g.add_argument(
        '--split-guard',
        type=float,
        default=0.5,
        help='drop frames this close to a boundary between splits, s',
    )
    g = p.add_argument_group('labels')
    g.add_argument('--classes', help='class list file (YAML/JSON; a dataset.yaml works)')
    g.add_argument('--label-map', help='recorded id -> dataset id (YAML/JSON mapping or CSV)')
    g.add_argument('--ignore-index', type=int, help='ignore label (default 255)')
    g.add_argument('--checkpoint', help='pseudo-label with this checkpoint')
    g.add_argument(
        '--confidence-threshold',
        type=float,
        default=0.5,
        help='pseudo-label pixels below this confidence become ignore',
    )
    g.add_argument('--device', default='cpu', help='device for --checkpoint (cpu, cuda, auto)')
    g = p.add_argument_group('execution')
    g.add_argument('-j', '--jobs', type=int, default=1, help='worker processes')
    g.add_argument('--chunk-frames', type=int, default=300, help='frames per work unit')
    g.add_argument(
        '--no-resume',
        dest='resume',
        action='store_false',
        help='refuse to continue an existing dataset',
    )
    g.add_argument(
        '--no-fsync',
        dest='fsync',
        action='store_false',
        help='skip fsync per file (faster; a power cut may lose recent frames)',
    )
    g.add_argument('--no-progress', dest='progress', action='store_false')
    g.add_argument('--json', action='store_true', help='print the report as JSON')
    g.add_argument(
        '--bench',
        action='store_true',
        help='benchmark: write synthetic 640x480 mcap recordings and convert them',
    )
    g.add_argument('--bench-frames', type=int, default=300, help='frames per bench recording')
    g.add_argument('--bench-recordings', type=int, default=2)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rgbd_seg_ros.errors import ConfigError

    if args.bench:
        from rgbd_seg_ros.tools.convert_bench import run_bench

        return run_bench(
            frames=args.bench_frames,
            recordings=args.bench_recordings,
            jobs=max(args.jobs, 1),
            fsync=args.fsync,
        )
    if not args.inputs:
        raise ConfigError('give at least one recording (or --bench)')
    if args.list:
        return _list(args)
    if not args.out:
        raise ConfigError('--out is required (the dataset folder to write)')
    from rgbd_seg_ros.cli.signals import sigterm_exits
    from rgbd_seg_ros.data.convert import convert, format_report

    with sigterm_exits():  # SIGTERM: workers stopped, journals folded, lock released; 143
        report = convert(args.inputs, args.out, _options(args))
    print(report.to_json() if args.json else format_report(report))
    problems = report.problems()
    for problem in problems:
        print(f'rgbd-seg bag2dataset: {problem}', file=sys.stderr)
    return 1 if problems else 0


def _options(args: argparse.Namespace) -> ConvertOptions:
    from rgbd_seg_ros.data.class_files import load_classes, load_label_map
    from rgbd_seg_ros.data.convert import ConvertOptions
    from rgbd_seg_ros.data.selection import parse_ratios

    classes, ignore = (None, None)
    labeller = None
    if args.checkpoint:
        # The checkpoint names the classes it predicts; --classes does not apply.
        from rgbd_seg_ros.inference.labeller import CheckpointLabeller

        labeller = CheckpointLabeller(args.checkpoint, device=args.device)
        classes, ignore = labeller.classes()
    elif args.classes:
        classes, ignore = load_classes(args.classes)
    if args.ignore_index is not None and labeller is None:
        ignore = args.ignore_index
    return ConvertOptions(
        colour_topic=args.colour_topic,
        depth_topic=args.depth_topic,
        info_topic=args.info_topic,
        label_topic=_label_topic(args),
        detect_label_topic=args.label_topic == AUTO,
        slop_s=args.slop,
        info_slop_s=args.info_slop,
        min_gap_s=args.min_gap,
        duplicate_threshold=args.dedup_threshold,
        max_frames=args.max_frames,
        ratios=parse_ratios(args.split),
        block_s=args.split_block,
        guard_s=args.split_guard,
        label_map=load_label_map(args.label_map) if args.label_map else None,
        classes=classes,
        ignore_index=255 if ignore is None else ignore,
        labeller=labeller,
        confidence_threshold=args.confidence_threshold,
        jobs=args.jobs,
        chunk_frames=args.chunk_frames,
        resume=args.resume,
        fsync=args.fsync,
        progress=args.progress,
    )


def _list(args: argparse.Namespace) -> int:
    from rgbd_seg_ros.data.convert import ConvertOptions, choose_topics
    from rgbd_seg_ros.data.convert.colour_streams import count_colour_sources
    from rgbd_seg_ros.data.recordings import Recording, find_recordings, format_topics
    from rgbd_seg_ros.errors import RgbdSegError

    options = ConvertOptions(
        colour_topic=args.colour_topic,
        depth_topic=args.depth_topic,
        info_topic=args.info_topic,
        label_topic=_label_topic(args),
        detect_label_topic=args.label_topic == AUTO,
    )
    status = 0
    for item in args.inputs:
        for path in find_recordings(item):
            print(f'{path}')
            try:
                with Recording(path) as rec:
                    span = (rec.end_ns - rec.start_ns) / 1e9
                    print(f'  duration {span:.3f} s, {len(rec.topics)} topics')
                    print(format_topics(rec.topics.values()))
                    for note in rec.damage:
                        print(f'  DAMAGE: {note}')
                    try:
                        choice = choose_topics(rec, options)
                        print(f'  would convert: {choice.describe()}')
                        if choice.colour_compressed:
                            sources = count_colour_sources(
                                rec, choice.colour, choice.colour_compressed
                            )
                            print(f'  colour stamps: {sources.describe()}')
                        if not args.label_topic:
                            _print_label_hint(rec, choice)
                    except RgbdSegError as err:
                        print(f'  no automatic choice: {err}')
            except RgbdSegError as err:
                print(f'  error: {err}', file=sys.stderr)
                status = 1
    return status


def _label_topic(args: argparse.Namespace) -> str | None:
    return None if args.label_topic == AUTO else args.label_topic


def _print_label_hint(rec: Recording, choice: TopicChoice) -> None:
    """Name the label topic ``--label-topic auto`` would use, when there is exactly one."""
    from rgbd_seg_ros.data.convert.label_topics import detect_label_topic
    from rgbd_seg_ros.errors import DatasetError

    try:
        label = detect_label_topic(rec, {choice.colour, choice.depth})
    except DatasetError:
        return
    print(f'  label topic found: {label} (convert it with --label-topic auto)')
