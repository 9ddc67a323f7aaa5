"""The single thread that owns the model: newest triple in, published outputs out.

Each output is published the moment the engine has it on the host (labels first, then
camera_info, confidence, colour, overlay, cloud), as serialised bytes built in one copy
(ros/serialized.py), so the labels do not wait for the cloud.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import numpy as np
from rclpy.time import Time

from rgbd_seg_ros.core.pairing import Triple
from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.inference.engine import CloudOptions
from rgbd_seg_ros.ros import conversions, serialized
from rgbd_seg_ros.ros.frame_input import deserialize_triple, frame_arrays

if TYPE_CHECKING:
    from rgbd_seg_ros.ros.segmentation_node import SegmentationNode


class SegmentWorker:
    """Hand-over slot of size one plus the processing loop."""

    def __init__(self, node: SegmentationNode) -> None:
        self._node = node
        self._pending: Triple | None = None
        self._pending_at = 0.0  # monotonic arrival time of the pending triple
        self._submitted = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name='segment_worker', daemon=True)
        self.processed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    def submit(self, triple: Triple) -> None:
        """Offer the newest triple; an unprocessed older one is dropped, never queued."""
        with self._cond:
            if self._pending is not None:
                self._node.counters.add('dropped_superseded')
            self._pending = triple
            self._pending_at = time.monotonic()
            self._submitted += 1
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                if self._node.params['wait_for_fresh_frame']:
                    self._await_fresher()
                triple, self._pending = self._pending, None
            try:
                self._process(triple)
            except Exception as err:  # a worker that dies silently stops the node's output
                self._node.skip('internal_error', f'{type(err).__name__}: {err}')

    def _await_fresher(self) -> None:
        """With the lock held: wait for the frame after a stale pending one (see below).

        Processing a frame of age ``a`` now, versus waiting ``P - a`` for the next one (camera
        period ``P``), changes the mean age of the newest published result by ``P/2 - 3a/2``
        per cycle (the next output is ``a`` fresher, the cycle ``P - a`` longer): waiting wins
        exactly when ``a > P/3``. The wait is bounded (1.5 periods after the pending frame
        arrived) so the last frame of a recording is never lost.
        """
        now = time.monotonic()
        rate = self._node.rates['paired'].rate(now)
        if rate <= 0.0:
            return
        period = 1.0 / rate
        if now - self._pending_at <= period / 3.0:
            return
        seen, deadline = self._submitted, self._pending_at + 1.5 * period
        while self._submitted == seen and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)
        self._node.counters.add('waited_for_fresh_frame')

    def _wanted(self) -> set[str]:
        params = self._node.params
        return {
            name
            for name, pub in self._node.pubs.items()
            if params[f'publish.{name}'] and pub.get_subscription_count() > 0
        }

    def _process(self, triple: Triple) -> None:
        node = self._node
        picked_up = node.get_clock().now()
        engine = node.models.engine
        if engine is None:
            node.counters.add('dropped_no_model')
            return
        wanted = self._wanted()
        if not wanted:
            node.counters.add('dropped_no_subscribers')
            return
        try:
            colour, depth, info = deserialize_triple(triple)
            arrays = frame_arrays(colour, depth, info, node.params['intrinsics_tolerance'])
        except FrameError as err:
            node.skip(getattr(err, 'reason', 'bad_frame'), str(err))
            return
        if not _has_valid_depth(arrays.depth):
            node.skip('no_valid_depth', 'depth image has no valid pixel (all 0, NaN or inf)')
            return
        node.models.last_size = arrays.rgb.shape[:2]
        params = node.params
        cloud = CloudOptions(
            params['points.stride'],
            params['points.max_range'],
            params['points.min_confidence'],
            params['points.organized'],
        )
        publisher = _OutputPublisher(
            node, wanted, colour.header, info, arrays.K, engine.num_classes
        )
        decoded = node.get_clock().now()
        prediction = engine.predict(
            arrays.rgb,
            arrays.depth,
            arrays.K,
            outputs=wanted,
            overlay_alpha=params['overlay_alpha'],
            cloud=cloud,
            emit=publisher.publish,
        )
        publisher.finish(prediction.labels.shape)
        timings = prediction.timings_ms
        forward = timings['forward'] / 1e3
        node.model_time.add(forward)
        if 'cloud' in timings:
            node.cloud_time.add(timings['cloud'] / 1e3)
        stamp = Time.from_msg(colour.header.stamp)
        done = node.get_clock().now()
        latency = (done - stamp).nanoseconds / 1e9
        node.latency.add(latency)
        # Everything between the camera stamp and the last publish that is not the network
        # (transport, pairing, waiting for the worker, decode, pre/post-processing, publish) ...
        node.overhead.add(latency - forward)
        # ... the same up to the labels, the output most consumers wait for ...
        if publisher.labels_at is not None:
            node.labels_overhead.add((publisher.labels_at - stamp).nanoseconds / 1e9 - forward)
        # ... and the part the node's own work adds once it picks the frame up.
        node.work_overhead.add((done - picked_up).nanoseconds / 1e9 - forward)
        # Where the labels overhead goes: stamp -> pick-up (transport, pairing, waiting for
        # the worker) and pick-up -> forward start (deserialise, decode, upload, preprocess).
        node.pickup_age.add((picked_up - stamp).nanoseconds / 1e9)
        node.prepare_time.add(
            (decoded - picked_up).nanoseconds / 1e9 + timings['preprocess'] / 1e3
        )
        node.rates['out'].tick(time.monotonic())
        self.processed += 1


class _OutputPublisher:
    """Publishes one frame's outputs as the engine emits them (serialised in one copy)."""

    def __init__(
        self,
        node: SegmentationNode,
        wanted: set[str],
        header,
        info,
        K: np.ndarray,
        num_classes: int,
    ) -> None:
        self._node = node
        self._wanted = wanted
        self._header = header
        self._info = info
        self._K = K
        self._label_encoding = 'mono8' if num_classes <= 255 else 'mono16'
        self._info_sent = False
        self.labels_at: Time | None = None

    def publish(self, name: str, array: np.ndarray) -> None:
        """The engine's ``emit``: serialise ``array`` as output ``name`` and publish it."""
        if name not in self._wanted:
            return
        pub = self._node.pubs[name]
        if name == 'points':
            pub.publish(serialized.cloud_bytes(array, self._header))
            return
        encoding = {'labels': self._label_encoding, 'confidence': '32FC1'}.get(name, 'rgb8')
        pub.publish(serialized.image_bytes(array, encoding, self._header))
        if name == 'labels':
            self.labels_at = self._node.get_clock().now()
            self._send_info(array.shape)

    def finish(self, shape: tuple[int, ...]) -> None:
        """camera_info when no labels were published (it follows the labels otherwise)."""
        self._send_info(shape)

    def _send_info(self, shape: tuple[int, ...]) -> None:
        if self._info_sent or 'camera_info' not in self._wanted:
            return
        height, width = shape[:2]
        self._node.pubs['camera_info'].publish(
            conversions.camera_info_msg(self._info, self._K, width, height, self._header)
        )
        self._info_sent = True


def _has_valid_depth(depth: np.ndarray) -> bool:
    if depth.dtype == np.uint16:
        return bool(depth.any())
    return bool(np.any(np.isfinite(depth) & (depth > 0)))
