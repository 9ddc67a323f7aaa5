"""The node's throughput targets, each measured several times, interleaved, with its spread.

One round runs, each in its own process: ``node_bench`` with the embedded default model
(outputs per second, labels and cloud latency p50), ``node_bench`` with SSMA ResNet-18 at
480x640 (labels overhead and overhead to the last output, p50), and the demo (fraction of its
frames segmented at 10 Hz). ``--runs`` rounds alternate the three, so a machine that gets
busier affects each alike; the table gives every run, the median, the spread
((max - min) / median), the load average around each run, and a speed probe of the machine
before and after each run (:func:`speed_probe`: the embedded model segmenting a fixed frame
in-process, one thread). On the shared VM this project is measured on, that workload's time
changed by 2-10x within minutes while nothing of ours ran: the probe tells a slow run on a slow
machine from a slow node. Run
``python -m rgbd_seg_ros.tools.node_targets --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rgbd_seg_ros.paths import default_model


@dataclass(frozen=True)
class Target:
    name: str
    run: str  # which measurement gives it: 'default', 'ssma_r18' or 'demo'
    limit: float
    at_least: bool  # True: the figure must reach the limit; False: stay at or below it
    unit: str
    figure: Callable[[dict[str, Any]], float | None]


def _latency(output: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: r['latency_ms'].get(output, {}).get('p50')


def _node(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: r['node'].get(key)


TARGETS = (
    Target('outputs per second', 'default', 15.0, True, 'Hz', lambda r: r['output_rate_hz']),
    Target('labels latency p50', 'default', 45.0, False, 'ms', _latency('labels')),
    Target('cloud latency p50', 'default', 60.0, False, 'ms', _latency('points')),
    Target('labels overhead p50', 'ssma_r18', 10.0, False, 'ms', _node('labels_overhead_p50_ms')),
    Target('overhead to last output p50', 'ssma_r18', 20.0, False, 'ms', _node('overhead_p50_ms')),
    Target(
        'frames segmented',
        'demo',
        90.0,
        True,
        '%',
        lambda r: 100.0 * r['frames_out'] / max(r['frames_in'], 1),
    ),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='node_targets', description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=3, help='rounds (3)')
    parser.add_argument('--seconds', type=float, default=40.0, help='each node_bench run (40)')
    parser.add_argument(
        '--only',
        nargs='+',
        choices=('default', 'ssma_r18', 'demo'),
        default=['default', 'ssma_r18', 'demo'],
        help='measurements to run',
    )
    parser.add_argument('--json', default='', help='write every run and the table here')
    return parser.parse_args(argv)


def speed_probe(frames: int = 8) -> float:
    """Milliseconds per frame, the median of ``frames``, for a fixed in-process workload: the
    embedded model segmenting a synthetic 640x480 frame with every output, torch, one thread.

    A pure compute probe did not see the VM's slow spells: a single-thread matmul loop moved
    between 33 and 41 ms while this workload took 39 ms, then 74-130 ms, then 39 ms again
    (memory-heavy work suffers most when the host is busy). NaN when no embedded model ships.
    """
    import numpy as np
    import torch

    from rgbd_seg_ros.inference.engine import Engine

    model = default_model()
    if model is None:
        return float('nan')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = Engine.from_checkpoint(model, device='cpu', runtime='torch')
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        depth = rng.integers(500, 5000, (480, 640), dtype=np.uint16)
        K = np.array([[525.0, 0.0, 320.0], [0.0, 525.0, 240.0], [0.0, 0.0, 1.0]])
        outputs = ('labels', 'confidence', 'color', 'overlay', 'points')
        engine.predict(rgb, depth, K, outputs=outputs)  # warm-up
        times = []
        for _ in range(frames):
            start = time.perf_counter()
            engine.predict(rgb, depth, K, outputs=outputs)
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def measure_once(kind: str, seconds: float, folder: Path) -> dict[str, Any]:
    """One measurement in its own process; its JSON result plus the load average around it."""
    python = sys.executable
    result_path = folder / f'{kind}.json'
    if kind == 'demo':
        command = [python, '-m', 'rgbd_seg_ros.tools.demo', '--out', str(folder / 'demo')]
        result_path = folder / 'demo' / 'summary.json'
    else:
        command = [python, '-m', 'rgbd_seg_ros.tools.node_bench', '--seconds', str(seconds)]
        command += ['--json', str(result_path)]
        if kind == 'default':
            model = default_model()
            if model is None:
                raise RuntimeError('this installation ships no embedded default model')
            command += ['--checkpoint', str(model)]
    load_before = os.getloadavg()[0]
    probe_before = speed_probe()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not result_path.exists():
        raise RuntimeError(f'{" ".join(command)} failed ({done.returncode}):\n{done.stdout}')
    result: dict[str, Any] = json.loads(result_path.read_text())
    for key in ('checkpoint', 'model'):  # JSON committed beside the README: no local paths
        if isinstance(result.get(key), str):
            result[key] = _portable(result[key])
    result['load_average_around'] = (load_before, os.getloadavg()[0])
    result['speed_probe_ms_around'] = (probe_before, speed_probe())
    return result


def _portable(path: str) -> str:
    """``path`` relative to the working directory when it lies inside it, else its name."""
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return Path(path).name if relative.startswith('..') else relative


def median_spread(values: list[float]) -> tuple[float, float]:
    """The median of non-empty ``values`` and their spread, (max - min) / median (0 when the
    median is 0): how far apart repeated runs of one measurement landed."""
    median = statistics.median(values)
    return median, (max(values) - min(values)) / median if median else 0.0


def table(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    """The target table (text) and its rows."""
    rows = []
    lines = [
        f'{"target":30s} {"limit":>9s} {"runs":28s} {"median":>8s} {"spread":>7s}  met',
    ]
    for target in TARGETS:
        figures = [target.figure(r) for r in runs.get(target.run, [])]
        values = [v for v in figures if v is not None]
        if not values:
            continue
        median, spread = median_spread(values)
        met = median >= target.limit if target.at_least else median <= target.limit
        limit = f'{">=" if target.at_least else "<="}{target.limit:g} {target.unit}'
        cells = ' / '.join(f'{v:.1f}' for v in values)
        lines.append(
            f'{target.name:30s} {limit:>9s} {cells:28s} {median:8.1f} {spread:6.0%}  '
            f'{"yes" if met else "NO"}'
        )
        rows.append(
            {
                'target': target.name,
                'limit': target.limit,
                'at_least': target.at_least,
                'unit': target.unit,
                'values': values,
                'median': median,
                'spread': spread,
                'met': met,
            }
        )
    for kind, results in runs.items():
        loads = ', '.join(
            f'{r["load_average_around"][0]:.2f}-{r["load_average_around"][1]:.2f}' for r in results
        )
        lines.append(f'load average around the {kind} runs: {loads}')
        probes = ', '.join(
            '{:.1f}-{:.1f}'.format(*r['speed_probe_ms_around'])
            for r in results
            if 'speed_probe_ms_around' in r
        )
        if probes:
            lines.append(f'speed probe (ms, lower is faster) around the {kind} runs: {probes}')
    return '\n'.join(lines), rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.only}
    with tempfile.TemporaryDirectory(prefix='node_targets_') as tmp:
        for round_index in range(args.runs):
            for kind in args.only:
                folder = Path(tmp) / f'{kind}_{round_index}'
                folder.mkdir()
                runs[kind].append(measure_once(kind, args.seconds, folder))
                print(f'round {round_index + 1}: {kind} done', flush=True)
    text, rows = table(runs)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({'runs': runs, 'targets': rows}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
