"""SegmentWorker built from real parts: a tiny model in a ModelSlot, the hand-over, NodeMetrics,
real publishers (through PublisherSink) heard by a real subscriber over loopback DDS, and the
node's skip reporter. Frames are real serialised colour/depth/camera_info messages."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import pytest
from rclpy.logging import get_logger
from rclpy.serialization import serialize_message
from ros_frames import frame_triple, gradient_rgb, intrinsics, planar_depth_mm
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from rgbd_seg_ros.core.cloud import unpack_cloud
from rgbd_seg_ros.core.handover import FrameHandover
from rgbd_seg_ros.core.node_metrics import WINDOWS, NodeMetrics
from rgbd_seg_ros.core.pairing import Stamped, Triple
from rgbd_seg_ros.ros import conversions
from rgbd_seg_ros.ros.conversions import image_msg
from rgbd_seg_ros.ros.model_slot import ModelSlot
from rgbd_seg_ros.ros.node_params import OUTPUTS
from rgbd_seg_ros.ros.raw_publish import RawPublisher
from rgbd_seg_ros.ros.segment_worker import PublisherSink, SegmentWorker, WorkerSettings
from rgbd_seg_ros.ros.skips import SkipReporter

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 64, 48
TYPES = {'points': PointCloud2, 'camera_info': CameraInfo}
_topics = itertools.count()


def as_triple(rgb: Any, depth: Any, info: Any) -> Triple:
    def stamped(msg: Any) -> Stamped[Any]:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return Stamped(stamp, (type(msg), serialize_message(msg)))

    return Triple(stamped(rgb), stamped(depth), stamped(info))


class Rig:
    """The worker and the real objects around it, as the node wires them."""

    def __init__(
        self, peer, params: dict[str, Any], load: bool = True, listen=OUTPUTS, raw=None
    ) -> None:
        self.peer = peer
        self.metrics = NodeMetrics()
        self.slot = ModelSlot(get_logger('test_segment_worker'))
        if load:
            assert self.slot.swap(params) is None
        prefix = f'/worker_test_{next(_topics)}'
        self.publishers = {
            name: peer.node.create_publisher(TYPES.get(name, Image), f'{prefix}/{name}', 2)
            for name in OUTPUTS
        }
        self.received = {
            name: peer.subscribe(TYPES.get(name, Image), f'{prefix}/{name}') for name in listen
        }
        for name in listen:
            peer.wait_for_subscribers(self.publishers[name])
        self.handover: FrameHandover[Triple] = FrameHandover(self.metrics, wait_for_fresh=False)
        self.worker = SegmentWorker(
            self.slot,
            self.handover,
            self.metrics,
            PublisherSink(self.publishers, raw),
            WorkerSettings.from_params(params),
            SkipReporter(self.metrics, get_logger('test_segment_worker')),
            lambda: peer.node.get_clock().now().nanoseconds,
        )

    def wait_outputs(self, names, count: int = 1) -> None:
        self.peer.wait_for(
            lambda: all(len(self.received[n]) >= count for n in names), what=f'outputs {names}'
        )


def test_one_frame_is_published_on_every_output_and_recorded(ros_peer, model_params):
    rig = Rig(ros_peer, model_params)
    stamp_ns = 5_000_000_000
    rig.worker.process(as_triple(*frame_triple(stamp_ns, WIDTH, HEIGHT, seed=3)))
    rig.wait_outputs(OUTPUTS)

    rgb, depth = gradient_rgb(WIDTH, HEIGHT, seed=3), planar_depth_mm(WIDTH, HEIGHT)
    K = intrinsics(WIDTH, HEIGHT)
    expected = rig.slot.engine.predict(
        rgb, depth, K, outputs=('labels', 'confidence', 'color', 'overlay'), overlay_alpha=0.5
    )
    msgs = {name: bucket[0] for name, bucket in rig.received.items()}
    for msg in msgs.values():
        assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp_ns
        assert msg.header.frame_id == 'camera_color_optical_frame'
    labels = np.frombuffer(bytes(msgs['labels'].data), np.uint8).reshape(HEIGHT, WIDTH)
    assert msgs['labels'].encoding == 'mono8'
    np.testing.assert_array_equal(labels, expected.labels)
    assert set(np.unique(labels)) >= {0, 1}  # the tiny model splits the depth ramp at 1 m
    assert msgs['confidence'].encoding == '32FC1'
    confidence = np.frombuffer(bytes(msgs['confidence'].data), np.float32)
    # 1e-4: torch's first CPU exp in a process is sometimes 1e-4 off (test_engine.py says more).
    np.testing.assert_allclose(confidence.reshape(HEIGHT, WIDTH), expected.confidence, atol=1e-4)
    for name in ('color', 'overlay'):
        assert msgs[name].encoding == 'rgb8'
        image = np.frombuffer(bytes(msgs[name].data), np.uint8).reshape(HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(image, getattr(expected, name))
    cloud = unpack_cloud(bytes(msgs['points'].data), msgs['points'].width)
    assert len(cloud) == WIDTH * HEIGHT  # default cloud settings: every pixel within 10 m
    np.testing.assert_array_equal(cloud['label'], labels.reshape(-1))
    info = msgs['camera_info']
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), K)

    assert rig.metrics.frames_out == 1
    assert all(rig.metrics.samples(name) == 1 for name in WINDOWS)
    assert rig.metrics.counts() == {}
    assert rig.slot.last_size == (HEIGHT, WIDTH)


def test_camera_info_follows_each_frames_stamp_and_a_changed_camera(ros_peer, model_params):
    """The output camera_info is serialised once per camera and restamped per frame: every
    frame's must still equal the message built from that frame's input."""
    rig = Rig(ros_peer, model_params, listen=('camera_info',))
    frames = [frame_triple(5_000_000_000 + i * 33_000_000, WIDTH, HEIGHT) for i in range(4)]
    for index in (2, 3):  # a recalibrated camera from the third frame on
        info = frames[index][2]
        info.k = [v * 1.1 if v not in (0.0, 1.0) else v for v in info.k]
        info.p = [v * 1.1 if v not in (0.0, 1.0) else v for v in info.p]
    frames[3][0].header.frame_id = frames[3][1].header.frame_id = 'renamed_optical_frame'
    for count, (rgb, depth, info) in enumerate(frames, start=1):
        rig.worker.process(as_triple(rgb, depth, info))
        rig.wait_outputs(('camera_info',), count)
        got = rig.received['camera_info'][-1]
        assert got == conversions.camera_info_msg(info, WIDTH, HEIGHT, rgb.header)
    assert list(rig.received['camera_info'][1].k) != list(rig.received['camera_info'][2].k)


class RecordingRaw(RawPublisher):
    """The real publisher, noting the parts of each message it publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: dict[str, tuple[Any, ...]] = {}

    def publish(self, publisher: Any, message: Any) -> None:
        self.parts[publisher.topic_name.rsplit('/', 1)[-1]] = message.parts
        super().publish(publisher, message)


