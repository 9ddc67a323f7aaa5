"""``rgbd-seg synth``: synthetic RGB-D indoor recordings and datasets (no download needed)."""

from __future__ import annotations

import argparse
import sys

FORMATS = ('dataset', 'mcap', 'both')


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must look like 640x480, got {text!r}') from None
    if not (8 <= w <= 4096 and 8 <= h <= 4096):
        raise argparse.ArgumentTypeError(f'size out of range (8..4096): {text!r}')
    return w, h


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` subcommand."""
    p = subparsers.add_parser(
        'synth',
        help='render synthetic indoor RGB-D sequences (dataset and/or mcap recordings)',
        description='Procedural furnished rooms seen by a walking robot: colour, aligned depth '
        'with structured-light noise, exact labels and camera_info. Deterministic: the same '
        'seed gives bit-identical output. --frames are spread evenly over --scenes rooms. '
        'The dataset is written to OUT (resumable); recordings go to '
        'OUT/recordings/synth_<seed>_scene<k>/. Splits: whole scenes when there are 3 or '
        'more, else contiguous 80/10/10 blocks of each scene.',
    )
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--seed', type=int, default=0, help='master seed (default 0)')
    p.add_argument('--frames', type=int, default=300, help='total frames (default 300)')
    p.add_argument('--scenes', type=int, default=1, help='number of rooms (default 1)')
    p.add_argument(
        '--size',
        type=_size,
        default=(640, 480),
        metavar='WxH',
        help='image size (default 640x480)',
    )
    p.add_argument(
        '--format',
        choices=FORMATS,
        default='dataset',
        help='dataset layout, rosbag2 mcap recordings, or both (default dataset)',
    )
    p.add_argument('--fps', type=float, default=15.0, help='frame rate (default 15)')
    p.add_argument(
        '--threads', type=int, default=0, help='ray-casting threads (default 0 = all cores)'
    )
    p.add_argument(
        '--no-resume',
        dest='resume',
        action='store_false',
        help='refuse to continue an existing dataset in OUT',
    )
    p.add_argument(
        '--preview',
        metavar='PNG',
        help='also write a contact sheet (colour | depth | labels) of a few frames',
    )
    p.add_argument('-q', '--quiet', action='store_true', help='no progress lines')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render and write; print where things went and the frame rate."""
    from pathlib import Path

    from rgbd_seg_ros.data.synth import synthesize
    from rgbd_seg_ros.errors import ConfigError

    if args.frames < 1:
        raise ConfigError(f'--frames must be >= 1, got {args.frames}')
    if args.scenes < 1 or args.scenes > args.frames:
        raise ConfigError(f'--scenes must be between 1 and --frames, got {args.scenes}')
    width, height = args.size
    out = Path(args.out)
    dataset_root = out if args.format in ('dataset', 'both') else None
    recordings = out / 'recordings' if args.format in ('mcap', 'both') else None
    step = max(1, args.frames // 20)

    def progress(done: int, total: int, summary) -> None:
        if not args.quiet and (done % step == 0 or done == total):
            print(f'  {done}/{total} frames, {summary.fps:.2f} frames/s', file=sys.stderr)

    summary = synthesize(
        args.seed,
        args.frames,
        scenes=args.scenes,
        width=width,
        height=height,
        fps=args.fps,
        dataset_root=dataset_root,
        recordings_dir=recordings,
        storage='mcap',
        resume=args.resume,
        nthreads=args.threads,
        progress=progress,
        preview=args.preview,
    )
    print(
        f'rendered {summary.frames_rendered} frames at {width}x{height} in '
        f'{summary.seconds:.1f} s ({summary.fps:.2f} frames/s)'
        + (f', {summary.frames_skipped} already there' if summary.frames_skipped else '')
    )
    splits = ', '.join(f'{k} {v}' for k, v in sorted(summary.splits.items()))
    if dataset_root is not None:
        print(f'dataset: {dataset_root} ({splits})')
    for path in summary.recordings:
        print(f'recording: {path}')
    if args.preview and summary.frames_rendered:
        print(f'preview: {args.preview}')
    return 0
