"""segmentation_node's parameters the ROS way, through its real parameter services over
(loopback) DDS: descriptors carry ranges, integers are taken for reals at start and at run
time, and QoS follows rclpy's standard qos_overrides parameters."""

from __future__ import annotations

import pytest
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import (
    DescribeParameters,
    GetParameters,
    ListParameters,
    SetParameters,
)
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy

from rgbd_seg_ros.ros.topics import qos_override_params, reliable_input_params

pytestmark = pytest.mark.ros

NODE = '/segmentation_node'


def _merge(*dicts):
    out: dict = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value)
            else:
                out[key] = value
    return out


def test_ranges_integers_for_reals_and_qos_overrides(launch_node, ros_peer):
    params = _merge(
        {
            'device': 'cpu',
            'slop': 0,  # integers for real-valued parameters, as a user writes them
            'overlay_alpha': 1,
            'points': {'max_range': 5, 'stride': 2},
        },
        reliable_input_params(),
        qos_override_params(['/segmentation/labels'], 'publisher', reliability='best_effort'),
    )
    node = launch_node('segmentation_node', params=params)
    peer = ros_peer.node

    get = peer.create_client(GetParameters, f'{NODE}/get_parameters')
    names = ['slop', 'overlay_alpha', 'points.max_range', 'points.stride']
    reply = ros_peer.call(get, GetParameters.Request(names=names), node=node)
    assert [v.type for v in reply.values] == [ParameterType.PARAMETER_DOUBLE] * 3 + [
        ParameterType.PARAMETER_INTEGER
    ]
    assert [v.double_value for v in reply.values[:3]] == [0.0, 1.0, 5.0]

    # ros2 param describe: the bounds node_params checks, as ROS ranges.
    describe = peer.create_client(DescribeParameters, f'{NODE}/describe_parameters')
    names = ['points.max_range', 'overlay_alpha', 'points.stride', 'image_transport']
    described = ros_peer.call(describe, DescribeParameters.Request(names=names), node=node)
    by_name = {d.name: d for d in described.descriptors}
    max_range = by_name['points.max_range']
    assert max_range.type == ParameterType.PARAMETER_DOUBLE
    assert (
        max_range.floating_point_range[0].from_value,
        max_range.floating_point_range[0].to_value,
    ) == (0.0, 1000.0)
    assert 'greater than 0' in max_range.additional_constraints
    alpha = by_name['overlay_alpha'].floating_point_range[0]
    assert (alpha.from_value, alpha.to_value) == (0.0, 1.0)
    assert by_name['points.stride'].integer_range[0].from_value == 1
    assert by_name['image_transport'].read_only and not by_name['points.stride'].read_only

    # ros2 param set with an integer for a real: accepted, stored as a real.
    set_ = peer.create_client(SetParameters, f'{NODE}/set_parameters')

    def set_value(name, value):
        msg = Parameter(name, value=value).to_parameter_msg()
        return ros_peer.call(set_, SetParameters.Request(parameters=[msg]), node=node).results[0]

    assert set_value('points.max_range', 7).successful
    reply = ros_peer.call(get, GetParameters.Request(names=['points.max_range']), node=node)
    assert reply.values[0].type == ParameterType.PARAMETER_DOUBLE
    assert reply.values[0].double_value == 7.0
    # Out of range, as an integer or a real, is refused with a reason naming the parameter.
    for name, value in (('overlay_alpha', 2), ('overlay_alpha', 1.5), ('points.stride', 0)):
        result = set_value(name, value)
        assert not result.successful and name in result.reason, (name, value, result.reason)
    refused = set_value('points.max_range', 0)  # the range is open at 0
    assert not refused.successful and 'points.max_range' in refused.reason
    assert not set_value('points.max_range', 'far').successful
    assert not set_value('image_transport', 'compressed').successful  # read-only

    # QoS: the standard override parameters, applied to the real endpoints.
    qos_names = [
        'qos_overrides./rgb/image_rect_color.subscription.reliability',
        'qos_overrides./segmentation/labels.publisher.reliability',
        'qos_overrides./segmentation/color.publisher.reliability',
    ]
    reply = ros_peer.call(get, GetParameters.Request(names=qos_names), node=node)
    assert [v.string_value for v in reply.values] == ['reliable', 'best_effort', 'reliable']

    def reliability(endpoints):
        return {e.qos_profile.reliability for e in endpoints if e.node_name == 'segmentation_node'}

    for topic, kind, expected in (
        ('/rgb/image_rect_color', 'sub', ReliabilityPolicy.RELIABLE),
        ('/rgb/camera_info', 'sub', ReliabilityPolicy.RELIABLE),
        ('/segmentation/labels', 'pub', ReliabilityPolicy.BEST_EFFORT),
        ('/segmentation/color', 'pub', ReliabilityPolicy.RELIABLE),
    ):
        info = (
            peer.get_subscriptions_info_by_topic
            if kind == 'sub'
            else peer.get_publishers_info_by_topic
        )
        ros_peer.wait_for(
            lambda info=info, topic=topic: reliability(info(topic)),
            what=f'{topic} in the graph',
            node=node,
        )
        assert reliability(info(topic)) == {expected}, topic
    assert node.interrupt() == 0


def test_default_qos_inputs_best_effort_and_no_project_qos_parameters(launch_node, ros_peer):
    node = launch_node('segmentation_node', params={'device': 'cpu'})
    peer = ros_peer.node
    get = peer.create_client(GetParameters, f'{NODE}/get_parameters')
    reply = ros_peer.call(
        get,
        GetParameters.Request(
            names=['qos_overrides./depth_registered/image_rect.subscription.reliability']
        ),
        node=node,
    )
    assert reply.values[0].string_value == 'best_effort'
    topic = '/depth_registered/image_rect'
    ros_peer.wait_for(
        lambda: peer.get_subscriptions_info_by_topic(topic), what='depth subscription', node=node
    )
    [endpoint] = peer.get_subscriptions_info_by_topic(topic)
    assert endpoint.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    listed = ros_peer.call(
        peer.create_client(ListParameters, f'{NODE}/list_parameters'),
        ListParameters.Request(),
        node=node,
    ).result.names
    assert 'image_transport' in listed
    assert not [name for name in listed if name.startswith('qos.')]  # replaced by qos_overrides
    assert node.interrupt() == 0
