"""Node replay benchmark: 640x480 frames at 30 Hz through the running node.

Reports, from the subscriber's side, the latency from input stamp to each output's arrival,
and from the node's /diagnostics its model forward time, its overhead (latency to the last
publish minus the forward pass) and the point-cloud build time. Prints a table and writes
JSON. Run ``python -m rgbd_seg_ros.tools.node_bench --help`` (``rgbd-seg bench --node``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from rgbd_seg_ros.core.large_blocks import return_large_blocks
from rgbd_seg_ros.inference.threads import available_cores
from rgbd_seg_ros.modes import PRECISIONS, RESOLUTION_POLICIES, RUNTIMES
from rgbd_seg_ros.ros.dds_env import apply_loopback_environment, loopback_environment
from rgbd_seg_ros.ros.process import NodeProcess
from rgbd_seg_ros.ros.topics import reliable_input_params

OUTPUTS = ('labels', 'color', 'overlay', 'confidence', 'points', 'camera_info')


def frame_size(text: str) -> tuple[int, int]:
    """A camera frame's ``WxH`` as (width, height), the benchmarks' ``--size`` type."""
    try:
        width, height = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected WxH such as 640x480, got {text!r}') from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f'at least 16x16, got {text!r}')
    return width, height


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='node_bench', description=__doc__.splitlines()[0])
    parser.add_argument(
        '--checkpoint',
        default='',
        help='model to run (default: SSMA ResNet-18, 12 classes, random)',
    )
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS)
    parser.add_argument(
        '--runtime',
        default='auto',
        choices=RUNTIMES,
        help="the node's runtime parameter",
    )
    parser.add_argument(
        '--cpu-threads',
        type=int,
        default=0,
        help="the node's cpu_threads parameter (0: cores - 1)",
    )
    parser.add_argument(
        '--no-fresh-wait',
        action='store_true',
        help='set wait_for_fresh_frame false (always take the newest frame)',
    )
    parser.add_argument(
        '--resolution-policy',
        default='checkpoint',
        choices=RESOLUTION_POLICIES,
        help="network input size: the checkpoint's, the camera's, or the node's fixed "
        'input_height x input_width (480x640)',
    )
    parser.add_argument('--size', type=frame_size, default='640x480', help='WxH')
    parser.add_argument('--rate', type=float, default=30.0, help='camera rate (Hz)')
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument(
        '--outputs',
        default=','.join(OUTPUTS),
        help="outputs to subscribe to ('none': the node's input path alone, nothing segmented)",
    )
    parser.add_argument(
        '--points-stride',
        type=int,
        default=0,
        help="the node's points.stride parameter (0: the node's default)",
    )
    parser.add_argument('--json', default='', help='write the results here')
    return parser.parse_args(argv)


def default_checkpoint(folder: Path) -> Path:
    """The issue's reference configuration: SSMA, ResNet-18 experts, 12 classes."""
    import torch

    from rgbd_seg_ros.backends.checkpoint import CheckpointMeta, InputSpec, save_checkpoint
    from rgbd_seg_ros.backends.registry import build_backend

    torch.manual_seed(0)
    model = build_backend('ssma', num_classes=12, encoder='resnet18', depth_channels=1)
    meta = CheckpointMeta(
        backend='ssma',
        config=dict(vars(model.config)),
        class_names=[f'class_{i}' for i in range(12)],
        input_spec=InputSpec(depth_encoding='metric'),
        provenance={'made_by': 'node_bench (random weights)'},
    )
    path = folder / 'ssma_r18.safetensors'
    save_checkpoint(path, model, meta)
    return path


def synthetic_frames(width: int, height: int, count: int) -> list[Any]:
    """A few distinct frames (colour ramp + tilted-plane depth) cycled during the run."""
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from rgbd_seg_ros.ros.conversions import image_msg
    from rgbd_seg_ros.tools.replay import Frame

    frames = []
    K = [0.8 * width, 0.0, width / 2, 0.0, 0.8 * width, height / 2, 0.0, 0.0, 1.0]
    rng = np.random.default_rng(0)
    for i in range(count):
        head = Header(frame_id='camera_color_optical_frame')
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        depth = np.linspace(800 + 50 * i, 6000, height, dtype=np.float32)[:, None]
        depth = np.repeat(depth, width, axis=1).astype(np.uint16)
        info = CameraInfo(
            header=head, width=width, height=height, k=K, distortion_model='plumb_bob', d=[0.0] * 5
        )
        frame = Frame(i)
        frame.messages = [
            ('/rgb/image_rect_color', image_msg(rgb, 'rgb8', head)),
            ('/depth_registered/image_rect', image_msg(depth, '16UC1', head)),
            ('/rgb/camera_info', info),
        ]
        frames.append(frame)
    return frames


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {'p50': None, 'p95': None}
    return {'p50': float(np.percentile(values, 50)), 'p95': float(np.percentile(values, 95))}


