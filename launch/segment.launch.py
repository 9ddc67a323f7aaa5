"""Start segmentation_node with the package's YAML and the camera's topics remapped.

    ros2 launch rgbd_seg_ros segment.launch.py camera:=realsense checkpoint:=/path/m.safetensors
    ros2 launch rgbd_seg_ros segment.launch.py camera:=zed namespace:=cam1 rviz:=true

A camera preset (config/cameras/<name>.yaml) supplies the three input topics of a common
driver and the frame of its colour images; explicit *_topic arguments override the topics.
rviz:=true also starts rviz2 with a config rendered for this start: the preset's frame (or
rviz_frame) as fixed frame and the node's topics in the launch's namespace.
"""

import os
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from rgbd_seg_ros.ros.camera_presets import CameraPreset, load_preset
from rgbd_seg_ros.ros.rviz_config import write_temporary

PACKAGE = 'rgbd_seg_ros'
TOPIC_ARGS = {
    'rgb_topic': 'rgb/image_rect_color',
    'depth_topic': 'depth_registered/image_rect',
    'info_topic': 'rgb/camera_info',
}


def _preset(share: str, camera: str) -> CameraPreset | None:
    return load_preset(Path(share, 'config', 'cameras'), camera) if camera else None


def _rviz(share: str, namespace: str, frame: str) -> Node:
    if not frame:
        raise RuntimeError('rviz:=true needs camera:=<preset> or rviz_frame:=<colour frame_id>')
    config = write_temporary(Path(share, 'rviz', 'segment.rviz'), namespace, frame)
    return Node(
        package='rviz2',
        executable='rviz2',
        name='rviz2',
        output='screen',
        arguments=['-d', str(config)],
    )


def _nodes(context, *_):
    share = get_package_share_directory(PACKAGE)
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    preset = _preset(share, arg('camera'))
    remappings = []
    for name, node_topic in TOPIC_ARGS.items():
        topic = arg(name) or (preset.topics[name.removesuffix('_topic')] if preset else '')
        if topic:
            remappings.append((node_topic, topic))
    overrides = {'use_sim_time': arg('use_sim_time').lower() == 'true'}
    for name in ('checkpoint', 'device', 'image_transport'):
        if arg(name):
            overrides[name] = arg(name)
    nodes = [
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
    if arg('rviz').lower() == 'true':
        frame = arg('rviz_frame') or (preset.frame if preset else '')
        nodes.append(_rviz(share, arg('namespace'), frame))
    return nodes


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
            DeclareLaunchArgument(
                'rviz', default_value='false', description='also start rviz2 (true/false)'
            ),
            DeclareLaunchArgument(
                'rviz_frame',
                default_value='',
                description="RViz fixed frame (empty: the camera preset's colour frame)",
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
