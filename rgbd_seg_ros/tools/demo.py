"""The end-to-end demo (the README's main command): recording -> node -> recorded outputs.

1. a small synthetic recording (deterministic, rendered in seconds) stands in for a camera;
2. the real segmentation node starts with the embedded default model, over loopback DDS;
3. the recording is replayed at its recorded rate; everything the node publishes is recorded
   into ``outputs.mcap`` (Foxglove / ``ros2 bag`` can open it);
4. previews (colour | depth | overlay | confidence, and a point-cloud snapshot) are written as
   PNG, and a summary reports frames in/out, latency and mIoU against the recording's labels.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rgbd_seg_ros.core.large_blocks import return_large_blocks
from rgbd_seg_ros.data.synth import write_recording
from rgbd_seg_ros.data.synth.writers import COLOR_TOPIC as SYNTH_COLOUR
from rgbd_seg_ros.data.synth.writers import DEPTH_TOPIC as SYNTH_DEPTH
from rgbd_seg_ros.data.synth.writers import INFO_TOPIC as SYNTH_INFO
from rgbd_seg_ros.data.synth.writers import LABEL_TOPIC as SYNTH_LABELS
from rgbd_seg_ros.errors import RgbdSegError
from rgbd_seg_ros.paths import DEFAULT_MODEL, default_model
from rgbd_seg_ros.ros.dds_env import apply_loopback_environment, loopback_environment
from rgbd_seg_ros.ros.process import NodeProcess
from rgbd_seg_ros.ros.topics import reliable_input_params
from rgbd_seg_ros.tools.node_bench import frame_size

INPUTS = {
    SYNTH_COLOUR: '/rgb/image_rect_color',
    SYNTH_DEPTH: '/depth_registered/image_rect',
    SYNTH_INFO: '/rgb/camera_info',
}
OUTPUTS = {
    '/segmentation/labels': 'sensor_msgs/msg/Image',
    '/segmentation/color': 'sensor_msgs/msg/Image',
    '/segmentation/overlay': 'sensor_msgs/msg/Image',
    '/segmentation/confidence': 'sensor_msgs/msg/Image',
    '/segmentation/points': 'sensor_msgs/msg/PointCloud2',
    '/segmentation/camera_info': 'sensor_msgs/msg/CameraInfo',
    '/segmentation/classes': 'std_msgs/msg/String',
    '/diagnostics': 'diagnostic_msgs/msg/DiagnosticArray',
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='rgbd-seg-demo', description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='out/demo', help='output folder')
    parser.add_argument('--checkpoint', default='', help='model (default: embedded model)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--frames', type=int, default=60)
    parser.add_argument('--fps', type=float, default=10.0)
    parser.add_argument('--size', type=frame_size, default='640x480', help='WxH of the recording')
    parser.add_argument('--seed', type=int, default=2024)
    parser.add_argument('--points-stride', type=int, default=2)
    parser.add_argument('--previews', type=int, default=4, help='frames shown in previews.png')
    return parser.parse_args(argv)


def make_recording(out: Path, args: argparse.Namespace) -> Path:
    """Render the sample recording once; later runs reuse it (same seed, same bytes)."""
    width, height = args.size
    path = out / f'recording_s{args.seed}_{args.frames}f_{width}x{height}'
    if not (path / 'metadata.yaml').exists():
        print(f'[demo] rendering a {args.frames}-frame {width}x{height} recording ...', flush=True)
        started = time.perf_counter()
        write_recording(
            path, seed=args.seed, num_frames=args.frames, width=width, height=height, fps=args.fps
        )
        print(f'[demo]   done in {time.perf_counter() - started:.1f} s', flush=True)
    return path


def start_node(out: Path, args: argparse.Namespace, env: dict[str, str]) -> NodeProcess:
    params = {
        'checkpoint': args.checkpoint,
        'device': args.device,
        **reliable_input_params(),
        'queue_size': 5,
        'points': {'stride': args.points_stride},
        'diagnostics_period': 1.0,
    }
    return NodeProcess.start('segmentation_node', out, env, params)


class Session:
    """The demo's own participant: player, recorder and a spinning executor."""

    def __init__(self, out: Path) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from rgbd_seg_ros.tools.replay import OutputRecorder, RecordingPlayer

        rclpy.init()
        self.node = rclpy.create_node('rgbd_seg_demo')
        self.player = RecordingPlayer(self.node, INPUTS.values())
        self.recorder = OutputRecorder(
            self.node,
            fresh_outputs_dir(out),
            OUTPUTS,
            latched=frozenset({'/segmentation/classes'}),
        )
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout: float, node: NodeProcess, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if not node.alive():
                raise RgbdSegError(
                    f'the node exited while waiting for {what}:\n' + node.log()[-2000:]
                )
            if time.monotonic() > deadline:
                raise RgbdSegError(f'timed out waiting for {what}; node log: {node.log_path}')
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self.recorder.close()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def replay(session: Session, frames: list, node: NodeProcess) -> None:
    """Play in a thread while this thread spins the executor (receives outputs)."""
    labels = session.recorder.received['/segmentation/labels']
    first_pub = {}
    for topic, msg in frames[0].messages:
        first_pub[topic] = session.player.publisher(topic, msg)
    session.spin_until(
        lambda: (
            all(p.get_subscription_count() for p in first_pub.values())
            and session.recorder.received['/segmentation/classes']
        ),
        60.0,
        node,
        'the node to subscribe and load its model',
    )
    thread = threading.Thread(target=session.player.play, args=(frames,), daemon=True)
    thread.start()
    session.spin_until(lambda: not thread.is_alive(), len(frames) + 60.0, node, 'the replay')
    # Outputs of the last frames may still be in flight: wait until they stop coming.
    count = [-1, time.monotonic()]

    def settled() -> bool:
        if len(labels) != count[0]:
            count[:] = [len(labels), time.monotonic()]
        return time.monotonic() - count[1] > 3.0

    session.spin_until(settled, 120.0, node, 'the last outputs')


