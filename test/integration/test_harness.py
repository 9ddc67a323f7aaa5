"""Proves the real-DDS harness: a node subprocess and the test talk both ways over Fast DDS
(loopback only), parameters from a YAML file are applied, and SIGINT ends the node with 0."""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter
from ros_frames import frame_triple
from sensor_msgs.msg import CameraInfo, Image

from rgbd_seg_ros.ros.topics import reliable_input_params

pytestmark = pytest.mark.ros

PARAMS = {
    'slop': 0.05,
    'queue_size': 3,
    'overlay_alpha': 0.25,
    'diagnostics_period': 0.2,
    'points': {'stride': 4},
    **reliable_input_params(),
}


def diag_values(array: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for kv in array.status[0].values}


def test_node_subprocess_exchanges_messages_applies_yaml_and_exits_cleanly(launch_node, ros_peer):
    node = launch_node('segmentation_node', params=PARAMS)
    peer = ros_peer.node

    # Parameters from the YAML are the node's values.
    get = peer.create_client(GetParameters, '/segmentation_node/get_parameters')
    reply = ros_peer.call(
        get,
        GetParameters.Request(
            names=['slop', 'queue_size', 'overlay_alpha', 'points.stride', 'device']
        ),
        node=node,
    )
    values = [v.double_value or v.integer_value or v.string_value for v in reply.values]
    assert values == [0.05, 3, 0.25, 4, 'auto']

    # A bad value is refused with a reason and the old value stays.
    set_ = peer.create_client(SetParameters, '/segmentation_node/set_parameters')
    refused = ros_peer.call(
        set_,
        SetParameters.Request(
            parameters=[Parameter('overlay_alpha', value=1.5).to_parameter_msg()]
        ),
        node=node,
    )
    assert not refused.results[0].successful
    assert 'overlay_alpha' in refused.results[0].reason

    # Test -> node: frames published by the test arrive at the node.
    diagnostics = ros_peer.subscribe(DiagnosticArray, '/diagnostics')
    pub_rgb = peer.create_publisher(Image, '/rgb/image_rect_color', 10)
    pub_depth = peer.create_publisher(Image, '/depth_registered/image_rect', 10)
    pub_info = peer.create_publisher(CameraInfo, '/rgb/camera_info', 10)
    for pub in (pub_rgb, pub_depth, pub_info):
        ros_peer.wait_for_subscribers(pub, node=node)
    sent = 0

    def send_and_check() -> bool:
        nonlocal sent
        rgb, depth, info = frame_triple(1_000_000_000 + sent * 33_000_000)
        pub_rgb.publish(rgb)
        pub_depth.publish(depth)
        pub_info.publish(info)
        sent += 1
        ros_peer.spin_for(0.05)
        # Node -> test: its diagnostics report what it received and paired.
        return any(int(diag_values(d).get('paired', 0)) >= 3 for d in diagnostics)

    ros_peer.wait_for(send_and_check, what='diagnostics reporting paired frames', node=node)
    latest = diag_values(diagnostics[-1])
    assert int(latest['received_rgb']) >= 3
    assert float(latest['pairing_ratio']) > 0.0

    assert node.interrupt() == 0, node.log()[-3000:]
