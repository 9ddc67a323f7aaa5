"""segmentation_node as a subprocess over real (loopback) DDS: outputs, pairing, bad input,
hot-swap. Every wait is a condition with a deadline; no test relies on a fixed sleep."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from node_fixtures import HEIGHT, NODE_PARAMS, WIDTH, Streamer, small_checkpoint
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from ros_frames import camera_info, header, intrinsics
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger

from rgbd_seg_ros.core.cloud import unpack_cloud
from rgbd_seg_ros.inference.engine import Engine
from rgbd_seg_ros.ros.conversions import image_msg

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BASE_PARAMS = NODE_PARAMS


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ckpt')
    return {
        'five': small_checkpoint(folder / 'five.safetensors', num_classes=5, seed=1),
        'three': small_checkpoint(
            folder / 'three.safetensors',
            num_classes=3,
            seed=2,
            palette=[(255, 0, 0), (0, 255, 0), (0, 0, 255)],
        ),
    }


@pytest.fixture
def node_and_stream(launch_node, ros_peer, checkpoints):
    def start(**params):
        merged = {**BASE_PARAMS, 'checkpoint': str(checkpoints['five']), **params}
        proc = launch_node('segmentation_node', params=merged)
        streamer = Streamer(ros_peer, proc)
        return proc, streamer

    return start


def image_array(msg: Image) -> np.ndarray:
    dtype = {'mono8': np.uint8, 'rgb8': np.uint8, '32FC1': np.float32, 'mono16': np.uint16}
    channels = 3 if msg.encoding == 'rgb8' else 1
    arr = np.frombuffer(bytes(msg.data), dtype[msg.encoding])
    return (
        arr.reshape(msg.height, msg.width, channels).squeeze(-1)
        if channels == 1
        else arr.reshape(msg.height, msg.width, 3)
    )


def test_every_output_matches_the_engine_on_the_same_frame(node_and_stream, checkpoints):
    proc, streamer = node_and_stream(**{'points': {'stride': 1, 'max_range': 10.0}})
    outs = {
        name: streamer.listen(name, t)
        for name, t in (
            ('labels', Image),
            ('color', Image),
            ('overlay', Image),
            ('confidence', Image),
            ('points', PointCloud2),
            ('camera_info', CameraInfo),
        )
    }
    streamer.wait_connected()
    streamer.stream_until(lambda: all(outs.values()), 'one message on every output')
    streamer.peer.spin_for(0.3)  # let in-flight outputs of the last frame arrive

    # Find a frame for which every output arrived; all must carry its input header.
    stamp_sets = [
        {(m.header.stamp.sec, m.header.stamp.nanosec) for m in msgs} for msgs in outs.values()
    ]
    common = sorted(set.intersection(*stamp_sets))
    assert common, 'no frame produced all outputs'
    sec, nsec = common[-1]
    pick = {
        n: next(m for m in msgs if (m.header.stamp.sec, m.header.stamp.nanosec) == (sec, nsec))
        for n, msgs in outs.items()
    }
    assert all(m.header.frame_id == 'camera_color_optical_frame' for m in pick.values())

    # Recreate that frame and run the engine on it in-process.
    index = round((sec * 1_000_000_000 + nsec - 1_000_000_000) / 33_333_333)
    from ros_frames import gradient_rgb, planar_depth_mm

    rgb = gradient_rgb(WIDTH, HEIGHT, seed=index % 7)
    depth = planar_depth_mm(WIDTH, HEIGHT)
    K = intrinsics(WIDTH, HEIGHT)
    engine = Engine.from_checkpoint(checkpoints['five'], device='cpu')
    expected = engine.predict(
        rgb,
        depth,
        K,
        outputs=('labels', 'confidence', 'color', 'overlay', 'points'),
        overlay_alpha=0.5,
    )

    labels = image_array(pick['labels'])
    assert pick['labels'].encoding == 'mono8' and labels.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(labels, expected.labels)
    confidence = image_array(pick['confidence'])
    assert pick['confidence'].encoding == '32FC1'
    assert confidence.min() >= 0.0 and confidence.max() <= 1.0
    np.testing.assert_allclose(confidence, expected.confidence, atol=1e-4)
    palette = np.asarray(engine.meta.palette, np.uint8)
    np.testing.assert_array_equal(image_array(pick['color']), palette[labels])
    assert pick['overlay'].encoding == 'rgb8'
    np.testing.assert_array_equal(image_array(pick['overlay']), expected.overlay)

    cloud_msg = pick['points']
    cloud = unpack_cloud(bytes(cloud_msg.data), cloud_msg.width * cloud_msg.height)
    assert [f.name for f in cloud_msg.fields] == ['x', 'y', 'z', 'rgb', 'label', 'confidence']
    z = depth.astype(np.float32) / 1000.0
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    xyz = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    np.testing.assert_allclose(
        np.stack([cloud['x'], cloud['y'], cloud['z']], -1),
        xyz.reshape(-1, 3),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_array_equal(cloud['label'], labels.reshape(-1))
    packed = cloud['rgb'].view(np.uint32)
    rgb_of_point = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], -1)
    np.testing.assert_array_equal(rgb_of_point, palette[labels.reshape(-1)])

    info = pick['camera_info']
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), K)
    assert json.loads(streamer.classes[-1].data)['classes'][0]['name'] == 'class_0'
    assert proc.interrupt() == 0


def test_pairing_slop_missing_info_and_rate_mismatch(node_and_stream):
    proc, streamer = node_and_stream()
    labels = streamer.listen('labels', Image)
    streamer.wait_connected()

    # Depth 5 ms late: within the 10 ms slop -> paired.
    def skewed(delay_ns):
        def mutate(rgb, depth, info):
            stamp = depth.header.stamp.sec * 1_000_000_000 + depth.header.stamp.nanosec
            depth.header = header(stamp + delay_ns)
            return rgb, depth, info

        return mutate

    streamer.stream_until(
        lambda: len(labels) >= 3, 'outputs with 5 ms skew', mutate=skewed(5_000_000)
    )

    def outputs_since(stamp_ns: int) -> int:
        return sum(
            1
            for m in labels
            if m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec > stamp_ns
        )

    # Once frames were segmented, /diagnostics splits their latency (what node_bench reports).
    keys = (
        'latency_p50_ms',
        'model_time_p50_ms',
        'overhead_p50_ms',
        'labels_overhead_p50_ms',
        'pickup_age_p50_ms',
        'prepare_time_p50_ms',
        'work_overhead_p50_ms',
    )
    streamer.stream_until(
        lambda: all(k in streamer.latest_diag() for k in keys), 'latency breakdown on /diagnostics'
    )
    diag = streamer.latest_diag()
    assert float(diag['prepare_time_p50_ms']) > 0
    assert float(diag['latency_p50_ms']) >= float(diag['model_time_p50_ms'])

    # Half a frame period (16.7 ms) late: beyond the 10 ms slop from both neighbours -> no pair.
    phase_start = streamer.stamp_ns
    start_diag = len(streamer.diagnostics)
    streamer.stream_until(
        lambda: (
            len(streamer.diagnostics) > start_diag + 2
            and int(streamer.latest_diag().get('dropped_unpaired_rgb', 0)) >= 10
        ),
        'unpaired drops with 16.7 ms skew',
        mutate=skewed(16_666_666),
    )
    assert outputs_since(phase_start) == 0

    # camera_info missing: never pairs.
    def no_info(rgb, depth, info):
        return rgb, depth, None

    start = int(streamer.latest_diag()['dropped_unpaired_depth'])
    streamer.stream_until(
        lambda: int(streamer.latest_diag().get('dropped_unpaired_depth', 0)) >= start + 10,
        'drops while camera_info is missing',
        mutate=no_info,
    )
    assert outputs_since(phase_start) == 0

    # 30 Hz colour and camera_info, 15 Hz depth: every depth frame pairs.
    toggle = {'n': 0}

    def half_rate_depth(rgb, depth, info):
        toggle['n'] += 1
        return rgb, (depth if toggle['n'] % 2 else None), info

    paired_before = int(streamer.latest_diag()['paired'])
    streamer.stream_until(
        lambda: int(streamer.latest_diag().get('paired', 0)) >= paired_before + 10,
        '10 pairs at 15 Hz depth',
        mutate=half_rate_depth,
    )
    diag = streamer.latest_diag()
    assert float(diag['rate_depth_hz']) < float(diag['rate_rgb_hz'])
    assert proc.interrupt() == 0


def bad_inputs():
    """Each entry replaces part of a good triple with one kind of bad data."""

    def wrong_encoding(rgb, depth, info):
        rgb.encoding = 'yuv422_weird'
        return rgb, depth, info

    def truncated(rgb, depth, info):
        rgb.data = bytes(rgb.data)[: len(rgb.data) // 2]
        return rgb, depth, info

    def size_mismatch(rgb, depth, info):
        return rgb, depth, _info_like(info, 32, 24)

    def depth_other_aspect(rgb, depth, info):
        d = np.full((HEIGHT, HEIGHT), 1500, np.uint16)
        return rgb, image_msg(d, '16UC1', depth.header), info

    def nan_depth(rgb, depth, info):
        d = np.full((HEIGHT, WIDTH), np.nan, np.float32)
        return rgb, image_msg(d, '32FC1', depth.header), info

    def empty_image(rgb, depth, info):
        rgb.height = rgb.width = rgb.step = 0
        rgb.data = b''
        return rgb, depth, info

    def bad_depth_encoding(rgb, depth, info):
        depth.encoding = 'rgb8'
        return rgb, depth, info

    return {
        'wrong_encoding': wrong_encoding,
        'truncated': truncated,
        'size_mismatch': size_mismatch,
        'depth_other_aspect': depth_other_aspect,
        'nan_depth': nan_depth,
        'empty_image': empty_image,
        'bad_depth_encoding': bad_depth_encoding,
    }


def _info_like(info: CameraInfo, width: int, height: int) -> CameraInfo:
    out = camera_info(intrinsics(width, height), width, height, 0)
    out.header = info.header
    return out


def test_bad_input_is_skipped_counted_and_good_frames_keep_flowing(node_and_stream):
    proc, streamer = node_and_stream()
    labels = streamer.listen('labels', Image)
    streamer.wait_connected()
    streamer.stream_until(lambda: len(labels) >= 2, 'first outputs')
    breakers = list(bad_inputs().values())
    counter = {'n': 0}

    def alternate(rgb, depth, info):
        counter['n'] += 1
        if counter['n'] % 2:
            return breakers[(counter['n'] // 2) % len(breakers)](rgb, depth, info)
        return rgb, depth, info

    reasons = ('no_valid_depth', 'bad_colour', 'bad_depth', 'bad_camera_info')

    def every_reason_skipped() -> bool:
        # A bad frame can be superseded by the next good one before the worker picks it up,
        # so a total count alone may be reached without one of the kinds: wait for each.
        diag = streamer.latest_diag()
        return all(int(diag.get(f'skipped_{reason}', 0)) >= 1 for reason in reasons)

    good_before = len(labels)
    streamer.stream_until(
        lambda: every_reason_skipped() and len(labels) >= good_before + len(breakers),
        'skips counted while good frames are published',
        mutate=alternate,
    )
    diag = streamer.latest_diag()
    assert proc.alive()
    assert int(diag.get('skipped_no_valid_depth', 0)) >= 1, diag
    assert int(diag.get('skipped_bad_colour', 0)) >= 1, diag
    assert int(diag.get('skipped_bad_depth', 0)) >= 1, diag
    assert int(diag.get('skipped_bad_camera_info', 0)) >= 1, diag

    # Time jumps backwards (a bag loop): the node recovers and keeps publishing. Move the
    # stamps well past the pairer's 1 s jump threshold first, whatever was sent so far.
    streamer.stamp_ns += 3_000_000_000
    n = len(labels)
    streamer.stream_until(lambda: len(labels) >= n + 1, 'outputs after the stamps moved on')
    streamer.stamp_ns = 1_000_000_000
    n = len(labels)
    streamer.stream_until(lambda: len(labels) >= n + 3, 'outputs after the stamps jumped back')
    streamer.peer.wait_for(
        lambda: int(streamer.latest_diag().get('time_jumps', 0)) >= 1,
        what='time_jumps on /diagnostics',
        node=proc,
    )
    assert proc.interrupt() == 0


def test_compressed_colour_input(node_and_stream):
    proc, streamer = node_and_stream(image_transport='compressed')
    labels = streamer.listen('labels', Image)
    streamer.wait_connected('rgb_compressed')

    def compress(rgb, depth, info):
        arr = np.frombuffer(bytes(rgb.data), np.uint8).reshape(HEIGHT, WIDTH, 3)
        _ok, png = cv2.imencode('.png', cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
        msg = CompressedImage(
            header=rgb.header, format='rgb8; png compressed bgr8', data=png.tobytes()
        )
        return msg, depth, info

    streamer.stream_until(
        lambda: len(labels) >= 3, 'outputs from CompressedImage input', mutate=compress
    )
    assert proc.interrupt() == 0


def test_hot_swap_while_streaming(node_and_stream, checkpoints, tmp_path):
    proc, streamer = node_and_stream()
    labels = streamer.listen('labels', Image)
    colour = streamer.listen('color', Image)
    streamer.wait_connected()
    streamer.stream_until(lambda: len(labels) >= 3 and streamer.class_names(), 'first outputs')
    assert len(streamer.class_names()) == 5

    setter = streamer.peer.node.create_client(SetParameters, '/segmentation_node/set_parameters')

    def set_checkpoint(path) -> object:
        request = SetParameters.Request(
            parameters=[Parameter('checkpoint', value=str(path)).to_parameter_msg()]
        )
        future = setter.call_async(request)
        streamer.stream_until(future.done, f'reply to setting checkpoint {path}')
        return future.result().results[0]

    # A corrupt checkpoint is refused; the old model keeps serving.
    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(checkpoints['three'].read_bytes()[:5000])
    result = set_checkpoint(corrupt)
    assert not result.successful and 'corrupt.safetensors' in result.reason
    n = len(labels)
    streamer.stream_until(lambda: len(labels) >= n + 3, 'outputs after a refused swap')
    assert len(streamer.class_names()) == 5

    # A good one takes effect while frames keep flowing.
    assert set_checkpoint(checkpoints['three']).successful
    streamer.stream_until(lambda: len(streamer.class_names()) == 3, 'new class list')
    n = len(colour)
    streamer.stream_until(lambda: len(colour) >= n + 3, 'outputs of the new model')
    new_palette = {(255, 0, 0), (0, 255, 0), (0, 0, 255)}
    last = image_array(colour[-1]).reshape(-1, 3)
    assert {tuple(c) for c in np.unique(last, axis=0)} <= new_palette
    assert image_array(labels[-1]).max() < 3

    # ~/reload re-reads the current checkpoint.
    reload = streamer.peer.node.create_client(Trigger, '/segmentation_node/reload')
    future = reload.call_async(Trigger.Request())
    streamer.stream_until(future.done, 'reload reply')
    assert future.result().success, future.result().message
    assert proc.interrupt() == 0
