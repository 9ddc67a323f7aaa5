"""``rgbd-seg eval``: metrics of a checkpoint on a dataset split (single scale and MS+flip).

    rgbd-seg eval runs/demo/train/best.safetensors --data /data/set --split val

Prints mIoU, pixel accuracy and mean class accuracy for single-scale and multi-scale + flip
evaluation side by side, then the per-class IoU (classes absent from both ground truth and
prediction are shown as "-" and left out of the mean).
"""

from __future__ import annotations

import argparse
import json
import sys

from rgbd_seg_ros.modes import PRECISIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        'eval',
        help='evaluate a checkpoint on a dataset split (mIoU table)',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('checkpoint', help='project checkpoint (.safetensors or .pt)')
    parser.add_argument('--data', required=True, help='dataset folder in the project layout')
    parser.add_argument('--split', default='val')
    parser.add_argument(
        '--scales',
        default='0.5,0.75,1.0,1.25,1.5,1.75',
        help='comma-separated scales of the multi-scale evaluation',
    )
    parser.add_argument('--no-flip', action='store_true', help='multi-scale without flipping')
    parser.add_argument('--single-scale-only', action='store_true')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS)
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--max-frames', type=int, default=None)
    parser.add_argument('--json', default=None, help='also write the metrics to this JSON file')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rgbd_seg_ros.backends.checkpoint import build_from_checkpoint
    from rgbd_seg_ros.errors import ConfigError
    from rgbd_seg_ros.training.dataset import SegDataset
    from rgbd_seg_ros.training.distributed import DistContext, pick_device
    from rgbd_seg_ros.training.evaluate import evaluate
    from rgbd_seg_ros.training.metrics import format_table

    device = pick_device(args.device)
    model, meta = build_from_checkpoint(args.checkpoint, device=device)
    spec = meta.input_spec
    dataset = SegDataset(
        args.data,
        args.split,
        depth_encoding=spec.depth_encoding,
        depth_params=spec.depth_params,
        rgb_mean=spec.rgb_mean,
        rgb_std=spec.rgb_std,
        max_frames=args.max_frames,
    )
    if dataset.num_classes > meta.num_classes:
        raise ConfigError(
            f'dataset has {dataset.num_classes} class ids, the checkpoint {meta.num_classes}'
        )
    res = spec.resolution
    fixed = (int(res['height']), int(res['width'])) if res.get('policy') == 'fixed' else None
    try:
        scales = [float(s) for s in args.scales.split(',') if s.strip()]
    except ValueError:
        raise ConfigError(f'--scales {args.scales!r}: expected numbers') from None
    ctx = DistContext(device=device)
    common = {
        'batch_size': args.batch_size,
        'num_workers': args.num_workers,
        'fixed_hw': fixed,
        'precision': args.precision,
        'progress': True,
    }
    print(
        f'{args.checkpoint}: backend {meta.backend} ({meta.config.get("encoder", "?")}), '
        f'{meta.num_classes} classes, depth {spec.depth_encoding}; {len(dataset)} frames of '
        f'{args.data} [{args.split}] on {device}',
        file=sys.stderr,
    )
    results = {'single-scale': evaluate(model, dataset, ctx, **common)}
    if not args.single_scale_only:
        label = 'MS+flip' if not args.no_flip else 'MS'
        results[label] = evaluate(
            model, dataset, ctx, scales=scales, flip=not args.no_flip, **common
        )
    print(format_table(results, meta.class_names))
    if args.json:
        doc: dict[str, object] = {
            mode: {**m.as_dict(), 'class_acc': m.class_acc} for mode, m in results.items()
        }
        doc['scales'] = scales
        with open(args.json, 'w', encoding='utf-8') as stream:
            json.dump(doc, stream, indent=2, default=lambda v: None)
    return 0
