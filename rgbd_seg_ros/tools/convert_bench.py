"""``rgbd-seg bag2dataset --bench``: conversion throughput on this machine.

Writes ``recordings`` synthetic mcap recordings (640x480 rgb8 colour, 16UC1 depth, mono8
labels and camera_info at 30 Hz; smooth shapes plus sensor-like noise, so PNG sizes are
realistic) into a temporary folder, converts them with ``jobs`` processes and prints frames per
second of the conversion alone (writing the recordings is not timed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


_NOISE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def synthetic_frame(
    i: int, rng: np.random.Generator, width: int = WIDTH, height: int = HEIGHT
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame of a moving-boxes scene: RGB uint8, depth uint16 mm, labels uint8 (0..3).

    Sensor-like noise (colour sigma 3, depth sigma 4 mm) is drawn once per size from ``rng``
    and shifted per frame, which keeps writing long recordings cheap.
    """
    if (width, height) not in _NOISE:
        _NOISE[(width, height)] = (
            rng.normal(0, 3, (height, width * 2, 3)).astype(np.int16),
            rng.normal(0, 4, (height, width * 2)).astype(np.float32),
        )
    colour_noise, depth_noise = _NOISE[(width, height)]
    shift = (i * 37) % width
    yy, xx = np.mgrid[0:height, 0:width]
    labels = np.zeros((height, width), np.uint8)
    labels[yy > height * 0.6] = 1  # floor
    depth = (3000 - 1500 * (yy / height)).astype(np.float32)
    for k, (w, h) in enumerate(((120, 160), (200, 90))):
        x0 = int((i * (3 + 2 * k) + 150 * k) % (width - w))
        y0 = height // 3 + 40 * k
        labels[y0 : y0 + h, x0 : x0 + w] = 2 + k
        depth[y0 : y0 + h, x0 : x0 + w] = 1200 + 400 * k
    palette = np.array([[180, 180, 170], [110, 90, 60], [40, 120, 200], [200, 60, 40]], np.uint8)
    rgb = palette[labels].astype(np.int16)
    rgb += (xx[..., None] * 40 // width).astype(np.int16)
    rgb += colour_noise[:, shift : shift + width]
    depth += depth_noise[:, shift : shift + width]
    return (
        np.clip(rgb, 0, 255).astype(np.uint8),
        np.clip(depth, 0, 65535).astype(np.uint16),
        labels,
    )


def write_bench_recording(path: Path, frames: int, seed: int = 0, fps: float = 30.0) -> None:
    """An mcap recording with colour, depth, labels and camera_info per frame."""
    from rgbd_seg_ros.data.rosbag_messages import CAMERA_INFO, IMAGE, RecordingWriter

    rng = np.random.default_rng(seed)
    with RecordingWriter(path, 'mcap') as rec:
        for topic, msgtype in (
            ('/camera/color/image_raw', IMAGE),
            ('/camera/aligned_depth_to_color/image_raw', IMAGE),
            ('/camera/color/camera_info', CAMERA_INFO),
            ('/segmentation/labels', IMAGE),
        ):
            rec.add_topic(topic, msgtype)
        t0 = 1_700_000_000_000_000_000 + seed * 3_600_000_000_000
        for i in range(frames):
            stamp = t0 + int(i * 1e9 / fps)
            rgb, depth, labels = synthetic_frame(i, rng)
            rec.write('/camera/color/image_raw', stamp, rec.image(rgb, 'rgb8', stamp))
            rec.write(
                '/camera/aligned_depth_to_color/image_raw',
                stamp + 2_000_000,
                rec.image(depth, '16UC1', stamp + 2_000_000),
            )
            rec.write('/camera/color/camera_info', stamp, rec.camera_info(K, WIDTH, HEIGHT, stamp))
            rec.write('/segmentation/labels', stamp, rec.image(labels, 'mono8', stamp))


def _cpu_seconds() -> float:
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def run_bench(frames: int = 300, recordings: int = 2, jobs: int = 2, fsync: bool = True) -> int:
    from rgbd_seg_ros.data.convert import ConvertOptions, convert

    tmp = Path(tempfile.mkdtemp(prefix='rgbd_seg_bench_'))
    try:
        inputs = tmp / 'recordings'
        inputs.mkdir()
        t = time.perf_counter()
        for r in range(recordings):
            write_bench_recording(inputs / f'bench_{r}', frames, seed=r)
        written_s = time.perf_counter() - t
        options = ConvertOptions(
            label_topic='/segmentation/labels',
            jobs=jobs,
            chunk_frames=max(frames // 2, 1),
            guard_s=0.0,
            fsync=fsync,
            progress=False,
        )
        cpu0 = _cpu_seconds()
        load = os.getloadavg()[0]
        t = time.perf_counter()
        report = convert([inputs], tmp / 'dataset', options, log=lambda _: None)
        seconds = time.perf_counter() - t
        cpu = _cpu_seconds() - cpu0
        total = report.totals.written
        print(
            f'bag2dataset bench: {recordings} mcap recording(s) x {frames} frames of '
            f'{WIDTH}x{HEIGHT} colour + depth + labels (recordings written in '
            f'{written_s:.1f} s, not timed)\n'
            f'  converted {total} frames in {seconds:.2f} s with {jobs} process(es): '
            f'{total / seconds:.1f} frames/s\n'
            f'  CPU {1000 * cpu / max(total, 1):.1f} ms per frame (all processes, start-up '
            f'included); machine: {os.cpu_count()} CPUs, load average {load:.1f} before the '
            f'run; fsync {"on" if fsync else "off"}'
        )
        return 0 if total == frames * recordings else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