def fresh_outputs_dir(out: Path) -> Path:
    """``out/outputs`` cleared of the previous run's recording (the mcap writer refuses to
    overwrite, which made a second ``./run demo`` fail); anything else there is refused."""
    path = out / 'outputs'
    if path.exists():
        ours = {'metadata.yaml', 'outputs.mcap'}
        names = {child.name for child in path.iterdir()}
        if not names <= ours:
            raise RgbdSegError(
                f'{path} holds files the demo did not write '
                f'({", ".join(sorted(names - ours))}); move them away'
            )
        shutil.rmtree(path)
    return path


def _image(msg: Any) -> np.ndarray:
    from rgbd_seg_ros.core.image_codec import decode_image

    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def read_outputs(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """Every recorded output as (receive time ns, rosbags message), per topic."""
    from rgbd_seg_ros.data.recordings import Recording

    out: dict[str, list[tuple[int, Any]]] = {topic: [] for topic in OUTPUTS}
    with Recording(path) as recording:
        for raw in recording.messages(OUTPUTS):
            out[raw.topic].append((raw.log_time_ns, recording.deserialize(raw)))
    return out


def ground_truth(path: Path) -> dict[int, dict[str, Any]]:
    """Recorded colour, depth and labels by header stamp."""
    from rgbd_seg_ros.data.recordings import Recording

    names = {SYNTH_COLOUR: 'rgb', SYNTH_DEPTH: 'depth', SYNTH_LABELS: 'labels'}
    frames: dict[int, dict[str, Any]] = {}
    with Recording(path) as recording:
        for raw in recording.messages(names):
            msg = recording.deserialize(raw)
            frames.setdefault(_stamp(msg), {})[names[raw.topic]] = _image(msg)
    return frames


def evaluate(
    outputs: dict, truth: dict, original: dict[int, int], classes: dict
) -> dict[str, Any]:
    """Latency percentiles and mIoU of the published labels against the recorded labels."""
    from rgbd_seg_ros.training.pipeline_eval import LabelIdConfusion

    labels = outputs['/segmentation/labels']
    latency = [(t - _stamp(m)) / 1e6 for t, m in labels]
    # Published labels are label ids (the classes message gives them), scored as eval does.
    matrix = LabelIdConfusion([int(c['id']) for c in classes['classes']])
    matched = 0
    for _, msg in labels:
        gt = truth.get(original.get(_stamp(msg), -1), {}).get('labels')
        if gt is not None:
            matrix.update(_image(msg), gt)
            matched += 1
    metrics = matrix.compute()
    names = [c['name'] for c in classes['classes']]
    return {
        'frames_out': len(labels),
        'frames_scored': matched,
        'latency_ms': {
            'p50': float(np.percentile(latency, 50)) if latency else None,
            'p95': float(np.percentile(latency, 95)) if latency else None,
        },
        'miou': metrics.miou,
        'pixel_acc': metrics.pixel_acc,
        'iou': {
            n: (None if np.isnan(v) else round(v, 4))
            for n, v in zip(names, metrics.iou, strict=False)
        },
    }


def write_previews(
    out: Path, outputs: dict, truth: dict, original: dict[int, int], count: int
) -> list[Path]:
    """previews.png (a few frames) and cloud.png (the last cloud)."""
    from rgbd_seg_ros.core.cloud import unpack_cloud
    from rgbd_seg_ros.data.previews import cloud_snapshot, frame_strip, write_png

    overlay = {_stamp(m): m for _, m in outputs['/segmentation/overlay']}
    confidence = {_stamp(m): m for _, m in outputs['/segmentation/confidence']}
    stamps = [s for s in sorted(overlay) if s in confidence and original.get(s) in truth]
    written = []
    if stamps:
        picks = [
            stamps[i] for i in np.linspace(0, len(stamps) - 1, min(count, len(stamps)), dtype=int)
        ]
        rows = []
        for s in picks:
            gt = truth[original[s]]
            depth_m = gt['depth'].astype(np.float32) / 1000.0
            rows.append(frame_strip(gt['rgb'], depth_m, _image(overlay[s]), _image(confidence[s])))
        written.append(write_png(out / 'previews.png', np.concatenate(rows, axis=0)))
    clouds = outputs['/segmentation/points']
    if clouds:
        msg = clouds[-1][1]
        points = unpack_cloud(bytes(msg.data), msg.width * msg.height)
        xyz = np.stack([points['x'], points['y'], points['z']], axis=1)
        packed = points['rgb'].view(np.uint32)
        rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], 1)
        written.append(write_png(out / 'cloud.png', cloud_snapshot(xyz, rgb.astype(np.uint8))))
    return written


