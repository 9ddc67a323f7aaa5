"""Stopping cleanly: SIGINT/SIGTERM, one or several, during start-up, while frames flow, during
a hot-swap and under ``ros2 launch``, always end segmentation_node with status 0 and no
traceback, no internal error from a publisher whose context went away, no RCLError.

The first wait is for the node's handlers (stop_signals.wait_handlers_installed); a delay
after it only chooses the phase a burst lands in, and every phase must end the same way.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from node_fixtures import Streamer, small_checkpoint
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from stop_signals import DIRTY, assert_clean_exit, send_burst, wait_handlers_installed

from rgbd_seg_ros.ros.topics import reliable_input_params

pytestmark = [pytest.mark.ros, pytest.mark.slow]

INT, TERM = signal.SIGINT, signal.SIGTERM
PARAMS = {
    'device': 'cpu',
    'diagnostics_period': 0.25,
    'slop': 0.01,
    **reliable_input_params(),
}


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ckpt')
    return [small_checkpoint(folder / f'model{seed}.safetensors', seed=seed) for seed in (1, 2)]


def publish_for(streamer: Streamer, seconds: float) -> None:
    """Keep the camera going at ~30 Hz for ``seconds`` (also while the node stops)."""
    end = time.monotonic() + seconds
    while True:
        streamer.publish(*streamer.next_triple())
        streamer.peer.executor.spin_once(timeout_sec=min(1 / 30, max(0.0, end - time.monotonic())))
        if time.monotonic() >= end:
            return


def publish_until_exit(streamer: Streamer, node, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while node.alive() and time.monotonic() < deadline:
        publish_for(streamer, 0.1)


def streaming_node(launch_node, ros_peer, checkpoint):
    node = launch_node('segmentation_node', {**PARAMS, 'checkpoint': str(checkpoint)})
    streamer = Streamer(ros_peer, node)
    labels = streamer.listen('labels', Image)
    streamer.wait_connected()
    streamer.stream_until(lambda: len(labels) >= 3, 'outputs before the signals')
    return node, streamer


@pytest.mark.parametrize(
    'delay,signals,gaps',
    [
        (0.0, (INT, INT), (0.005,)),  # while the entry point imports rclpy and torch
        (0.3, (INT, TERM, INT), (0.05, 0.3)),
        (1.5, (TERM, TERM), (0.1,)),
        (3.0, (INT, INT), (0.3,)),  # loading the model, or just ready on a fast machine
    ],
)
def test_signals_during_start_up(launch_node, checkpoints, delay, signals, gaps):
    node = launch_node('segmentation_node', {**PARAMS, 'checkpoint': str(checkpoints[0])})
    wait_handlers_installed(node.proc)
    time.sleep(delay)  # picks the phase; the assertion is the same for all of them
    send_burst(node.proc, signals, gaps)
    assert_clean_exit(node)


@pytest.mark.parametrize(
    'signals,gaps',
    [
        ((INT, INT), (0.005,)),  # a terminal's Ctrl-C plus the one launch forwards
        ((INT, INT), (0.3,)),
        ((TERM, INT, TERM, INT, INT), (0.02, 0.1, 0.2, 0.05)),
    ],
)
def test_signals_while_frames_flow(launch_node, ros_peer, checkpoints, signals, gaps):
    node, streamer = streaming_node(launch_node, ros_peer, checkpoints[0])
    send_burst(node.proc, signals, gaps, between=lambda s: publish_for(streamer, s))
    publish_until_exit(streamer, node)
    assert_clean_exit(node)


@pytest.mark.parametrize('delay', [0.0, 0.05, 0.2])
def test_signals_during_a_swap(launch_node, ros_peer, checkpoints, delay):
    node, streamer = streaming_node(launch_node, ros_peer, checkpoints[0])
    setter = streamer.peer.node.create_client(SetParameters, '/segmentation_node/set_parameters')
    streamer.peer.wait_for(setter.service_is_ready, what='set_parameters', node=node)
    request = SetParameters.Request(
        parameters=[Parameter('checkpoint', value=str(checkpoints[1])).to_parameter_msg()]
    )
    setter.call_async(request)
    publish_for(streamer, delay)
    send_burst(node.proc, (INT, INT), (0.01,), between=lambda s: publish_for(streamer, s))
    publish_until_exit(streamer, node)
    assert_clean_exit(node)


LAUNCH_SCRIPT = textwrap.dedent(
    """
    import sys
    from launch import LaunchDescription, LaunchService
    from launch_ros.actions import Node

    service = LaunchService()
    service.include_launch_description(LaunchDescription([
        Node(package='rgbd_seg_ros', executable='segmentation_node', output='screen',
             parameters=[{'device': 'cpu', 'checkpoint': sys.argv[1]}]),
    ]))
    sys.exit(service.run())
    """
)


@pytest.mark.skipif(
    importlib.util.find_spec('launch_ros') is None,
    reason='launch_ros is not installed here (no ROS 2 distribution in this environment)',
)
@pytest.mark.parametrize('gap', [0.005, 0.3])
def test_ctrl_c_under_ros2_launch(tmp_path, ros_env, checkpoints, gap):
    """A terminal's Ctrl-C: SIGINT to the whole process group (launch and the node), then
    launch forwards its own SIGINT to the node. Launch must report a clean exit."""
    log_path = tmp_path / 'launch.log'
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(
            [sys.executable, '-c', LAUNCH_SCRIPT, str(checkpoints[0])],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ros_env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while 'segmentation_node ready' not in log_path.read_text(errors='replace'):
            assert proc.poll() is None, log_path.read_text(errors='replace')
            assert time.monotonic() < deadline, 'the node never became ready under launch'
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(gap)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text(errors='replace')
    assert 'process has finished cleanly' in text, text[-4000:]
    assert 'process has died' not in text, text[-4000:]
    found = [word for word in DIRTY if word in text]
    assert not found, f'{found}\n{text[-4000:]}'
