"""``rgbd-seg export``: a checkpoint as ONNX, its metadata as JSON beside it.

    rgbd-seg export runs/demo/train/best.safetensors -o model.onnx --height 480 --width 640

The input size defaults to the checkpoint's fixed resolution (if it has one). Writes
``model.onnx`` and ``model.json`` (the checkpoint metadata: backend, config, classes, palette,
input spec, provenance, metrics) and, unless ``--no-check``, compares ONNX Runtime's logits
with PyTorch's on a random input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        'export',
        help='export a checkpoint to ONNX (+ metadata JSON)',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--output', '-o', default=None, help='ONNX path (default: the checkpoint path with .onnx)'
    )
    parser.add_argument('--height', type=int, default=None)
    parser.add_argument('--width', type=int, default=None)
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--dynamo', action='store_true', help="use torch.export's exporter")
    parser.add_argument(
        '--no-check', action='store_true', help='skip the ONNX Runtime vs PyTorch comparison'
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from rgbd_seg_ros.backends.checkpoint import build_from_checkpoint
    from rgbd_seg_ros.backends.export import export_onnx, onnx_input_names, run_onnx
    from rgbd_seg_ros.errors import ConfigError

    model, meta = build_from_checkpoint(args.checkpoint, device='cpu')
    res = meta.input_spec.resolution
    height = args.height or (res.get('height') if res.get('policy') == 'fixed' else None)
    width = args.width or (res.get('width') if res.get('policy') == 'fixed' else None)
    if not height or not width:
        raise ConfigError('the checkpoint has no fixed resolution: give --height and --width')
    out = Path(args.output) if args.output else Path(args.checkpoint).with_suffix('.onnx')
    doc = meta.to_dict()
    export_onnx(
        model,
        out,
        int(height),
        int(width),
        meta.depth_channels,
        args.opset,
        dynamo=args.dynamo,
        metadata={
            'backend': meta.backend,
            'class_names': json.dumps(meta.class_names),
            'class_ids': json.dumps(meta.label_ids),
        },
    )
    doc['onnx'] = {
        'file': out.name,
        'height': int(height),
        'width': int(width),
        'opset': args.opset,
        'inputs': onnx_input_names(out),
        'outputs': ['logits'],
    }
    meta_path = out.with_suffix('.json')
    tmp = meta_path.with_name(meta_path.name + '.tmp')
    tmp.write_text(json.dumps(doc, indent=2) + '\n', encoding='utf-8')
    tmp.replace(meta_path)
    print(f'wrote {out} and {meta_path}', file=sys.stderr)
    if not args.no_check:
        torch.manual_seed(0)
        rgb = torch.randn(1, 3, int(height), int(width))
        depth = torch.rand(1, meta.depth_channels, int(height), int(width))
        with torch.no_grad():
            ref = model(rgb, depth).numpy()
        got = run_onnx(out, rgb, depth)
        err = float(abs(got - ref).max())
        print(f'ONNX Runtime vs PyTorch: max |logit difference| = {err:.2e}', file=sys.stderr)
        if err > 1e-3 * max(1.0, float(abs(ref).max())):
            print('export check FAILED', file=sys.stderr)
            return 1
    print(out)
    return 0