def measure(
    args: argparse.Namespace,
    workdir: Path,
    around_replay: Callable[[int], AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """Start the node, replay, collect latencies and the node's own figures.

    ``around_replay(node_pid)`` wraps the timed replay (after the warm-up): the profiler
    (``node_profile``) attaches there.
    """
    domain = apply_loopback_environment(workdir / 'ros_log')
    # This process takes every output, 12 MB a 640x480 frame. With glibc's default trimming
    # each received cloud was copied twice into pages faulted in afresh (the copy rcl takes,
    # then Python's bytes): 20 ms from publish to arrival for a 7.4 MB message, 8 ms with the
    # node's own malloc settings, and CPU taken from the node it measures (README).
    return_large_blocks()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from rgbd_seg_ros.ros.conversions import cdr_stamp_ns
    from rgbd_seg_ros.tools.replay import RecordingPlayer

    width, height = args.size
    checkpoint = args.checkpoint or str(default_checkpoint(workdir))
    params = {
        'checkpoint': checkpoint,
        'device': args.device,
        'precision': args.precision,
        **reliable_input_params(),
        'diagnostics_period': 1.0,
        'resolution_policy': args.resolution_policy,
        'cpu_threads': args.cpu_threads,
        'runtime': args.runtime,
        'wait_for_fresh_frame': not args.no_fresh_wait,
    }
    if args.points_stride:
        params['points'] = {'stride': args.points_stride}
    node = NodeProcess.start(
        'segmentation_node', workdir, loopback_environment(workdir / 'ros_log', domain), params
    )
    rclpy.init()
    peer = rclpy.create_node('node_bench')
    executor = SingleThreadedExecutor()
    executor.add_node(peer)
    names = [] if args.outputs == 'none' else args.outputs.split(',')
    arrivals: dict[str, list[float]] = {name: [] for name in names}
    types = {'points': PointCloud2, 'camera_info': CameraInfo}
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)

    def on_output(name: str, data: bytes) -> None:
        arrivals[name].append((peer.get_clock().now().nanoseconds - cdr_stamp_ns(data)) / 1e6)

    # raw=True: the bench reads only the stamp, so its own deserialisation of 12 MB per frame
    # does not compete with the node for the CPU it measures (a C++ consumer would not either).
    for name in arrivals:
        peer.create_subscription(
            types.get(name, Image),
            f'/segmentation/{name}',
            functools.partial(on_output, name),
            qos,
            raw=True,
        )
    diagnostics: list[dict[str, str]] = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        diagnostics.append({kv.key: kv.value for kv in msg.status[0].values})

    peer.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    frames = synthetic_frames(width, height, 8)
    schedule = [frames[i % len(frames)] for i in range(int(args.seconds * args.rate))]
    for i, frame in enumerate(schedule):
        schedule[i] = type(frame)(int(i * 1e9 / args.rate), frame.messages)
    player = RecordingPlayer(peer, [t for t, _ in frames[0].messages])
    try:
        pubs = [player.publisher(t, m) for t, m in frames[0].messages]
        deadline = time.monotonic() + 120
        while not all(p.get_subscription_count() for p in pubs) or not all(
            peer.count_publishers(f'/segmentation/{n}') for n in arrivals
        ):
            if time.monotonic() > deadline or not node.alive():
                raise RuntimeError('node did not come up:\n' + node.log()[-2000:])
            executor.spin_once(timeout_sec=0.1)
        _warm_up(player, frames, executor, arrivals, node)
        for values in arrivals.values():
            values.clear()
        diagnostics.clear()
        thread = threading.Thread(target=player.play, args=(schedule,), daemon=True)
        wrapper = around_replay(node.proc.pid) if around_replay else contextlib.nullcontext()
        with wrapper:
            cpu_before = _cpu_seconds(node.proc.pid)
            own_before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.monotonic()
            thread.start()
            while thread.is_alive():
                executor.spin_once(timeout_sec=0.05)
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
            elapsed = time.monotonic() - started
            node_cpu_s = _cpu_seconds(node.proc.pid) - cpu_before
            own = _usage_since(own_before, elapsed)
    finally:
        executor.shutdown()
        peer.destroy_node()
        rclpy.try_shutdown()
        rc = node.interrupt()
    last = diagnostics[-1] if diagnostics else {}
    return {
        'machine': f'{platform.processor() or platform.machine()}, '
        f'{available_cores()} CPU cores' + _gpu_note(args.device),
        'size': 'x'.join(map(str, args.size)),
        'rate_hz': args.rate,
        'frames_in': len(schedule),
        'frames_out': len(arrivals.get('labels', [])),
        'output_rate_hz': len(arrivals.get('labels', [])) / elapsed,
        # CPU the node used (all its threads) over the replay, in % of one core: less
        # sensitive to other load on the machine than the latencies.
        'node_cpu_percent': 100.0 * node_cpu_s / elapsed,
        # What this process (replayer and measuring subscriber) cost on the same cores.
        'bench_cpu_percent': own['cpu_percent'],
        'bench_page_faults_per_s': own['page_faults_per_s'],
        'load_average': os.getloadavg(),
        'latency_ms': {name: percentiles(values) for name, values in arrivals.items()},
        'node': {
            key: float(last[key])
            for key in last
            if key.startswith(
                (
                    'model_time',
                    'overhead',
                    'labels_overhead',
                    'work_overhead',
                    'cloud_time',
                    'pickup_age',
                    'prepare_time',
                )
            )
        },
        'drops': {key: int(last[key]) for key in last if key.startswith(('dropped', 'waited'))},
        'checkpoint': checkpoint,
        'node_exit_code': rc,
        'cpu_threads': int(last.get('cpu_threads', 0)),
        'runtime': args.runtime,
        'wait_for_fresh_frame': not args.no_fresh_wait,
        'points_stride': args.points_stride or None,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _usage_since(before: resource.struct_rusage, elapsed: float) -> dict[str, float]:
    """This process's CPU (% of one core) and page faults per second since ``before``."""
    now = resource.getrusage(resource.RUSAGE_SELF)
    cpu = now.ru_utime + now.ru_stime - before.ru_utime - before.ru_stime
    faults = now.ru_minflt + now.ru_majflt - before.ru_minflt - before.ru_majflt
    return {'cpu_percent': 100.0 * cpu / elapsed, 'page_faults_per_s': faults / elapsed}


def _warm_up(player, frames, executor, arrivals, node) -> None:
    """A few frames first: allocator and kernel set-up is not what we measure."""
    for frame in frames[:3]:
        before = len(arrivals['labels']) if 'labels' in arrivals else 0
        player.play([frame])
        deadline = time.monotonic() + 120
        while 'labels' in arrivals and len(arrivals['labels']) == before:
            if time.monotonic() > deadline or not node.alive():
                raise RuntimeError('no output during warm-up:\n' + node.log()[-2000:])
            executor.spin_once(timeout_sec=0.05)


def _gpu_note(device: str) -> str:
    import torch

    if device != 'cpu' and torch.cuda.is_available():
        return f', {torch.cuda.get_device_name(0)}'
    return ', no GPU'


def report(result: dict[str, Any]) -> str:
    lines = [
        f'node replay: {result["size"]} at {result["rate_hz"]:g} Hz on {result["machine"]}',
        f'  frames in/out {result["frames_in"]}/{result["frames_out"]} '
        f'({result["output_rate_hz"]:.1f} Hz out); node CPU {result["node_cpu_percent"]:.0f} % '
        f'of a core; load average {result["load_average"][0]:.2f}',
        f'  this process (replay + measuring subscriber): CPU {result["bench_cpu_percent"]:.0f} '
        f'% of a core, {result["bench_page_faults_per_s"]:.0f} page faults/s',
    ]
    for name, p in result['latency_ms'].items():
        if p['p50'] is not None:
            lines.append(f'  latency {name:12s} p50 {p["p50"]:7.1f} ms   p95 {p["p95"]:7.1f} ms')
    node = result['node']
    for key in (
        'model_time',
        'overhead',
        'labels_overhead',
        'pickup_age',
        'prepare_time',
        'work_overhead',
        'cloud_time',
    ):
        if f'{key}_p50_ms' in node:
            lines.append(
                f'  node {key:14s} p50 {node[f"{key}_p50_ms"]:7.1f} ms   '
                f'p95 {node.get(f"{key}_p95_ms", float("nan")):7.1f} ms'
            )
    lines.append(f'  drops {result["drops"]}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='node_bench_') as tmp:
        result = measure(args, Path(tmp))
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result['node_exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
