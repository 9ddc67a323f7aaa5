"""segmentation_node follows the ROS camera conventions, checked over real (loopback) DDS:
rectified input is back-projected with P, the published camera_info is the input's, unusable
intrinsics are refused and counted, the cloud's label is UINT32, and the compressed colour
input follows a remapped colour topic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from node_fixtures import HEIGHT, WIDTH, Streamer, small_checkpoint
from ros_frames import planar_depth_mm
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from rgbd_seg_ros.core.cloud import unpack_cloud
from rgbd_seg_ros.ros.topics import reliable_input_params

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# A rectification that moved P about 3 % away from K (K is ros_frames.intrinsics: f = 51.2,
# c = (31.5, 23.5)); the cloud must follow P.
P_RECT = np.array([[52.7, 0.0, 33.1, 0.0], [0.0, 52.6, 22.4, 0.0], [0.0, 0.0, 1.0, 0.0]])


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp('ckpt') / 'five.safetensors', seed=1)


def _params(checkpoint, **extra):
    return {
        'checkpoint': str(checkpoint),
        'device': 'cpu',
        'diagnostics_period': 0.25,
        'slop': 0.01,
        **reliable_input_params(),
        **extra,
    }


def _with_p(P):
    def mutate(rgb, depth, info):
        info.p = np.asarray(P, np.float64).reshape(-1)
        return rgb, depth, info

    return mutate


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def test_cloud_follows_p_and_unusable_intrinsics_are_counted(launch_node, ros_peer, checkpoint):
    proc = launch_node('segmentation_node', params=_params(checkpoint))
    streamer = Streamer(ros_peer, proc)
    clouds = streamer.listen('points', PointCloud2)
    infos = streamer.listen('camera_info', CameraInfo)
    labels = streamer.listen('labels', Image)
    streamer.wait_connected()
    sent_infos: dict[tuple[int, int], CameraInfo] = {}

    def rectified(rgb, depth, info):
        rgb, depth, info = _with_p(P_RECT)(rgb, depth, info)
        sent_infos[_stamp(info)] = info
        return rgb, depth, info

    streamer.stream_until(
        lambda: clouds and infos and labels, 'cloud, camera_info and labels', mutate=rectified
    )
    streamer.peer.spin_for(0.3)
    common = {_stamp(m) for m in clouds} & {_stamp(m) for m in infos} & {_stamp(m) for m in labels}
    assert common, 'no frame produced a cloud, a camera_info and labels'
    stamp = sorted(common)[-1]
    cloud_msg = next(m for m in clouds if _stamp(m) == stamp)
    info_out = next(m for m in infos if _stamp(m) == stamp)
    label_msg = next(m for m in labels if _stamp(m) == stamp)

    # The camera_info is the input's: P and K as sent, not [K|0].
    sent = sent_infos[stamp]
    np.testing.assert_array_equal(np.asarray(info_out.p), P_RECT.reshape(-1))
    np.testing.assert_array_equal(info_out.k, sent.k)
    np.testing.assert_array_equal(info_out.d, sent.d)

    # Every point is the back-projection with P: fx=P[0], fy=P[5], cx=P[2], cy=P[6].
    label = next(f for f in cloud_msg.fields if f.name == 'label')
    assert label.datatype == PointField.UINT32
    cloud = unpack_cloud(bytes(cloud_msg.data), cloud_msg.width * cloud_msg.height)
    z = planar_depth_mm(WIDTH, HEIGHT).astype(np.float64) / 1000.0
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    p = P_RECT.reshape(-1)
    expected = np.stack([(u - p[2]) / p[0] * z, (v - p[6]) / p[5] * z, z], -1).reshape(-1, 3)
    got = np.stack([cloud['x'], cloud['y'], cloud['z']], -1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    K = np.asarray(sent.k).reshape(3, 3)
    with_k = (v - K[1, 2]) / K[1, 1] * z
    assert np.abs(with_k.reshape(-1) - got[:, 1]).max() > 0.01  # K would be visibly wrong
    label_image = np.frombuffer(bytes(label_msg.data), np.uint8).reshape(-1)
    np.testing.assert_array_equal(cloud['label'], label_image)

    # Non-finite or non-positive intrinsics: refused, counted, nothing published for them.
    bad = {
        'nan_p_fx': P_RECT * np.where(np.arange(12).reshape(3, 4) == 0, np.nan, 1.0),
        'negative_p_fy': P_RECT * np.where(np.arange(12).reshape(3, 4) == 5, -1.0, 1.0),
    }
    for name, P in bad.items():
        before = int(streamer.latest_diag().get('skipped_bad_camera_info', 0))
        first_bad = streamer.stamp_ns
        streamer.stream_until(
            lambda before=before: (
                int(streamer.latest_diag().get('skipped_bad_camera_info', 0)) >= before + 3
            ),
            f'camera_info with {name} counted',
            mutate=_with_p(P),
        )
        published = [m for m in clouds + infos if _stamp(m) > divmod(first_bad, 1_000_000_000)]
        assert not published, f'{name}: outputs were published for a refused camera_info'
    n = len(labels)
    streamer.stream_until(lambda: len(labels) >= n + 3, 'outputs after the bad camera_infos')
    assert all(np.isfinite(np.asarray(m.p)).all() for m in infos)
    assert proc.interrupt() == 0


def test_compressed_colour_follows_a_remapped_colour_topic(launch_node, ros_peer, checkpoint):
    proc = launch_node(
        'segmentation_node',
        params=_params(checkpoint, image_transport='compressed'),
        remap={'rgb/image_rect_color': '/my/rgb'},
    )
    streamer = Streamer(ros_peer, proc, rgb_topic='/my/rgb')
    labels = streamer.listen('labels', Image)
    streamer.wait_connected('rgb_compressed')
    graph = ros_peer.node
    assert graph.get_subscriptions_info_by_topic('/my/rgb/compressed')
    assert not graph.get_subscriptions_info_by_topic('/rgb/image_rect_color/compressed')
    assert not graph.get_subscriptions_info_by_topic('/my/rgb')  # raw is not read

    def compress(rgb, depth, info):
        arr = np.frombuffer(bytes(rgb.data), np.uint8).reshape(HEIGHT, WIDTH, 3)
        _ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
        msg = CompressedImage(
            header=rgb.header, format='rgb8; jpeg compressed bgr8', data=jpeg.tobytes()
        )
        return msg, depth, info

    streamer.stream_until(
        lambda: len(labels) >= 3, 'outputs from /my/rgb/compressed', mutate=compress
    )
    assert proc.interrupt() == 0
