"""RViz follows the launch: its fixed frame is the camera's and its topics are the node's.

The rendering is tested on the shipped template; the launch file itself is loaded with the real
``launch``/``launch_ros`` packages where they are installed (a ROS 2 machine): its description
is visited with a LaunchContext as ``ros2 launch`` would, up to the point where processes would
start, so rviz2 need not be installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.ros import rviz_config
from rgbd_seg_ros.ros.segmentation_node import OUTPUT_TOPICS

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / 'rviz' / 'segment.rviz'
SHOWN = ('overlay', 'points', 'confidence')


def fixed_frame_and_topics(text: str) -> tuple[str, set[str]]:
    manager = yaml.safe_load(text)['Visualization Manager']
    topics = {d['Topic']['Value'] for d in manager['Displays'] if 'Topic' in d}
    return manager['Global Options']['Fixed Frame'], topics


@pytest.mark.parametrize(
    'namespace,prefix', [('', '/'), ('cam1', '/cam1/'), ('/robot/cam2/', '/robot/cam2/')]
)
def test_render_puts_frame_and_namespaced_topics(namespace, prefix):
    text = rviz_config.render(TEMPLATE.read_text(), namespace, 'zed_left_camera_frame_optical')
    frame, topics = fixed_frame_and_topics(text)
    assert frame == 'zed_left_camera_frame_optical'
    assert topics == {prefix + OUTPUT_TOPICS[n] for n in SHOWN}
    template = yaml.safe_load(TEMPLATE.read_text())
    rendered = yaml.safe_load(text)
    assert len(rendered['Visualization Manager']['Displays']) == len(
        template['Visualization Manager']['Displays']
    )
    assert rendered['Visualization Manager']['Views'] == template['Visualization Manager']['Views']


def test_render_refuses_no_frame_and_non_rviz_text():
    with pytest.raises(ConfigError, match='fixed frame'):
        rviz_config.render(TEMPLATE.read_text(), 'cam1', '')
    with pytest.raises(ConfigError, match='not an RViz config'):
        rviz_config.render('Panels: []\n', 'cam1', 'frame')


def test_temporary_config_is_written_and_removed():
    path = rviz_config.write_temporary(TEMPLATE, 'cam1', 'oak_rgb_camera_optical_frame')
    try:
        frame, topics = fixed_frame_and_topics(path.read_text())
        assert frame == 'oak_rgb_camera_optical_frame'
        assert '/cam1/segmentation/overlay' in topics
    finally:
        rviz_config._remove(path)
    assert not path.exists()
    rviz_config._remove(path)  # a second removal (atexit after a manual one) is quiet


launch_missing = pytest.mark.skipif(
    importlib.util.find_spec('launch_ros') is None,
    reason='launch/launch_ros not installed (no ROS 2 distribution here)',
)


def launch_nodes(**arguments: str) -> tuple[list, object]:
    """The actions the launch file's description yields for ``arguments``, and the context."""
    from launch.actions import OpaqueFunction

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location(
        'segment_launch', ROOT / 'launch/segment.launch.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = LaunchContext()
    context.launch_configurations.update(arguments)
    actions = []
    for entity in module.generate_launch_description().entities:
        produced = entity.execute(context)  # declares defaults; the opaque function builds nodes
        if isinstance(entity, OpaqueFunction):
            actions.extend(produced)
    return actions, context


def arguments_of(node, context) -> list[str]:
    from launch.utilities import perform_substitutions

    return [perform_substitutions(context, part) for part in node.cmd[1:3]]


@launch_missing
def test_launch_starts_rviz_with_the_camera_frame_and_namespace(installed_share):
    nodes, context = launch_nodes(camera='zed', namespace='cam1', rviz='true')
    assert [(n.node_package, n.node_executable) for n in nodes] == [
        ('rgbd_seg_ros', 'segmentation_node'),
        ('rviz2', 'rviz2'),
    ]
    seg, rviz = nodes
    seg._perform_substitutions(context)
    assert seg.expanded_node_namespace == '/cam1'
    assert ('rgb/image_rect_color', '/zed/zed_node/rgb/color/rect/image') in (
        seg.expanded_remapping_rules
    )
    flag, path = arguments_of(rviz, context)
    assert flag == '-d'
    frame, topics = fixed_frame_and_topics(Path(path).read_text())
    assert frame == 'zed_left_camera_frame_optical'
    assert topics == {'/cam1/' + OUTPUT_TOPICS[n] for n in SHOWN}


@launch_missing
def test_launch_rviz_frame_argument_wins_and_rviz_is_off_by_default(installed_share):
    nodes, _ = launch_nodes(camera='realsense')
    assert [n.node_executable for n in nodes] == ['segmentation_node']
    nodes, context = launch_nodes(rviz='true', rviz_frame='base_link')
    frame, topics = fixed_frame_and_topics(Path(arguments_of(nodes[1], context)[1]).read_text())
    assert frame == 'base_link'
    assert topics == {'/' + OUTPUT_TOPICS[n] for n in SHOWN}
    with pytest.raises(RuntimeError, match='rviz_frame'):
        launch_nodes(rviz='true')
