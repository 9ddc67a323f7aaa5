"""Small recordings written by the tests themselves (64x48, a few dozen frames)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rgbd_seg_ros.data.rosbag_messages import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    RecordingWriter,
)

H, W = 48, 64
K = np.array([[52.5, 0.0, 31.5], [0.0, 53.0, 23.5], [0.0, 0.0, 1.0]])
T0 = 1_700_000_000_000_000_000
COLOUR, DEPTH, INFO, LABELS = (
    '/camera/color/image_raw',
    '/camera/aligned_depth_to_color/image_raw',
    '/camera/color/camera_info',
    '/sim/labels',
)
COLOUR_COMPRESSED = COLOUR + '/compressed'


@dataclass
class Recorded:
    """What a test recording holds, by colour stamp."""

    path: Path
    stamps: list[int]
    rgb: dict[int, np.ndarray] = field(default_factory=dict)
    depth_mm: dict[int, np.ndarray] = field(default_factory=dict)
    labels: dict[int, np.ndarray] = field(default_factory=dict)


def frame_arrays(i: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + i)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    depth = rng.integers(300, 9000, (h, w), dtype=np.uint16)
    depth[0, :3] = 0  # invalid pixels stay 0
    labels = rng.integers(0, 4, (h, w), dtype=np.uint8)
    labels[-1, :2] = 255
    return rgb, depth, labels


def write_recording(
    path: Path,
    storage: str = 'mcap',
    frames: int = 20,
    *,
    period_ns: int = 100_000_000,
    colour: str = 'rgb8',  # rgb8 | bgr8 | mono8 | jpeg | png | yuv422 (bad)
    depth: str = '16UC1',  # 16UC1 | 32FC1 | compressedDepth | 32FC1-compressedDepth
    labels: bool = True,
    depth_offset_ns: int = 3_000_000,
    shuffle: bool = False,
    info_missing: range | None = None,
    depth_size_mismatch: set[int] | None = None,
    bad_info: dict[int, str] | None = None,  # frame -> 'zero_size' | 'nan_focal'
    big_endian_depth: bool = False,
    row_padding: int = 0,
    compressed_only: set[int] | None = None,
    compressed_too: set[int] | None = None,
) -> Recorded:
    """A recording with colour, depth, camera_info and (optionally) a label topic.

    ``compressed_only`` frames have their colour only on ``COLOUR/compressed`` (a lossless
    png of the frame); ``compressed_too`` frames have it on both topics, the compressed copy
    a different (inverted) image, so a test can tell which one was used.
    """
    rec_data = Recorded(path=path, stamps=[])
    events = []  # (log time, topic, builder)
    for i in range(frames):
        stamp = T0 + i * period_ns
        rgb, depth_mm, lab = frame_arrays(i)
        rec_data.stamps.append(stamp)
        rec_data.rgb[stamp], rec_data.depth_mm[stamp], rec_data.labels[stamp] = rgb, depth_mm, lab
        dstamp = stamp + depth_offset_ns
        if i in (compressed_only or ()):
            events.append((stamp, COLOUR_COMPRESSED, i, stamp, 'compressed'))
        else:
            events.append((stamp, COLOUR, i, stamp, 'colour'))
        if i in (compressed_too or ()):
            events.append((stamp, COLOUR_COMPRESSED, i, stamp, 'inverted'))
        events.append((dstamp, DEPTH, i, dstamp, 'depth'))
        if not (info_missing and i in info_missing):
            events.append((stamp, INFO, i, stamp, 'info'))
        if labels:
            events.append((stamp + 1_000_000, LABELS, i, stamp, 'labels'))
    if shuffle:  # log (arrival) order differs from stamp order
        rng = np.random.default_rng(7)
        jitter = rng.integers(0, 3 * period_ns, len(events))
        events = [(t + int(j), *rest) for (t, *rest), j in zip(events, jitter, strict=True)]
    events.sort(key=lambda e: e[0])
    with RecordingWriter(path, storage) as rec:
        colour_type = COMPRESSED_IMAGE if colour in ('jpeg', 'png') else IMAGE
        depth_type = COMPRESSED_IMAGE if 'compressed' in depth.lower() else IMAGE
        rec.add_topic(COLOUR, colour_type)
        rec.add_topic(DEPTH, depth_type)
        rec.add_topic(INFO, CAMERA_INFO)
        if labels:
            rec.add_topic(LABELS, IMAGE)
        if compressed_only or compressed_too:
            rec.add_topic(COLOUR_COMPRESSED, COMPRESSED_IMAGE)
        for log_time, topic, i, stamp, kind in events:
            rgb, depth_mm, lab = frame_arrays(i)
            if kind in ('compressed', 'inverted'):
                image = rgb if kind == 'compressed' else 255 - rgb
                msg = rec.compressed_image(image, stamp, codec='png')
            elif kind == 'colour':
                if colour in ('jpeg', 'png'):
                    msg = rec.compressed_image(rgb, stamp, codec=colour)
                elif colour == 'mono8':
                    msg = rec.image(rgb[:, :, 0], 'mono8', stamp)
                elif colour == 'yuv422':
                    msg = rec.image(rgb, 'rgb8', stamp)
                    msg.encoding = 'yuv422'
                else:
                    msg = rec.image(rgb, colour, stamp, row_padding=row_padding)
            elif kind == 'depth':
                if depth_size_mismatch and i in depth_size_mismatch:
                    depth_mm = np.zeros((H // 2, W // 2), np.uint16)
                metres = depth_mm.astype(np.float32) / 1000.0
                metres[depth_mm == 0] = np.nan
                if depth == '16UC1':
                    msg = rec.image(
                        depth_mm,
                        '16UC1',
                        stamp,
                        bigendian=big_endian_depth,
                        row_padding=row_padding,
                    )
                elif depth == '32FC1':
                    msg = rec.image(metres, '32FC1', stamp, bigendian=big_endian_depth)
                elif depth == 'compressedDepth':
                    msg = rec.compressed_depth(depth_mm, stamp)
                else:
                    msg = rec.compressed_depth(metres, stamp)
            elif kind == 'info':
                k, w, h = K, W, H
                broken = (bad_info or {}).get(i)
                if broken == 'zero_size':
                    w = h = 0
                elif broken == 'nan_focal':
                    k = K.copy()
                    k[0, 0] = np.nan
                msg = rec.camera_info(k, w, h, stamp)
            else:
                msg = rec.image(lab, 'mono8', stamp)
            rec.write(topic, log_time, msg)
    if colour == 'mono8':
        rec_data.rgb = {s: np.repeat(v[:, :, :1], 3, axis=2) for s, v in rec_data.rgb.items()}
    return rec_data
