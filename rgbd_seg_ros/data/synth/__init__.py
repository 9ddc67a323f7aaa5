"""Synthetic RGB-D indoor scenes: procedural rooms, a structured-light depth sensor, exact
labels, robot-like camera trajectories, written as datasets or rosbag2 recordings."""

from rgbd_seg_ros.data.synth.classes import CLASS_NAMES, IGNORE_INDEX, SYNTH_CLASSES
from rgbd_seg_ros.data.synth.generator import (
    SynthFrame,
    SynthSequence,
    generate_sequence,
    make_scene,
)
from rgbd_seg_ros.data.synth.render import intrinsics
from rgbd_seg_ros.data.synth.sensor_noise import StructuredLightModel
from rgbd_seg_ros.data.synth.writers import (
    TOPICS,
    SynthSummary,
    synthesize,
    write_dataset,
    write_recording,
)

__all__ = [
    'CLASS_NAMES',
    'IGNORE_INDEX',
    'SYNTH_CLASSES',
    'TOPICS',
    'StructuredLightModel',
    'SynthFrame',
    'SynthSequence',
    'SynthSummary',
    'generate_sequence',
    'intrinsics',
    'make_scene',
    'synthesize',
    'write_dataset',
    'write_recording',
]
