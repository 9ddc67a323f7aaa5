"""What handing the outputs to DDS costs after the labels, frame by frame in one process.

The node's overhead to its last output is the engine's work after the labels plus the
publishes of about 12 MB a frame (SSMA at 480x640), on cores that the camera driver and the
subscribers share. This runs the node's own engine and its output path (``OutputPublisher``,
``PublisherSink``: images serialised in one copy, the cloud written into its message, published
with the GIL released) in one process with no node, replayer or executor around it, and
alternates frame by frame between two sinks:

- ``published``: every output published over the loopback DDS setup of the tests to a
  subscriber in a child process that takes raw bytes (as ``node_bench``'s does), with the
  node's output QoS;
- ``serialised``: each output serialised into its message bytes and not published.

Alternating frames rather than runs keeps a VM's changes of speed out of the difference (README,
Performance). It prints, per sink, the time from the labels' publish to the last output's, and
each output's. Run ``python -m rgbd_seg_ros.tools.publish_cost --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rgbd_seg_ros.errors import CheckpointError, ConfigError
from rgbd_seg_ros.inference.threads import available_cores
from rgbd_seg_ros.tools.node_bench import frame_size

if TYPE_CHECKING:  # the engine imports torch: loaded only when a run starts
    from rgbd_seg_ros.inference.engine import Engine

OUTPUTS = ('labels', 'confidence', 'points', 'color', 'overlay')
SINKS = ('published', 'serialised')
TOPIC_PREFIX = 'publish_cost/'
SIDE_THREAD: dict[str, bool | None] = {'auto': None, 'on': True, 'off': False}
_WARM_UP = 2  # frames published before the measured ones: sessions export, pools fill
_MATCH_TIMEOUT_S = 20.0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be positive, got {text}')
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='publish_cost', description=__doc__.splitlines()[0])
    parser.add_argument(
        '--checkpoint',
        default='',
        help="model (default: node_bench's SSMA ResNet-18, 12 classes, random weights)",
    )
    parser.add_argument('--frames', type=_positive_int, default=30, help='frames per sink')
    parser.add_argument('--size', type=frame_size, default='640x480', help='WxH (640x480)')
    parser.add_argument('--pause', type=float, default=0.05, help='seconds between frames (0.05)')
    parser.add_argument('--device', default='auto', help="the engine's device (auto: CUDA if any)")
    parser.add_argument(
        '--side-thread',
        choices=tuple(SIDE_THREAD),
        default='auto',
        help="the engine's side thread for the work after the labels (auto: on a CPU with two "
        'or more cores, as in the node; on: on CUDA too)',
    )
    parser.add_argument('--json', default='', help='write every frame and the summary here')
    parser.add_argument('--role', choices=('subscriber',), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def subscribe() -> dict[str, int]:
    """The child: raw subscriptions to every output until its stdin closes; counts taken."""
    import rclpy
    from sensor_msgs.msg import Image, PointCloud2

    from rgbd_seg_ros.ros.qos import output_qos

    rclpy.init()
    node = rclpy.create_node('publish_cost_subscriber')
    counts = dict.fromkeys(OUTPUTS, 0)

    def counter(name: str) -> Any:
        def count(_data: bytes) -> None:
            counts[name] += 1

        return count

    for name in OUTPUTS:
        kind = PointCloud2 if name == 'points' else Image
        node.create_subscription(kind, TOPIC_PREFIX + name, counter(name), output_qos(), raw=True)
    done = threading.Event()

    def wait_for_parent() -> None:
        # The parent closes this pipe when it is finished, or by dying: either way we stop.
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_parent, daemon=True).start()
    print('ready', flush=True)
    try:
        while not done.is_set():
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return counts


class _Serialised:
    """A sink that makes each output's message bytes and publishes nothing."""

    def publish(self, _name: str, payload: Any) -> None:
        payload.contiguous()


class _Timed:
    """Wraps a sink, noting when each output's publish (or serialisation) returned."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.returned: dict[str, int] = {}
        self._lock = threading.Lock()  # the engine's side thread publishes too

    def listened(self, names: Iterable[str]) -> set[str]:
        """Every output: the tool publishes them all."""
        return set(names)

    def publish(self, name: str, payload: Any) -> None:
        self._sink.publish(name, payload)
        now = time.perf_counter_ns()
        with self._lock:
            self.returned[name] = now


def frame_row(
    sink: str, returned: Mapping[str, int], timings_ms: Mapping[str, float]
) -> dict[str, Any]:
    """One frame: each output's return after the labels' (ms), the last, and the forward."""
    labels = returned['labels']
    after = {name: (at - labels) / 1e6 for name, at in returned.items() if name != 'labels'}
    return {
        'sink': sink,
        'after_labels_ms': after,
        'labels_to_last_ms': max(after.values(), default=0.0),
        'forward_ms': float(timings_ms.get('forward', 0.0)),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per sink: frames, median and quartiles of labels -> last, each output's median."""
    result: dict[str, dict[str, Any]] = {}
    for sink in SINKS:
        mine = [row for row in rows if row['sink'] == sink]
        if not mine:
            continue
        last = [row['labels_to_last_ms'] for row in mine]
        quartiles = np.percentile(last, [25, 50, 75]).tolist()
        names = sorted({name for row in mine for name in row['after_labels_ms']})
        result[sink] = {
            'frames': len(mine),
            'labels_to_last_ms': dict(zip(('p25', 'p50', 'p75'), quartiles, strict=True)),
            'after_labels_p50_ms': {
                name: statistics.median(
                    row['after_labels_ms'][name] for row in mine if name in row['after_labels_ms']
                )
                for name in names
            },
            'forward_p50_ms': statistics.median(row['forward_ms'] for row in mine),
        }
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        f'publish_cost: {result["size"]}, {result["checkpoint"]} on {result["device"]} '
        f'({result["runtime"]}, side thread {"on" if result["side_thread"] else "off"}), '
        f'{result["machine"]}; {result["frames_per_sink"]} frames per sink, alternating',
    ]
    for sink, row in result['summary'].items():
        q = row['labels_to_last_ms']
        outputs = ', '.join(f'{n} {v:.1f}' for n, v in row['after_labels_p50_ms'].items())
        lines.append(
            f'  {sink:10s} labels -> last {q["p50"]:5.1f} ms (IQR {q["p25"]:.1f}-{q["p75"]:.1f})'
            f'; after the labels, p50 ms: {outputs}; forward p50 {row["forward_p50_ms"]:.0f} ms'
        )
    lines.append(f'  received by the subscriber: {result["received"]}')
    return '\n'.join(lines)