@pytest.mark.parametrize('organized', [False, True])
def test_the_cloud_is_published_from_the_buffer_the_engine_wrote_it_into(
    ros_peer, model_params, organized
):
    raw = RecordingRaw()
    params = dict(model_params, **{'points.organized': organized})
    rig = Rig(ros_peer, params, listen=('points', 'labels'), raw=raw)
    rig.worker.process(as_triple(*frame_triple(5_000_000_000, WIDTH, HEIGHT, seed=3)))
    rig.wait_outputs(('points', 'labels'))
    (buffer,) = raw.parts['points']  # one buffer, published as the engine left it
    assert isinstance(buffer, np.ndarray)
    assert len(raw.parts['labels']) > 1  # images are still spliced from their parts
    msg = rig.received['points'][0]
    assert bytes(msg.data) == buffer[-1 - len(msg.data) : -1].tobytes()
    cloud = unpack_cloud(bytes(msg.data), msg.width * msg.height)
    labels = np.frombuffer(bytes(rig.received['labels'][0].data), np.uint8)
    np.testing.assert_array_equal(cloud['label'], labels)
    assert (msg.height, msg.is_dense) == ((HEIGHT, False) if organized else (1, True))


def test_outputs_switched_off_are_neither_built_nor_published(ros_peer, model_params):
    params = {**model_params, **{f'publish.{n}': n == 'labels' for n in OUTPUTS}}
    rig = Rig(ros_peer, params)
    rig.worker.process(as_triple(*frame_triple(2_000_000_000, WIDTH, HEIGHT)))
    rig.wait_outputs(['labels'])
    ros_peer.spin_for(0.3)  # anything else published for that frame would have arrived too
    assert {n: len(b) for n, b in rig.received.items() if b} == {'labels': 1}
    assert rig.metrics.samples('cloud_time') == 0 and rig.metrics.samples('labels_overhead') == 1

    # Switched on at run time (a parameter change): used from the next frame.
    rig.worker.configure(WorkerSettings.from_params(model_params))
    rig.worker.process(as_triple(*frame_triple(2_100_000_000, WIDTH, HEIGHT)))
    rig.wait_outputs(OUTPUTS)
    assert rig.metrics.samples('cloud_time') == 1


def test_frames_nobody_listens_to_or_without_a_model_are_dropped(ros_peer, model_params):
    rig = Rig(ros_peer, model_params, listen=())
    rig.worker.process(as_triple(*frame_triple(2_000_000_000, WIDTH, HEIGHT)))
    assert rig.metrics.counts() == {'dropped_no_subscribers': 1}

    rig = Rig(ros_peer, model_params, load=False)
    rig.worker.process(as_triple(*frame_triple(2_000_000_000, WIDTH, HEIGHT)))
    assert rig.metrics.counts() == {'dropped_no_model': 1}
    assert rig.metrics.frames_out == 0