def check_model(args: argparse.Namespace) -> None:
    """Fail early, with the fix, when there is no model to run."""
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise RgbdSegError(f'checkpoint {args.checkpoint} does not exist')
    if not args.checkpoint and default_model() is None:
        raise RgbdSegError(
            f'no embedded default model ({DEFAULT_MODEL}); pass '
            '--checkpoint or train one as models/README.md describes'
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything main() does, returning the summary (tests call this)."""
    check_model(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    domain = apply_loopback_environment(out / 'ros_log')
    recording = make_recording(out, args)
    from rgbd_seg_ros.tools.replay import load_frames

    frames = load_frames(recording, INPUTS)
    node = start_node(out, args, loopback_environment(out / 'ros_log', domain))
    session = Session(out)
    try:
        print(
            f'[demo] node started (ROS_DOMAIN_ID={domain}, loopback only); replaying '
            f'{len(frames)} frames at {args.fps:g} Hz',
            flush=True,
        )
        replay(session, frames, node)
        original = dict(session.player.original_stamps)
    finally:
        session.close()
        rc = node.interrupt()
    outputs = read_outputs(out / 'outputs')
    classes = json.loads(outputs['/segmentation/classes'][-1][1].data)
    truth = ground_truth(recording)
    summary = {
        'frames_in': len(frames),
        **evaluate(outputs, truth, original, classes),
        'node_exit_code': rc,
        'model': classes.get('checkpoint'),
        'backend': classes.get('backend'),
        'outputs': str(out / 'outputs'),
        'recording': str(recording),
    }
    summary['previews'] = [
        str(p) for p in write_previews(out, outputs, truth, original, args.previews)
    ]
    diagnostics = outputs['/diagnostics']
    if diagnostics:
        values = {kv.key: kv.value for kv in diagnostics[-1][1].status[0].values}
        summary['node_diagnostics'] = {
            k: values[k]
            for k in values
            if k.startswith(
                ('model_time', 'overhead', 'dropped', 'skipped', 'paired', 'frames_out')
            )
        }
    summary['wall_s'] = round(time.perf_counter() - started, 1)
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    lat = summary['latency_ms']
    print('\n[demo] summary')
    print(
        f'  frames in / out      {summary["frames_in"]} / {summary["frames_out"]} '
        f'(the node segments the newest frame; older ones are dropped, never queued)'
    )
    if lat['p50'] is not None:
        print(
            f'  latency p50 / p95    {lat["p50"]:.0f} / {lat["p95"]:.0f} ms '
            '(input stamp -> labels received)'
        )
    print(
        f'  mIoU vs ground truth {summary["miou"]:.3f} over {summary["frames_scored"]} frames '
        f'(pixel accuracy {summary["pixel_acc"]:.3f})'
    )
    for name, iou in summary['iou'].items():
        print(f'    {name:12s} {"-" if iou is None else f"{iou:.3f}"}')
    print(f'  model                {summary["backend"]} from {summary["model"]}')
    print(f'  outputs              {summary["outputs"]}/ (mcap: Foxglove, ros2 bag)')
    for path in summary['previews']:
        print(f'  preview              {path}')
    print(f'  node exit code       {summary["node_exit_code"]}; wall time {summary["wall_s"]} s')


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = parse_args(argv)
    # This process records every output (12 MB a frame): the node's malloc settings spare it
    # faulting in fresh pages for each message it takes (tools/node_bench.py).
    return_large_blocks()
    try:
        summary = run(args)
    except RgbdSegError as err:
        print(f'[demo] error: {err}', file=sys.stderr)
        return 2
    print_summary(summary)
    return 0 if summary['node_exit_code'] == 0 and summary['frames_out'] > 0 else 1


if __name__ == '__main__':
    raise SystemExit(main())