def _frame(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """node_bench's kind of frame: random colour, a depth ramp from 0.8 to 6 m."""
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = np.repeat(np.linspace(800, 6000, height, dtype=np.float32)[:, None], width, axis=1)
    K = np.array([[0.8 * width, 0, width / 2], [0, 0.8 * width, height / 2], [0, 0, 1]])
    return rgb, depth.astype(np.uint16), K


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Load the engine (a bad checkpoint or device fails here, before any process starts),
    then alternate the two sinks over its frames."""
    from rgbd_seg_ros.ros.dds_env import apply_loopback_environment

    apply_loopback_environment(workdir / 'ros_log', random.randint(1, 200))
    from rgbd_seg_ros.core.large_blocks import return_large_blocks

    return_large_blocks()  # the node's malloc settings
    from rgbd_seg_ros.inference.engine import Engine
    from rgbd_seg_ros.inference.threads import configure_cpu_threads
    from rgbd_seg_ros.tools.node_bench import default_checkpoint

    checkpoint = args.checkpoint or str(default_checkpoint(workdir))
    configure_cpu_threads(0)  # the node's default: cores - 1
    engine = Engine.from_checkpoint(
        checkpoint, device=args.device, runtime='auto', side_thread=SIDE_THREAD[args.side_thread]
    )
    rows, received = _alternate(engine, args)
    return {
        'machine': f'{platform.processor() or platform.machine()}, {available_cores()} CPU cores'
        + _gpu_note(engine.device),
        'size': 'x'.join(map(str, args.size)),
        'checkpoint': Path(checkpoint).name,
        'device': str(engine.device),
        'runtime': engine.runtime,
        'side_thread': engine.side_thread,
        'frames_per_sink': args.frames,
        'published_per_output': _WARM_UP + args.frames,
        'received': received,
        'load_average': os.getloadavg(),
        'summary': summary(rows),
        'frames': rows,
    }


def _alternate(
    engine: Engine, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The frames, each sink in turn, and what the child subscriber received."""
    import rclpy
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Header

    from rgbd_seg_ros.ros.qos import output_qos
    from rgbd_seg_ros.ros.segment_worker import OutputPublisher, PublisherSink

    command = [sys.executable, '-m', 'rgbd_seg_ros.tools.publish_cost', '--role', 'subscriber']
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rclpy.init()
    node = rclpy.create_node('publish_cost')
    rows = []
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != 'ready':
            raise RuntimeError('the subscriber did not start')
        publishers = {
            name: node.create_publisher(
                PointCloud2 if name == 'points' else Image, TOPIC_PREFIX + name, output_qos()
            )
            for name in OUTPUTS
        }
        deadline = time.monotonic() + _MATCH_TIMEOUT_S
        while not all(p.get_subscription_count() for p in publishers.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f'the subscriber did not match within {_MATCH_TIMEOUT_S:.0f} s')
            time.sleep(0.05)
        sinks = {'published': PublisherSink(publishers), 'serialised': _Serialised()}
        rgb, depth, K = _frame(*args.size)
        for index in range(_WARM_UP + 2 * args.frames):
            sink = SINKS[index % 2] if index >= _WARM_UP else 'published'
            timed = _Timed(sinks[sink])
            out = OutputPublisher(timed, time.perf_counter_ns, set(OUTPUTS), Header(), None)
            prediction = engine.predict(
                rgb, depth, K, OUTPUTS, emit=out.publish, cloud_buffer=out.cloud_buffer
            )
            if index >= _WARM_UP:
                rows.append(frame_row(sink, timed.returned, prediction.timings_ms))
            time.sleep(args.pause)
        time.sleep(0.5)  # reliable delivery of the last frame before the writers go
    finally:
        node.destroy_node()
        rclpy.shutdown()
        try:
            out_text, _ = child.communicate(timeout=30)  # closes its stdin: it stops
        except subprocess.TimeoutExpired:
            child.kill()
            out_text, _ = child.communicate()
    received: dict[str, int] = (
        json.loads(out_text.strip().splitlines()[-1]) if child.returncode == 0 else {}
    )
    return rows, received


def _gpu_note(device: Any) -> str:
    import torch

    if device.type != 'cuda':
        return ''
    return f', {torch.cuda.get_device_name(device)}'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == 'subscriber':
        counts = subscribe()
        print(json.dumps(counts), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix='publish_cost_') as tmp:
        try:
            result = measure(args, Path(tmp))
        except (ConfigError, CheckpointError) as err:
            print(f'publish_cost: {err}', file=sys.stderr)
            return 2
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
