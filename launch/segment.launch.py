"""Start segmentation_node with the package's YAML and the camera's topics remapped.

    ros2 launch rgbd_seg_ros segment.launch.py camera:=realsense checkpoint:=/path/m.safetensors

A camera preset (config/cameras/<name>.yaml) supplies the three input topics of a common
driver; explicit *_topic arguments override it.
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = 'rgbd_seg_ros'
TOPIC_ARGS = {
    'rgb_topic': 'rgb/image_rect_color',
    'depth_topic': 'depth_registered/image_rect',
    'info_topic': 'rgb/camera_info',
}


def _camera_topics(share: str, camera: str) -> dict:
    if not camera:
        return {}
    path = os.path.join(share, 'config', 'cameras', f'{camera}.yaml')
    if not os.path.isfile(path):
        presets = sorted(f[:-5] for f in os.listdir(os.path.dirname(path)) if f.endswith('.yaml'))
        raise RuntimeError(f'unknown camera preset {camera!r}; available: {presets}')
    with open(path, encoding='utf-8') as stream:
        return yaml.safe_load(stream).get('topics', {})


def _node(context, *_):
    share = get_package_share_directory(PACKAGE)
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    preset = _camera_topics(share, arg('camera'))
    remappings = []
    for name, node_topic in TOPIC_ARGS.items():
        topic = arg(name) or preset.get(name.removesuffix('_topic'), '')
        if topic:
            remappings.append((node_topic, topic))
    overrides = {'use_sim_time': arg('use_sim_time').lower() == 'true'}
    for name in ('checkpoint', 'device', 'image_transport'):
        if arg(name):
            overrides[name] = arg(name)
    return [
        Node(
            package=PACKAGE,
            executable='segmentation_node',
            name='segmentation_node',
            namespace=arg('namespace'),
            output='screen',
            emulate_tty=True,
            parameters=[arg('params_file'), overrides],
            remappings=remappings,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'params_file',
                default_value=os.path.join(share, 'config', 'segment.yaml'),
                description='YAML with the node parameters',
            ),
            DeclareLaunchArgument(
                'checkpoint',
                default_value='',
                description='checkpoint (empty: params file or default)',
            ),
            DeclareLaunchArgument(
                'device',
                default_value='',
                description='auto, cpu, cuda or cuda:N (empty: params file)',
            ),
            DeclareLaunchArgument(
                'image_transport',
                default_value='',
                description='raw or compressed (<rgb_topic>/compressed); empty: params file',
            ),
            DeclareLaunchArgument('namespace', default_value='', description='node namespace'),
            DeclareLaunchArgument(
                'camera',
                default_value='',
                description='camera preset: realsense, azure_kinect, zed, oakd',
            ),
            DeclareLaunchArgument('rgb_topic', default_value='', description='colour image topic'),
            DeclareLaunchArgument(
                'depth_topic',
                default_value='',
                description='depth image registered to the colour camera',
            ),
            DeclareLaunchArgument(
                'info_topic', default_value='', description='colour camera_info'
            ),
            DeclareLaunchArgument(
                'use_sim_time', default_value='false', description='use /clock (bag replay)'
            ),
            OpaqueFunction(function=_node),
        ]
    )
