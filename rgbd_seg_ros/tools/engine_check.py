"""Every backend through the engine on a CUDA device, labels compared with the CPU fp32 result.

The CUDA paths (fp16/bf16 autocast, channels_last, pinned non-blocking uploads, post-processing
on the device) share the engine's code with the CPU path, so the CPU fp32 labels of the same
weights and frame are the reference: each CUDA precision reports the fraction of pixels whose
label agrees, and the number of distinct labels in the reference (random weights can give a
nearly constant map, which would agree trivially). Used by ``bench/gpu_check.sh``; run
``python -m rgbd_seg_ros.tools.engine_check --help``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rgbd_seg_ros.modes import PRECISIONS, Precision

# Agreement below which a precision is reported as failing (TF32 convolutions and half
# precision move near-tied logits of random weights; fp32 must stay almost exact).
MIN_AGREEMENT: dict[Precision, float] = {'fp32': 0.99, 'fp16': 0.95, 'bf16': 0.90}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='engine_check', description=__doc__.splitlines()[0])
    parser.add_argument('--backends', nargs='+', default=None, help='default: every backend')
    parser.add_argument('--size', default='480x640', help='camera size HxW (480x640)')
    parser.add_argument('--precisions', nargs='+', choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument('--device', default='cuda', help='device under test (cuda)')
    parser.add_argument('--json', default='', help='write the results here')
    return parser.parse_args(argv)


def synthetic_frame(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour noise over a ramp and a tilted-plane depth (uint16 mm), with its K."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    rgb = (rng.integers(0, 56, (height, width, 3)) + ramp).astype(np.uint8)
    depth = np.linspace(800, 6000, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    K = np.array([[0.8 * width, 0, width / 2], [0, 0.8 * width, height / 2], [0, 0, 1]], float)
    return rgb, depth.astype(np.uint16), K


def check_backend(
    name: str, size: tuple[int, int], device: str, precisions: list[Precision]
) -> dict[str, Any]:
    """One backend: CPU fp32 reference, then each precision on ``device``."""
    import torch

    from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec
    from rgbd_seg_ros.backends.registry import build_backend
    from rgbd_seg_ros.inference.engine import Engine

    torch.manual_seed(0)
    model = build_backend(name, num_classes=12)
    channels = int(getattr(model.config, 'depth_channels', 1))
    meta = CheckpointMeta(
        backend=name,
        config=dict(vars(model.config)),
        class_names=[f'class_{i}' for i in range(12)],
        input_spec=InputSpec(depth_encoding='metric' if channels == 1 else 'hha'),
    )
    rgb, depth, K = synthetic_frame(*size)
    reference = Engine(copy.deepcopy(model), meta, torch.device('cpu')).predict(rgb, depth, K)
    row: dict[str, Any] = {
        'backend': name,
        'size': f'{size[0]}x{size[1]}',
        'reference_distinct_labels': len(np.unique(reference.labels)),
        'precisions': {},
    }
    for precision in precisions:
        try:
            engine = Engine(copy.deepcopy(model), meta, torch.device(device), precision)
            engine.warmup(*size)
            start = time.perf_counter()
            result = engine.predict(rgb, depth, K, outputs=('labels', 'confidence', 'points'))
            elapsed_ms = (time.perf_counter() - start) * 1e3
            agreement = float(np.mean(result.labels == reference.labels))
            row['precisions'][precision] = {
                'agreement': agreement,
                # fp16 that overflows switches the engine to bf16 (Engine._forward)
                'ran_as': engine.precision,
                'ok': agreement >= MIN_AGREEMENT[precision],
                'predict_ms': elapsed_ms,
                'forward_ms': result.timings_ms['forward'],
            }
        except Exception as err:  # a failing path is a result here, the sweep goes on
            row['precisions'][precision] = {'ok': False, 'error': f'{type(err).__name__}: {err}'}
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from rgbd_seg_ros.backends.registry import list_backends

    if torch.device(args.device).type == 'cuda' and not torch.cuda.is_available():
        print('engine_check: CUDA is not available on this machine', file=sys.stderr)
        return 2
    size = tuple(int(v) for v in args.size.lower().split('x'))
    rows = []
    for name in args.backends or list_backends():
        row = check_backend(name, (size[0], size[1]), args.device, args.precisions)
        rows.append(row)
        cells = ', '.join(
            f'{p} '
            + (f'{r["agreement"]:.4f}' if 'agreement' in r else r['error'])
            + (f' (ran as {r["ran_as"]})' if r.get('ran_as', p) != p else '')
            for p, r in row['precisions'].items()
        )
        print(f'{name:14s} labels agree with CPU fp32: {cells}', flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({'rows': rows, 'min_agreement': MIN_AGREEMENT}))
    ok = all(r['ok'] for row in rows for r in row['precisions'].values())
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
