"""``generate_sequence``: rooms -> camera trajectories -> rendered, sensor-noised frames.

Randomness is split into independent, seeded streams (numpy ``SeedSequence`` entropy
``[seed, scene, stream, ...]``): the room layout, the trajectory and one stream per frame for
the sensor noise. The same seed therefore gives bit-identical output, and a frame's noise does
not depend on which other frames were generated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rgbd_seg_ros.data.synth.render import Renderer, intrinsics
from rgbd_seg_ros.data.synth.scene import Scene, build_scene
from rgbd_seg_ros.data.synth.sensor_noise import (
    StructuredLightModel,
    depth_to_mm,
    simulate_colour,
    simulate_depth,
)
from rgbd_seg_ros.data.synth.trajectory import make_trajectory
from rgbd_seg_ros.errors import ConfigError

#: Stamp of the first frame of scene 0 (2023-11-14T22:13:20Z); scene k starts 1000 s * k later.
START_NS = 1_700_000_000 * 10**9
SCENE_SPACING_NS = 1000 * 10**9

_LAYOUT, _TRAJECTORY, _FRAME = 0, 1, 2


@dataclass(frozen=True)
class SynthFrame:
    """One rendered frame. ``rgb``, ``depth_mm``, ``labels``, ``K`` and ``stamp_ns`` are the
    contract; the rest is ground truth for tests and tools."""

    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    depth_mm: np.ndarray  # (H, W) uint16 millimetres, 0 = no measurement
    labels: np.ndarray  # (H, W) uint8 class ids of SYNTH_CLASSES, 255 = nothing hit
    K: np.ndarray  # (3, 3) float64
    stamp_ns: int
    pose: np.ndarray  # (4, 4) world-from-camera (optical frame), world z up, floor at z=0
    depth_true_m: np.ndarray  # (H, W) float32 exact z depth, 0 = nothing hit
    scene: int
    index: int


def make_scene(seed: int, scene: int = 0) -> Scene:
    """The room of ``scene`` for ``seed`` (deterministic)."""
    return build_scene(np.random.default_rng([int(seed), int(scene), _LAYOUT]))


def _check_size(width: int, height: int, num_frames: int, fps: float) -> None:
    if width < 8 or height < 8 or width > 4096 or height > 4096:
        msg = f'image size must be between 8x8 and 4096x4096, got {width}x{height}'
        raise ConfigError(msg)
    if num_frames < 0:
        raise ConfigError(f'number of frames must be >= 0, got {num_frames}')
    if not fps > 0:
        raise ConfigError(f'fps must be > 0, got {fps}')


class SynthSequence:
    """One recording's worth of frames, rendered on demand: ``seq.frame(i)`` for any ``i``.

    Building it creates the room and the whole trajectory (cheap); each frame is rendered only
    when asked for, so writers can skip frames that already exist.
    """

    def __init__(
        self,
        seed: int,
        num_frames: int,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        scene: int = 0,
        *,
        nthreads: int = 0,
        sensor: StructuredLightModel | None = None,
    ) -> None:
        _check_size(width, height, num_frames, fps)
        self.seed, self.scene = int(seed), int(scene)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.sensor = sensor
        self.room = make_scene(self.seed, self.scene)
        self.poses = make_trajectory(
            self.room,
            np.random.default_rng([self.seed, self.scene, _TRAJECTORY]),
            int(num_frames),
            self.fps,
        )
        self.K = intrinsics(self.width, self.height)
        self._renderer = Renderer(self.room, nthreads=nthreads)

    def __len__(self) -> int:
        return len(self.poses)

    def stamp_ns(self, index: int) -> int:
        """Capture time of frame ``index``."""
        return START_NS + self.scene * SCENE_SPACING_NS + round(index * 1e9 / self.fps)

    def frame(self, index: int) -> SynthFrame:
        """Render frame ``index`` (bit-identical every time)."""
        pose = self.poses[index]
        rng = np.random.default_rng([self.seed, self.scene, _FRAME, int(index)])
        out = self._renderer.render(pose, self.K, self.width, self.height)
        depth = simulate_depth(out, pose, self.K, self._renderer, rng, self.sensor)
        rgb = simulate_colour(out.radiance, rng)
        return SynthFrame(
            rgb=rgb,
            depth_mm=depth_to_mm(depth),
            labels=out.labels,
            K=self.K.copy(),
            stamp_ns=self.stamp_ns(index),
            pose=pose.copy(),
            depth_true_m=out.depth_m,
            scene=self.scene,
            index=int(index),
        )

    def __iter__(self) -> Iterator[SynthFrame]:
        for i in range(len(self)):
            yield self.frame(i)


def generate_sequence(
    seed: int,
    num_frames: int,
    width: int = 640,
    height: int = 480,
    fps: float = 15.0,
    scene: int = 0,
    *,
    nthreads: int = 0,
    sensor: StructuredLightModel | None = None,
) -> Iterator[SynthFrame]:
    """Frames of one recording: a robot walking through room ``scene`` of ``seed``.

    Args:
        seed: master seed; the same arguments give bit-identical frames.
        num_frames: frames to render.
        width, height: image size (any, e.g. 640x480, 320x240, 160x120, 80x60).
        fps: frame rate; consecutive frames are 1/fps apart in time and motion.
        scene: which room of this seed.
        nthreads: ray-casting threads (0 = all cores).
        sensor: depth-sensor parameters (default: a Kinect-like structured-light device).
    """
    return iter(
        SynthSequence(
            seed, num_frames, width, height, fps, scene, nthreads=nthreads, sensor=sensor
        )
    )
