"""The node's topic names and QoS, as a ROS user overrides them.

Names are relative, so a namespace and ``-r`` remaps move them. The compressed colour input is
not a name of its own: like image_transport, it is ``<colour topic>/compressed`` after the
colour topic has been resolved, so remapping the colour topic moves it too. The transport is
the ``image_transport`` parameter, the name depth_image_proc's nodes read for the same choice.

QoS (ros/qos.py) is open to rclpy's standard
``qos_overrides.<resolved topic>.<subscription|publisher>.<history|depth|reliability>``
parameters; :func:`qos_override_params` writes them for a params file. Nothing here imports
rclpy, so tools can build a node's parameters without a ROS environment.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rgbd_seg_ros.ros.node_params import OUTPUTS

INPUT_TOPICS: dict[str, str] = {
    'rgb': 'rgb/image_rect_color',
    'depth': 'depth_registered/image_rect',
    'info': 'rgb/camera_info',
}
OUTPUT_TOPICS: dict[str, str] = {name: f'segmentation/{name}' for name in OUTPUTS}


def colour_topic(resolved_colour_topic: str, transport: str) -> str:
    """The topic the colour subscription reads: image_transport's ``<base>/<transport>``."""
    return resolved_colour_topic if transport == 'raw' else f'{resolved_colour_topic}/{transport}'


def qos_override_params(
    topics: Iterable[str], entity: str, **policies: Any
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Nested params-file entries setting ``policies`` on each fully resolved topic.

    ``entity`` is 'subscription' or 'publisher'; e.g. reliable inputs for a replay:
    ``qos_override_params(['/rgb/camera_info'], 'subscription', reliability='reliable')``.
    """
    return {'qos_overrides': {topic: {entity: dict(policies)} for topic in topics}}


def reliable_input_params(namespace: str = '') -> dict[str, Any]:
    """Params-file entries making every input reliable (replaying a bag, tests, the demo)."""
    prefix = namespace.rstrip('/') + '/'
    topics = [prefix + name for name in INPUT_TOPICS.values()]
    topics.append(colour_topic(prefix + INPUT_TOPICS['rgb'], 'compressed'))
    return qos_override_params(topics, 'subscription', reliability='reliable')
