"""Camera presets name what each driver publishes today.

VERIFIED holds the names read in each driver's source at the release its preset records
(``checked``): the node's publishers and the driver launch file's default namespace and node
name. A preset edited without reading the driver again fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.ros.camera_presets import STREAMS, load_preset, preset_names

FOLDER = Path(__file__).resolve().parents[2] / 'config' / 'cameras'

VERIFIED = {
    'realsense': (
        'realsense-ros 4.56.1',
        'camera_color_optical_frame',
        {
            'rgb': '/camera/camera/color/image_raw',
            'depth': '/camera/camera/aligned_depth_to_color/image_raw',
            'info': '/camera/camera/color/camera_info',
        },
    ),
    'zed': (  # names of zed-ros2-wrapper 5.1.0 and later
        'zed-ros2-wrapper 5.4.1',
        'zed_left_camera_frame_optical',
        {
            'rgb': '/zed/zed_node/rgb/color/rect/image',
            'depth': '/zed/zed_node/depth/depth_registered',
            'info': '/zed/zed_node/rgb/color/rect/camera_info',
        },
    ),
    'oakd': (
        'depthai-ros v2.10.3-jazzy',
        'oak_rgb_camera_optical_frame',
        {
            'rgb': '/oak/rgb/image_rect',
            'depth': '/oak/stereo/image_raw',
            'info': '/oak/rgb/camera_info',
        },
    ),
    'azure_kinect': (
        'Azure_Kinect_ROS_Driver 0.9.0',
        'rgb_camera_link',
        {
            'rgb': '/rgb/image_raw',
            'depth': '/depth_to_rgb/image_raw',
            'info': '/rgb/camera_info',
        },
    ),
}


def test_every_preset_was_verified():
    assert preset_names(FOLDER) == sorted(VERIFIED)


@pytest.mark.parametrize('name', sorted(VERIFIED))
def test_preset_names_the_verified_topics_and_frame(name):
    release, frame, topics = VERIFIED[name]
    preset = load_preset(FOLDER, name)
    assert preset.checked.startswith(release)
    assert len(preset.checked.split('commit ')[1].rstrip(')')) == 40  # a full commit id
    assert preset.frame == frame
    assert preset.topics == topics


def test_zed_preset_uses_the_names_of_wrapper_5_1():
    topics = load_preset(FOLDER, 'zed').topics
    assert not any(
        'image_rect_color' in t or t.endswith('/rgb/camera_info') for t in topics.values()
    )


def write(folder: Path, name: str, text: str) -> None:
    (folder / f'{name}.yaml').write_text(text)


GOOD = (
    'driver: d\nchecked: d 1.0 (commit 0)\nframe: f\n'
    'topics: {rgb: /a/image, depth: /a/depth, info: /a/camera_info}\n'
)


@pytest.mark.parametrize(
    'text,message',
    [
        (GOOD.replace('topics: {rgb: /a/image, ', 'topics: {'), 'exactly'),
        (GOOD.replace('/a/image', 'a/image'), 'topics.rgb must be an absolute'),
        (GOOD.replace('frame: f\n', ''), 'frame must be'),
        ('- not a mapping\n', 'not a mapping'),
    ],
)
def test_bad_preset_is_refused_with_the_reason(tmp_path, text, message):
    write(tmp_path, 'bad', text)
    with pytest.raises(ConfigError, match=message):
        load_preset(tmp_path, 'bad')


def test_unknown_preset_lists_the_choices(tmp_path):
    write(tmp_path, 'good', GOOD)
    assert load_preset(tmp_path, 'good').topics.keys() == set(STREAMS)
    with pytest.raises(ConfigError, match=r"unknown camera preset 'zed2'; available: \['good'\]"):
        load_preset(tmp_path, 'zed2')
