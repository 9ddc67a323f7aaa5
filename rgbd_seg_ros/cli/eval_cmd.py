"""``rgbd-seg eval``: metrics of a checkpoint on a dataset split, as the node would score.

    rgbd-seg eval runs/demo/train/best.safetensors --data /data/set --split val

By default the checkpoint runs exactly as the segmentation node runs it (column "node"): one
frame at a time through the engine, network-size input, argmax labels resized to the camera
size with nearest neighbour, each output published as its dataset label id. The trainer
node's quality gate scores with the same function. ``--logits`` adds the training protocol's
figures: logits resized bilinearly to the label size before the argmax ("single-scale"), and
multi-scale + flip ("MS+flip"); on small classes they can read a few IoU points higher than
what the node delivers.

mIoU is the mean over the classes present in the ground truth of the split; the per-class
table marks the others "-". A dataset without classes, or a split without a labelled pixel,
is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rgbd_seg_ros.modes import PRECISIONS

NODE_MODE = 'node'
MIOU_OVER = 'classes present in the ground truth of the split'


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
        '--logits',
        action='store_true',
        help='also report the training protocol (logits upsampled bilinearly; MS+flip)',
    )
    parser.add_argument(
        '--scales',
        default='0.5,0.75,1.0,1.25,1.5,1.75',
        help='comma-separated scales of the multi-scale evaluation (with --logits)',
    )
    parser.add_argument('--no-flip', action='store_true', help='multi-scale without flipping')
    parser.add_argument(
        '--single-scale-only', action='store_true', help='with --logits: no multi-scale'
    )
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS)
    parser.add_argument('--batch-size', type=int, default=1, help='with --logits')
    parser.add_argument('--num-workers', type=int, default=2, help='with --logits')
    parser.add_argument('--max-frames', type=int, default=None)
    parser.add_argument('--json', default=None, help='also write the metrics to this JSON file')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rgbd_seg_ros.data.layout import DatasetReader
    from rgbd_seg_ros.errors import ConfigError, DatasetError
    from rgbd_seg_ros.inference.engine import Engine
    from rgbd_seg_ros.training.metrics import format_table, strict_json
    from rgbd_seg_ros.training.pipeline_eval import evaluate_engine, labelled_records

    try:
        scales = [float(s) for s in args.scales.split(',') if s.strip()]
    except ValueError:
        raise ConfigError(f'--scales {args.scales!r}: expected numbers') from None
    reader = DatasetReader(args.data)
    records = labelled_records(reader, args.split, args.max_frames)
    engine = Engine.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision)
    meta = engine.meta
    print(
        f'{args.checkpoint}: backend {meta.backend} ({meta.config.get("encoder", "?")}), '
        f'{meta.num_classes} classes, depth {meta.input_spec.depth_encoding}; '
        f'{len(records)} labelled frames of {args.data} [{args.split}] on {engine.device}',
        file=sys.stderr,
    )
    results = {NODE_MODE: evaluate_engine(engine, reader, records, _progress_bar())}
    if args.logits:
        results.update(_logit_figures(args, engine, scales))
    if not results[NODE_MODE].scored:
        raise DatasetError(
            f'{args.data} [{args.split}]: no labelled pixel of any class; nothing to score'
        )
    names = [c.name for c in reader.meta.classes_by_id()]
    ids = reader.meta.class_ids
    print(format_table(results, names, ids))
    print(f'node: the segmentation node pipeline; mIoU over the {MIOU_OVER}', file=sys.stderr)
    if args.logits:
        print(
            'single-scale / MS+flip: logits upsampled bilinearly before the argmax '
            '(training protocol), not what the node publishes',
            file=sys.stderr,
        )
    if args.json:
        doc: dict[str, Any] = {
            mode: {**m.as_dict(), 'class_acc': m.class_acc} for mode, m in results.items()
        }
        doc.update(
            split=args.split,
            frames=len(records),
            class_ids=ids,
            class_names=names,
            miou_over=MIOU_OVER,
            pipelines={
                NODE_MODE: 'engine as in the node: labels upsampled nearest',
                **({'single-scale': 'logits upsampled bilinearly'} if args.logits else {}),
            },
        )
        if args.logits:
            doc['scales'] = scales
        with open(args.json, 'w', encoding='utf-8') as stream:
            json.dump(strict_json(doc), stream, indent=2, allow_nan=False)
    return 0


def _progress_bar() -> Any:
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc='eval (node)', leave=False, dynamic_ncols=True)
        bar.update(1)
        if done == total:
            bar.close()

    return update


def _logit_figures(args: argparse.Namespace, engine: Any, scales: list[float]) -> dict[str, Any]:
    """The training protocol's single-scale (and MS+flip) metrics, per dataset class."""
    from rgbd_seg_ros.errors import ConfigError
    from rgbd_seg_ros.training.dataset import SegDataset
    from rgbd_seg_ros.training.distributed import DistContext
    from rgbd_seg_ros.training.evaluate import evaluate
    from rgbd_seg_ros.training.metrics import reindex_classes

    meta = engine.meta
    spec = meta.input_spec
    dataset = SegDataset(
        args.data,
        args.split,
        depth_encoding=spec.depth_encoding,
        depth_params=spec.depth_params,
        rgb_mean=spec.rgb_mean,
        rgb_std=spec.rgb_std,
        max_frames=args.max_frames,
        class_ids=meta.label_ids,  # the checkpoint's outputs
    )
    unknown = sorted(set(dataset.meta.class_ids) - set(meta.label_ids))
    if unknown:
        raise ConfigError(
            f'--logits: the checkpoint has no output for dataset class id(s) {unknown}; '
            'the node figures score them, the logit figures cannot'
        )
    res = spec.resolution
    fixed = (int(res['height']), int(res['width'])) if res.get('policy') == 'fixed' else None
    ctx = DistContext(device=engine.device)
    common = {
        'batch_size': args.batch_size,
        'num_workers': args.num_workers,
        'fixed_hw': fixed,
        'precision': args.precision,
        'progress': True,
    }
    model = engine.model
    results = {'single-scale': evaluate(model, dataset, ctx, **common)}
    if not args.single_scale_only:
        label = 'MS+flip' if not args.no_flip else 'MS'
        results[label] = evaluate(
            model, dataset, ctx, scales=scales, flip=not args.no_flip, **common
        )
    ids = dataset.meta.class_ids
    return {mode: reindex_classes(m, meta.label_ids, ids) for mode, m in results.items()}
