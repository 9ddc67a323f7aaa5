"""Write synthetic sequences as a dataset (the layout of ``rgbd_seg_ros.data.layout``) and/or
as rosbag2 recordings with the topics a RealSense-style driver publishes, plus a ground-truth
label topic as a simulator would.

Frames are split by scene: with three or more scenes whole scenes go to train / val / test
(about 80/10/10, the last scenes are test); with fewer, each scene is cut into contiguous
blocks (first ~80 % train, next ~10 % val, last ~10 % test, at least one frame each from three
frames on). Never random frames.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rgbd_seg_ros.data.synth.classes import IGNORE_INDEX, SYNTH_CLASSES
from rgbd_seg_ros.data.synth.generator import SynthFrame, SynthSequence
from rgbd_seg_ros.errors import ConfigError, DatasetError

COLOR_TOPIC = '/camera/color/image_raw'
DEPTH_TOPIC = '/camera/aligned_depth_to_color/image_raw'
INFO_TOPIC = '/camera/color/camera_info'
DEPTH_INFO_TOPIC = '/camera/aligned_depth_to_color/camera_info'
LABEL_TOPIC = '/camera/semantic/labels'
FRAME_ID = 'camera_color_optical_frame'
# receive (log) time after the capture stamp, as a driver on a busy machine would show
COLOR_LATENCY_NS = 4_000_000
DEPTH_LATENCY_NS = 6_000_000

TOPICS = {
    COLOR_TOPIC: ('sensor_msgs/msg/Image', 'rgb8'),
    DEPTH_TOPIC: ('sensor_msgs/msg/Image', '16UC1'),
    INFO_TOPIC: ('sensor_msgs/msg/CameraInfo', None),
    DEPTH_INFO_TOPIC: ('sensor_msgs/msg/CameraInfo', None),
    LABEL_TOPIC: ('sensor_msgs/msg/Image', 'mono8'),
}
TOPICS_DESCRIPTION = (
    f'rgb={COLOR_TOPIC};depth={DEPTH_TOPIC};info={INFO_TOPIC};labels={LABEL_TOPIC}'
)


@dataclass
class SynthSummary:
    """What a write produced."""

    frames_rendered: int = 0
    frames_skipped: int = 0
    seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)
    recordings: list[Path] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_rendered / self.seconds if self.seconds > 0 else 0.0


def frames_per_scene(num_frames: int, scenes: int) -> list[int]:
    """Spread ``num_frames`` over ``scenes`` as evenly as possible (earlier scenes get more)."""
    if scenes < 1:
        raise ConfigError(f'need at least one scene, got {scenes}')
    if num_frames < 0:
        raise ConfigError(f'number of frames must be >= 0, got {num_frames}')
    base, extra = divmod(num_frames, scenes)
    return [base + (k < extra) for k in range(scenes)]


def split_of(scene: int, index: int, frames_in_scene: int, scenes: int) -> str:
    """train / val / test for frame ``index`` of ``scene`` (by scene or contiguous block)."""
    if scenes >= 3:
        n_test = max(1, round(0.1 * scenes))
        n_val = max(1, round(0.1 * scenes))
        if scene >= scenes - n_test:
            return 'test'
        if scene >= scenes - n_test - n_val:
            return 'val'
        return 'train'
    n = frames_in_scene
    n_test = max(1, round(0.1 * n)) if n >= 3 else 0
    n_val = max(1, round(0.1 * n)) if n >= 3 else 0
    if index >= n - n_test:
        return 'test'
    return 'val' if index >= n - n_test - n_val else 'train'


def frame_id(seed: int, scene: int, index: int) -> str:
    return f'synth-{seed}-s{scene:03d}-{index:06d}'


def recording_name(seed: int, scene: int) -> str:
    return f'synth_{seed}_scene{scene:03d}'


class _Recording:
    """A rosbag2 recording of one sequence (topics of TOPICS)."""

    def __init__(self, path: Path, storage: str) -> None:
        from rgbd_seg_ros.data.rosbag_messages import RecordingWriter

        if path.exists():
            raise DatasetError(f'{path} already exists; remove it or choose another folder')
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rec = RecordingWriter(path, storage=storage)
        for topic, (msgtype, _) in TOPICS.items():
            self.rec.add_topic(topic, msgtype)

    def write(self, f: SynthFrame) -> None:
        rec, stamp = self.rec, f.stamp_ns
        h, w = f.labels.shape
        rec.write(COLOR_TOPIC, stamp + COLOR_LATENCY_NS, rec.image(f.rgb, 'rgb8', stamp, FRAME_ID))
        rec.write(
            INFO_TOPIC, stamp + COLOR_LATENCY_NS, rec.camera_info(f.K, w, h, stamp, FRAME_ID)
        )
        rec.write(
            DEPTH_TOPIC, stamp + DEPTH_LATENCY_NS, rec.image(f.depth_mm, '16UC1', stamp, FRAME_ID)
        )
        rec.write(
            DEPTH_INFO_TOPIC, stamp + DEPTH_LATENCY_NS, rec.camera_info(f.K, w, h, stamp, FRAME_ID)
        )
        rec.write(
            LABEL_TOPIC, stamp + DEPTH_LATENCY_NS, rec.image(f.labels, 'mono8', stamp, FRAME_ID)
        )

    def close(self) -> None:
        self.rec.close()


def contact_sheet(frames: list[SynthFrame], max_depth_m: float = 7.0):
    """Rows of colour | depth (jet, holes black) | labels, one row per frame (uint8 RGB)."""
    from rgbd_seg_ros.core.depth import jet_uint8
    from rgbd_seg_ros.core.palette import colourise

    palette = np.array([c.color for c in SYNTH_CLASSES], np.uint8)
    rows = []
    for f in frames:
        depth = jet_uint8(f.depth_mm.astype(np.float32) / 1000.0, 0.0, max_depth_m)
        depth[f.depth_mm == 0] = 0
        rows.append(np.concatenate([f.rgb, depth, colourise(f.labels, palette)], 1))
    return np.concatenate(rows, 0)


def provenance(
    seed: int, num_frames: int, scenes: int, width: int, height: int, fps: float
) -> dict:
    from rgbd_seg_ros import __version__

    return {
        'generator': 'rgbd_seg_ros.data.synth',
        'version': __version__,
        'seed': int(seed),
        'frames': int(num_frames),
        'scenes': int(scenes),
        'size': f'{width}x{height}',
        'fps': float(fps),
        'splits': 'by scene (>=3 scenes) or contiguous 80/10/10 blocks per scene',
    }


def synthesize(
    seed: int,
    num_frames: int,
    *,
    scenes: int = 1,
    width: int = 640,
    height: int = 480,
    fps: float = 15.0,
    dataset_root: str | os.PathLike | None = None,
    recordings_dir: str | os.PathLike | None = None,
    storage: str = 'mcap',
    resume: bool = True,
    nthreads: int = 0,
    progress: Callable[[int, int, SynthSummary], None] | None = None,
    preview: str | os.PathLike | None = None,
    preview_frames: int = 6,
) -> SynthSummary:
    """Render ``num_frames`` over ``scenes`` rooms once, writing a dataset, recordings or both.

    The dataset goes to ``dataset_root`` (resumable: frames already there are not rendered
    again unless recordings are written too); each scene becomes one recording
    ``recordings_dir/synth_<seed>_scene<k>`` (rosbag2, ``storage`` mcap or sqlite3).
    ``preview``: a PNG contact sheet (colour | depth | labels) of up to ``preview_frames``
    evenly spaced rendered frames.
    """
    import time

    if dataset_root is None and recordings_dir is None:
        raise ConfigError('nothing to write: give a dataset root and/or a recordings folder')
    counts = frames_per_scene(num_frames, scenes)
    summary = SynthSummary()
    writer = None
    if dataset_root is not None:
        from rgbd_seg_ros.data.layout import DatasetMeta, DatasetWriter, FrameRecord

        meta = DatasetMeta(
            classes=list(SYNTH_CLASSES),
            ignore_index=IGNORE_INDEX,
            provenance=provenance(seed, num_frames, scenes, width, height, fps),
        )
        writer = DatasetWriter(dataset_root, meta, resume=resume)
    start = time.perf_counter()
    done = 0
    every = max(1, num_frames // max(preview_frames, 1))
    shown: list[SynthFrame] = []
    try:
        for scene, count in enumerate(counts):
            if count == 0:
                continue
            seq = None  # built on first use: a finished scene of a resumed run costs nothing
            rec = None
            if recordings_dir is not None:
                path = Path(recordings_dir) / recording_name(seed, scene)
                rec = _Recording(path, storage)
                summary.recordings.append(path)
            try:
                for i in range(count):
                    fid = frame_id(seed, scene, i)
                    split = split_of(scene, i, count, scenes)
                    summary.splits[split] = summary.splits.get(split, 0) + 1
                    need_dataset = writer is not None and not writer.has_frame(fid)
                    if not need_dataset and rec is None:
                        summary.frames_skipped += 1
                        done += 1
                        continue
                    if seq is None:
                        seq = SynthSequence(
                            seed, count, width, height, fps, scene, nthreads=nthreads
                        )
                    f = seq.frame(i)
                    summary.frames_rendered += 1
                    if preview is not None and done % every == 0 and len(shown) < preview_frames:
                        shown.append(f)
                    if need_dataset:
                        assert writer is not None  # need_dataset says so
                        K = f.K
                        record = FrameRecord(
                            frame_id=fid,
                            stamp_ns=f.stamp_ns,
                            split=split,
                            source=f'synth:seed={seed}:scene={scene}',
                            topics=TOPICS_DESCRIPTION,
                            width=width,
                            height=height,
                            fx=K[0, 0],
                            fy=K[1, 1],
                            cx=K[0, 2],
                            cy=K[1, 2],
                        )
                        writer.write_frame(record, f.rgb, f.depth_mm, f.labels)
                    if rec is not None:
                        rec.write(f)
                    done += 1
                    summary.seconds = time.perf_counter() - start
                    if progress is not None:
                        progress(done, num_frames, summary)
            finally:
                if rec is not None:
                    rec.close()
    finally:
        if writer is not None:
            writer.close()
    summary.seconds = time.perf_counter() - start
    if preview is not None and shown:
        import cv2

        sheet = contact_sheet(shown)
        if not cv2.imwrite(str(preview), np.ascontiguousarray(sheet[..., ::-1])):
            raise DatasetError(f'cannot write the preview {preview}')
    return summary


def write_dataset(
    root: str | os.PathLike,
    seed: int,
    num_frames: int = 300,
    *,
    scenes: int = 1,
    width: int = 640,
    height: int = 480,
    fps: float = 15.0,
    resume: bool = True,
    nthreads: int = 0,
    progress=None,
) -> SynthSummary:
    """Render and write a dataset in the layout (``dataset.yaml``, ``index.csv``, PNGs)."""
    return synthesize(
        seed,
        num_frames,
        scenes=scenes,
        width=width,
        height=height,
        fps=fps,
        dataset_root=root,
        resume=resume,
        nthreads=nthreads,
        progress=progress,
    )


def write_recording(
    path: str | os.PathLike,
    seed: int,
    num_frames: int = 300,
    *,
    scene: int = 0,
    width: int = 640,
    height: int = 480,
    fps: float = 15.0,
    storage: str = 'mcap',
    nthreads: int = 0,
) -> Path:
    """Render one scene into a rosbag2 recording at ``path`` (a folder that must not exist).

    Topics: colour (rgb8), aligned depth (16UC1 mm), their camera_info, and ground-truth labels
    (mono8); header stamps at ``fps``, receive times a few milliseconds later.
    """
    if storage not in ('mcap', 'sqlite3'):
        raise ConfigError(f'storage must be mcap or sqlite3, got {storage!r}')
    path = Path(path)
    seq = SynthSequence(seed, num_frames, width, height, fps, scene, nthreads=nthreads)
    rec = _Recording(path, storage)
    try:
        for f in seq:
            rec.write(f)
    finally:
        rec.close()
    return path