def test_bad_frames_are_skipped_with_their_reason(ros_peer, model_params):
    rig = Rig(ros_peer, model_params)

    def wrong_encoding(rgb, depth, info):
        rgb.encoding = 'yuv422_weird'
        return rgb, depth, info

    def nan_depth(rgb, depth, info):
        d = np.full((HEIGHT, WIDTH), np.nan, np.float32)
        return rgb, image_msg(d, '32FC1', depth.header), info

    def info_of_other_size(rgb, depth, info):
        info.width, info.height = 32, 24
        return rgb, depth, info

    def bad_depth_encoding(rgb, depth, info):
        depth.encoding = 'rgb8'
        return rgb, depth, info

    for breaker in (wrong_encoding, nan_depth, info_of_other_size, bad_depth_encoding):
        rig.worker.process(as_triple(*breaker(*frame_triple(3_000_000_000, WIDTH, HEIGHT))))
    triple = as_triple(*frame_triple(3_000_000_000, WIDTH, HEIGHT))
    mangled = Stamped(triple.depth.stamp_ns, (Image, b'\x00\x01' + b'\xff' * 40))
    rig.worker.process(Triple(triple.rgb, mangled, triple.info))

    assert rig.metrics.counts() == {
        'skipped_bad_colour': 1,
        'skipped_no_valid_depth': 1,
        'skipped_bad_camera_info': 1,
        'skipped_bad_depth': 2,
    }
    assert rig.metrics.skipped_total() == 5 and rig.metrics.frames_out == 0

    rig.worker.process(as_triple(*frame_triple(3_100_000_000, WIDTH, HEIGHT)))
    rig.wait_outputs(['labels'])  # good frames still flow
    assert rig.metrics.frames_out == 1


def test_a_pair_without_depth_is_skipped_by_a_model_that_needs_depth(ros_peer, model_params):
    rig = Rig(ros_peer, model_params)
    assert not rig.slot.engine.runs_without_depth
    triple = as_triple(*frame_triple(3_000_000_000, WIDTH, HEIGHT))
    rig.worker.process(Triple(triple.rgb, Stamped(triple.rgb.stamp_ns, None), triple.info))
    assert rig.metrics.counts() == {'skipped_no_valid_depth': 1}
    assert rig.metrics.frames_out == 0


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == 'segment_worker' and t.is_alive()]


def test_the_thread_takes_the_newest_frame_survives_errors_and_stops(ros_peer, model_params):
    rig = Rig(ros_peer, model_params, listen=('labels',))
    before = len(_worker_threads())
    rig.worker.start()
    try:
        rig.handover.submit(as_triple(*frame_triple(4_000_000_000, WIDTH, HEIGHT)))
        rig.wait_outputs(['labels'])
        # A failure inside the frame (here: a destroyed publisher) is counted, not fatal.
        ros_peer.node.destroy_publisher(rig.publishers['labels'])
        rig.handover.submit(as_triple(*frame_triple(4_100_000_000, WIDTH, HEIGHT)))
        ros_peer.wait_for(
            lambda: rig.metrics.counts().get('skipped_internal_error', 0) == 1,
            what='the internal error counted',
        )
        assert len(_worker_threads()) == before + 1
    finally:
        rig.worker.stop()
    assert len(_worker_threads()) == before
    assert rig.metrics.frames_out == 1


def test_a_frame_is_done_when_its_last_output_was_published(ros_peer, model_params, monkeypatch):
    """The frame's end is the moment its last publish returned, not the later moment the
    engine hands back (the side thread may publish the last image while the worker waits)."""
    clock = ros_peer.node.get_clock()
    rig = Rig(ros_peer, model_params)
    publish_ends: list[int] = []
    sink_publish = rig.worker._sink.publish

    def publish_and_note(name, payload):
        sink_publish(name, payload)
        publish_ends.append(clock.now().nanoseconds)

    monkeypatch.setattr(rig.worker._sink, 'publish', publish_and_note)
    engine = rig.slot.engine
    predict = engine.predict

    def predict_then_linger(*args, **kwargs):
        prediction = predict(*args, **kwargs)
        threading.Event().wait(0.2)  # the engine returns well after its last emit
        return prediction

    monkeypatch.setattr(engine, 'predict', predict_then_linger)
    timings = []
    monkeypatch.setattr(rig.metrics, 'record_frame', timings.append)
    rig.worker.process(as_triple(*frame_triple(5_000_000_000, WIDTH, HEIGHT, seed=3)))
    after = clock.now().nanoseconds
    (timing,) = timings
    assert len(publish_ends) == len(OUTPUTS)  # camera_info too
    assert timing.done_ns >= max(publish_ends)
    assert after - timing.done_ns >= 200_000_000
    assert timing.labels_ns is not None and timing.labels_ns <= timing.done_ns
