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


def generate_sequence(seed: int, num_frames: int, width: int = 640, height: int = 480,
                      fps: float = 15.0, scene: int = 0, *, nthreads: int = 0,
                      sensor: StructuredLightModel | None = None) -> Iterator[SynthFrame]:
    """Frames of one recording: a robot walking through room ``scene`` of ``seed``.

    Args:
        seed: master seed; the same (seed, scene, num_frames, size, fps) gives identical frames.
        num_frames: frames to render.
        width, height: image size (any, e.g. 640x480, 320x240, 160x120, 80x60).
        fps: frame rate; consecutive frames are 1/fps apart in time and motion.
        scene: which room of this seed.
        nthreads: ray-casting threads (0 = all cores).
        sensor: depth-sensor parameters (default: a Kinect-like structured-light device).
    """
    _check_size(width, height, num_frames, fps)
    room = make_scene(seed, scene)
    poses = make_trajectory(room, np.random.default_rng([int(seed), int(scene), _TRAJECTORY]),
                            num_frames, fps)
    renderer = Renderer(room, nthreads=nthreads)
    K = intrinsics(width, height)
    for i, pose in enumerate(poses):
        rng = np.random.default_rng([int(seed), int(scene), _FRAME, i])
        out = renderer.render(pose, K, width, height)
        depth = simulate_depth(out, pose, K, renderer, rng, sensor)
        rgb = simulate_colour(out.radiance, rng)
        yield SynthFrame(
            rgb=rgb,
            depth_mm=depth_to_mm(depth),
            labels=out.labels,
            K=K.copy(),
            stamp_ns=START_NS + int(scene) * SCENE_SPACING_NS + round(i * 1e9 / fps),
            pose=pose,
            depth_true_m=out.depth_m,
            scene=int(scene),
            index=i,
        )
