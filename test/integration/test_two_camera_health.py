"""/diagnostics as a robot's monitor reads it, from two real nodes over real DDS: each named
by its fully qualified name with its device and camera frame, ERROR while an input is silent,
OK with a good stream. Every wait is a condition with a deadline."""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_fixtures import Streamer, small_checkpoint
from sensor_msgs.msg import Image

from rgbd_seg_ros.ros.topics import reliable_input_params

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# Lenient rate limits: the test machine is shared, what is tested is the level's meaning.
PARAMS = {
    'device': 'cpu',
    'diagnostics_period': 0.25,
    'slop': 0.01,
    'health': {
        'stale_after': 1.5,
        'min_input_rate': 2.0,
        'min_pairing_ratio': 0.3,
        'min_output_ratio': 0.2,
    },
}
NAMES = {
    '/cam1': '/cam1/segmentation_node: pipeline',
    '/cam2': '/cam2/segmentation_node: pipeline',
}


def statuses(streamer: Streamer, name: str, since: int = 0) -> list[DiagnosticStatus]:
    return [s for a in streamer.diagnostics[since:] for s in a.status if s.name == name]


def in_frame(frame: str):
    def mutate(rgb, depth, info):
        for msg in (rgb, depth, info):
            msg.header.frame_id = frame
        return rgb, depth, info

    return mutate


def test_two_cameras_error_without_input_ok_with_a_good_stream(launch_node, ros_peer, tmp_path):
    checkpoint = small_checkpoint(tmp_path / 'model.safetensors')
    nodes = {
        ns: launch_node(
            'segmentation_node',
            {**PARAMS, **reliable_input_params(ns), 'checkpoint': str(checkpoint)},
            remap={'__ns': ns},
        )
        for ns in NAMES
    }
    streamer = Streamer(ros_peer, nodes['/cam1'], namespace='/cam1')
    streamer.listen('labels', Image)

    # No input at all: ERROR, naming what is missing, under each node's own name.
    for ns, name in NAMES.items():
        ros_peer.wait_for(
            lambda name=name: any(
                s.level == DiagnosticStatus.ERROR for s in statuses(streamer, name)
            ),
            what=f'ERROR from {name} without input',
            node=nodes[ns],
        )
        error = next(s for s in statuses(streamer, name) if s.level == DiagnosticStatus.ERROR)
        assert 'no colour for' in error.message and '(none since start)' in error.message
        assert 'no depth for' in error.message and 'no camera_info for' in error.message
        assert error.hardware_id == 'device=cpu frame=unknown'

    # A good stream to /cam1 in its own frame: OK, with that frame in its hardware_id.
    streamer.wait_connected()
    since = len(streamer.diagnostics)
    good = in_frame('cam1_color_optical_frame')
    streamer.stream_until(
        lambda: any(
            s.level == DiagnosticStatus.OK for s in statuses(streamer, NAMES['/cam1'], since)
        ),
        'OK from /cam1 with a good stream',
        period=0.1,
        mutate=good,
    )
    ok = next(
        s for s in statuses(streamer, NAMES['/cam1'], since) if s.level == DiagnosticStatus.OK
    )
    assert ok.message == 'running'
    assert ok.hardware_id == 'device=cpu frame=cam1_color_optical_frame'
    values = {kv.key: kv.value for kv in ok.values}
    assert float(values['silent_info_s']) <= 1.5 and float(values['pairing_ratio_recent']) > 0.3
    # /cam2 got nothing all along: still ERROR, and the two never read the same.
    cam2 = statuses(streamer, NAMES['/cam2'], since)
    assert cam2 and all(s.level == DiagnosticStatus.ERROR for s in cam2)
    assert cam2[-1].hardware_id != ok.hardware_id and cam2[-1].name != ok.name

    # camera_info stops while colour and depth keep flowing: ERROR naming camera_info.
    def no_info(rgb, depth, info):
        return *good(rgb, depth, info)[:2], None

    since = len(streamer.diagnostics)
    streamer.stream_until(
        lambda: any(
            s.level == DiagnosticStatus.ERROR and s.message.startswith('no camera_info for')
            for s in statuses(streamer, NAMES['/cam1'], since)
        ),
        'ERROR naming camera_info once it stops',
        period=0.1,
        mutate=no_info,
    )
    # And OK again once it is back.
    since = len(streamer.diagnostics)
    streamer.stream_until(
        lambda: any(
            s.level == DiagnosticStatus.OK for s in statuses(streamer, NAMES['/cam1'], since)
        ),
        'OK again with camera_info back',
        period=0.1,
        mutate=good,
    )
    for node in nodes.values():
        assert node.interrupt() == 0, node.log()[-3000:]
