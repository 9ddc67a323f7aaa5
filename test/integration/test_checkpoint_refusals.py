"""A running node over real DDS, fed bad checkpoints through its ``checkpoint`` parameter: each
set is refused with its reason, the old model keeps serving, the parameter keeps its value, and
``~/reload`` right after a set serves what the parameter names. Waits are conditions with
deadlines; no test relies on a fixed sleep."""

from __future__ import annotations

import json

import pytest
from checkpoint_corpus import good_checkpoint, malformed, valid_despite_the_name
from node_fixtures import NODE_PARAMS, Streamer
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BASE_PARAMS = NODE_PARAMS
# What issue 17 found killing or wedging the node, and a few more.
SET_CASES = [
    'zip_pickle_named_safetensors',
    'provenance_holds_bytes',
    'metrics_hold_a_tensor',
    'ssma_eta_skip_0',
    'class_names_3000_for_fewer_weights',
    'fixed_resolution_2000x2600',
    'rgb_std_1e-300',
    'max_depth_m_1e-300',
    'digest_missing',
    'fifo',
    'truncated_safetensors_100',
]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ckpt')
    good = good_checkpoint(folder / 'good.safetensors', num_classes=4, seed=1)
    other = good_checkpoint(folder / 'other.safetensors', num_classes=3, seed=2)
    bad = folder / 'bad'
    bad.mkdir()
    return {
        'good': good,
        'other': other,
        'bad': malformed(bad, good),
        'renamed': valid_despite_the_name(folder, other),
    }


@pytest.fixture
def node(launch_node, ros_peer, files):
    proc = launch_node(
        'segmentation_node', params={**BASE_PARAMS, 'checkpoint': str(files['good'])}
    )
    streamer = Streamer(ros_peer, proc)
    labels = streamer.listen('labels', Image)
    streamer.wait_connected()
    streamer.stream_until(lambda: len(labels) >= 2 and streamer.class_names(), 'first outputs')
    return proc, streamer, labels


class Client:
    """set_parameters, get_parameters and ~/reload of the node, answered while frames flow."""

    def __init__(self, streamer: Streamer) -> None:
        node = streamer.peer.node
        self.streamer = streamer
        self.setter = node.create_client(SetParameters, '/segmentation_node/set_parameters')
        self.getter = node.create_client(GetParameters, '/segmentation_node/get_parameters')
        self.reloader = node.create_client(Trigger, '/segmentation_node/reload')

    def send_set(self, path):
        request = SetParameters.Request(
            parameters=[Parameter('checkpoint', value=str(path)).to_parameter_msg()]
        )
        return self.setter.call_async(request)

    def send_reload(self):
        return self.reloader.call_async(Trigger.Request())

    def answer(self, future, what: str):
        self.streamer.stream_until(future.done, what)
        return future.result()

    def set_checkpoint(self, path):
        return self.answer(self.send_set(path), f'reply to setting {path}').results[0]

    def checkpoint_param(self) -> str:
        future = self.getter.call_async(GetParameters.Request(names=['checkpoint']))
        return self.answer(future, 'get_parameters reply').values[0].string_value

    def served(self) -> str:
        """The checkpoint of the model the node serves (its latched class list says)."""
        classes = self.streamer.classes
        return json.loads(classes[-1].data)['checkpoint'] if classes else ''


def test_bad_checkpoints_are_refused_and_the_node_keeps_serving(node, files):
    proc, streamer, labels = node
    client = Client(streamer)
    for case in SET_CASES:
        path = files['bad'][case]
        result = client.set_checkpoint(path)
        assert not result.successful, case
        assert result.reason.startswith(f'refused checkpoint {path}'), result.reason
        n = len(labels)
        streamer.stream_until(lambda n=n: len(labels) >= n + 2, f'outputs after {case}')
    assert client.checkpoint_param() == str(files['good'])
    assert client.served() == str(files['good']) and len(streamer.class_names()) == 4
    # Nothing is wedged: ~/reload answers, and a good file set afterwards is served.
    reply = client.answer(client.send_reload(), 'reload reply')
    assert reply.success, reply.message
    assert client.set_checkpoint(files['renamed']).successful  # a .pt named .safetensors
    streamer.stream_until(lambda: len(streamer.class_names()) == 3, 'class list of the new model')
    assert client.checkpoint_param() == client.served() == str(files['renamed'])
    assert not (files['bad']['fifo'].parent / 'payload_ran').exists()
    assert proc.interrupt() == 0


def test_reload_right_after_a_set_serves_what_the_parameter_names(node, files):
    proc, streamer, _ = node
    client = Client(streamer)
    for attempt in range(4):
        target = files['other'] if attempt % 2 == 0 else files['good']
        setting, reloading = client.send_set(target), client.send_reload()
        result = client.answer(setting, 'set reply').results[0]
        client.answer(reloading, 'reload reply')
        assert result.successful, result.reason
        param = client.checkpoint_param()
        assert param == str(target)
        streamer.stream_until(lambda p=param: client.served() == p, f'{param} served')
        # The last successful swap stays what is served: reload once more, nothing moves.
        reply = client.answer(client.send_reload(), 'reload reply')
        assert reply.success, reply.message
        assert client.checkpoint_param() == str(target)
        streamer.stream_until(lambda p=param: client.served() == p, f'{param} still served')
    assert proc.interrupt() == 0
