"""What one large output costs in transport: the publish call, and its arrival in another process.

The node's cloud at 640x480 is a 7.4 MB message a frame. This publishes serialised PointCloud2
messages of that size (``--points``) the way the node does (one buffer, restamped in place,
published with the GIL released), on the loopback DDS setup the tests use, to a subscriber in
a child process, and prints the publish call's and the arrival's p50 / p95 (arrival: the
subscriber's clock at its callback minus the stamp, both this machine's clock).

Two settings are compared, each a list whose entries run in interleaved rounds (``--rounds``),
so a machine that changes speed affects each alike:

- ``--subscriber-malloc default keep``: the subscriber with glibc's default malloc, or with
  the node's settings (``core/large_blocks.return_large_blocks``) called first. A consumer's
  allocator decides much of what a large message costs it (README, "The node").
- ``--publication-mode SYNCHRONOUS ASYNCHRONOUS``: rmw_fastrtps's publication mode in the
  publishing process (``RMW_FASTRTPS_PUBLICATION_MODE``).

``--deserialize``: the subscriber takes message objects (what a ``read_points`` user gets)
instead of raw bytes. Run ``python -m rgbd_seg_ros.tools.transport_bench --help``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import operator
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rgbd_seg_ros.core.large_blocks import return_large_blocks
from rgbd_seg_ros.inference.threads import available_cores
from rgbd_seg_ros.ros.dds_env import apply_loopback_environment
from rgbd_seg_ros.tools.node_bench import percentiles
from rgbd_seg_ros.tools.node_targets import median_spread

TOPIC = 'transport_bench'
MALLOC_MODES = ('default', 'keep')
PUBLICATION_MODES = ('SYNCHRONOUS', 'ASYNCHRONOUS')
_MODE_VARIABLE = 'RMW_FASTRTPS_PUBLICATION_MODE'
_WARM_UP = 5  # messages stamped 0 before the measured ones: discovery settles, pools fill
_MATCH_TIMEOUT_S = 20.0
_MAX_SEQUENCE_BYTES = 2**32 - 1  # CDR's sequence length is a uint32


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f'must be positive, got {text}')
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='transport_bench', description=__doc__.splitlines()[0])
    parser.add_argument(
        '--points',
        type=_positive(int),
        default=640 * 480,
        help='points per message, 24 bytes each (307200: the 640x480 cloud, 7.4 MB)',
    )
    parser.add_argument('--count', type=_positive(int), default=150, help='messages per run')
    parser.add_argument('--rate', type=_positive(float), default=15.0, help='messages per second')
    parser.add_argument('--rounds', type=_positive(int), default=1, help='rounds of every variant')
    parser.add_argument(
        '--subscriber-malloc', nargs='+', choices=MALLOC_MODES, default=['default', 'keep']
    )
    parser.add_argument(
        '--publication-mode', nargs='+', choices=PUBLICATION_MODES, default=['SYNCHRONOUS']
    )
    parser.add_argument(
        '--deserialize', action='store_true', help='the subscriber takes message objects'
    )
    parser.add_argument('--json', default='', help='write every run and the summary here')
    parser.add_argument('--role', choices=('subscriber', 'publisher'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.points * 24 > _MAX_SEQUENCE_BYTES:
        parser.error(f'--points {args.points}: a CDR sequence holds at most 4 GiB - 1 bytes')
    return args


def _qos() -> Any:
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)  # the node's outputs


def subscribe(args: argparse.Namespace) -> dict[str, Any]:
    """The subscribing child: take ``args.count`` stamped messages, or give up at a deadline."""
    keep = args.subscriber_malloc == ['keep']
    if keep:
        return_large_blocks()
    import rclpy
    from sensor_msgs.msg import PointCloud2

    from rgbd_seg_ros.ros.conversions import cdr_stamp_ns

    rclpy.init()
    node = rclpy.create_node('transport_bench_subscriber')
    arrivals: list[float] = []

    def arrived(stamp_ns: int) -> None:
        if stamp_ns:  # the warm-up messages carry stamp 0
            arrivals.append((time.time_ns() - stamp_ns) / 1e6)

    def on_bytes(data: bytes) -> None:
        arrived(cdr_stamp_ns(data))

    def on_message(msg: PointCloud2) -> None:
        arrived(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

    if args.deserialize:
        node.create_subscription(PointCloud2, TOPIC, on_message, _qos())
    else:
        node.create_subscription(PointCloud2, TOPIC, on_bytes, _qos(), raw=True)
    print('ready', flush=True)
    deadline = time.monotonic() + _MATCH_TIMEOUT_S + (_WARM_UP + args.count) / args.rate + 10.0
    try:
        while len(arrivals) < args.count and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return {'arrival_ms': arrivals, 'large_blocks': keep}


def _restamp(buffer: np.ndarray, stamp_ns: int) -> None:
    """Write ``stamp_ns`` into the header of the serialised message in ``buffer`` (no copy of
    the 7.4 MB, as ``conversions.restamp_cdr`` would make)."""
    from rgbd_seg_ros.ros.conversions import cdr_stamp_field

    buffer[4:12] = np.frombuffer(cdr_stamp_field(buffer, stamp_ns), np.uint8)


def publish(args: argparse.Namespace) -> dict[str, Any]:
    """The publishing child, set up as the node is: its malloc settings, the cloud written into
    the message buffer once, each message restamped in place and published by ``RawPublisher``."""
    return_large_blocks()
    import rclpy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from rgbd_seg_ros.ros.raw_publish import RawPublisher
    from rgbd_seg_ros.ros.serialized import CloudMessage

    rclpy.init()
    node = rclpy.create_node('transport_bench_publisher')
    try:
        publisher = node.create_publisher(PointCloud2, TOPIC, _qos())
        cloud = CloudMessage((args.points,), Header(frame_id='transport_bench'))
        cloud.records.view(np.uint8)[...] = 0
        parts, raw = cloud.parts(), RawPublisher()
        deadline = time.monotonic() + _MATCH_TIMEOUT_S
        while publisher.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f'no subscriber matched within {_MATCH_TIMEOUT_S:.0f} s')
            time.sleep(0.05)
        period, calls = 1.0 / args.rate, []
        next_at = time.monotonic()
        for index in range(_WARM_UP + args.count):
            _restamp(cloud.buffer, time.time_ns() if index >= _WARM_UP else 0)
            start = time.perf_counter()
            raw.publish(publisher, parts)
            if index >= _WARM_UP:
                calls.append((time.perf_counter() - start) * 1e3)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        time.sleep(1.0)  # reliable delivery of the last messages before the writer goes
        return {'publish_ms': calls, 'releases_gil': raw.releases_gil}
    finally:
        node.destroy_node()
        rclpy.shutdown()


def _child(args: argparse.Namespace, role: str, malloc: str, mode: str) -> list[str]:
    command = [sys.executable, '-m', 'rgbd_seg_ros.tools.transport_bench', '--role', role]
    command += ['--points', str(args.points), '--count', str(args.count)]
    command += ['--rate', str(args.rate), '--subscriber-malloc', malloc]
    command += ['--publication-mode', mode] + (['--deserialize'] if args.deserialize else [])
    return command


def _last_json(output: str, who: str) -> dict[str, Any]:
    lines = output.strip().splitlines()
    if not lines:
        raise RuntimeError(f'the {who} printed nothing')
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_once(args: argparse.Namespace, malloc: str, mode: str) -> dict[str, Any]:
    """One run: a subscriber child with ``malloc``, a publisher child in publication ``mode``
    (rmw reads it when the child's participant is made)."""
    timeout = _MATCH_TIMEOUT_S * 2 + (_WARM_UP + args.count) / args.rate + 30.0
    subscriber = subprocess.Popen(
        _child(args, 'subscriber', malloc, mode), stdout=subprocess.PIPE, text=True
    )
    try:
        assert subscriber.stdout is not None
        if subscriber.stdout.readline().strip() != 'ready':
            raise RuntimeError('the subscriber did not start')
        publisher = subprocess.run(
            _child(args, 'publisher', malloc, mode),
            env={**os.environ, _MODE_VARIABLE: mode},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if publisher.returncode != 0:
            raise RuntimeError(f'the publisher failed:\n{publisher.stderr[-2000:]}')
        output, _ = subscriber.communicate(timeout=timeout)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
    sent = _last_json(publisher.stdout, 'publisher')
    received = _last_json(output, 'subscriber')
    return {
        'subscriber_malloc': malloc,
        'publication_mode': mode,
        'sent': args.count,
        'received': len(received['arrival_ms']),
        'publish_ms': percentiles(sent['publish_ms']),
        'arrival_ms': percentiles(received['arrival_ms']),
        'publisher_releases_gil': sent['releases_gil'],
        'subscriber_large_blocks': received['large_blocks'],
    }


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: every run's p50s, their median and spread ((max - min) / median)."""
    rows = []
    key = operator.itemgetter('subscriber_malloc', 'publication_mode')
    for (malloc, mode), group in itertools.groupby(sorted(runs, key=key), key=key):
        runs_of = list(group)
        row: dict[str, Any] = {'subscriber_malloc': malloc, 'publication_mode': mode}
        for figure in ('publish_ms', 'arrival_ms'):
            values = [r[figure]['p50'] for r in runs_of if r[figure]['p50'] is not None]
            median, spread = median_spread(values) if values else (None, None)
            row[figure] = {'p50s': values, 'median': median, 'spread': spread}
        row['received'] = [f'{r["received"]}/{r["sent"]}' for r in runs_of]
        rows.append(row)
    return rows


def report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    size = args.points * 24
    lines = [
        f'transport_bench: {args.count} messages of {size:,} bytes at {args.rate:g} Hz, '
        f'{args.rounds} round(s); {platform.machine()}, {available_cores()} usable cores; '
        f'subscriber takes {"message objects" if args.deserialize else "raw bytes"}',
        f'{"subscriber malloc":18s} {"publication mode":17s} {"publish call p50 (runs)":28s} '
        f'{"arrival p50 (runs)":28s} received',
    ]
    for row in rows:
        cells = []
        for figure in ('publish_ms', 'arrival_ms'):
            f = row[figure]
            runs = ' / '.join(f'{v:.1f}' for v in f['p50s'])
            cells.append(
                f'{f["median"]:.1f} ms ({runs})' if f['median'] is not None else 'none received'
            )
        lines.append(
            f'{row["subscriber_malloc"]:18s} {row["publication_mode"]:17s} {cells[0]:28s} '
            f'{cells[1]:28s} {", ".join(row["received"])}'
        )
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == 'subscriber':
        print(json.dumps(subscribe(args)), flush=True)
        return 0
    if args.role == 'publisher':
        print(json.dumps(publish(args)), flush=True)
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix='transport_bench_') as tmp:
        apply_loopback_environment(Path(tmp) / 'ros_log')  # the children inherit it
        try:
            for _ in range(args.rounds):
                for malloc in args.subscriber_malloc:
                    for mode in args.publication_mode:
                        runs.append(run_once(args, malloc, mode))
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
            print(f'transport_bench: {err}', file=sys.stderr)
            return 1
    rows = summary(runs)
    print(report(args, rows))
    if args.json:
        Path(args.json).write_text(json.dumps({'runs': runs, 'summary': rows}, indent=2))
    return 0 if all(r['received'] > 0 for r in runs) else 1


if __name__ == '__main__':
    sys.exit(main())
