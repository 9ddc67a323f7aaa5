"""The single thread that owns the model: newest triple in, published outputs out."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import numpy as np
from rclpy.time import Time

from rgbd_seg_ros.core.pairing import Triple
from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.inference.engine import CloudOptions, Prediction
from rgbd_seg_ros.ros import conversions
from rgbd_seg_ros.ros.frame_input import deserialize_triple, frame_arrays

if TYPE_CHECKING:
    from rgbd_seg_ros.ros.segmentation_node import SegmentationNode


class SegmentWorker:
    """Hand-over slot of size one plus the processing loop."""

    def __init__(self, node: SegmentationNode) -> None:
        self._node = node
        self._pending: Triple | None = None
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
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                triple, self._pending = self._pending, None
            try:
                self._process(triple)
            except Exception as err:  # a worker that dies silently stops the node's output
                self._node.skip('internal_error', f'{type(err).__name__}: {err}')

    def _wanted(self) -> set[str]:
        params = self._node.params
        return {name for name, pub in self._node.pubs.items()
                if params[f'publish.{name}'] and pub.get_subscription_count() > 0}

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
        cloud = CloudOptions(params['points.stride'], params['points.max_range'],
                             params['points.min_confidence'], params['points.organized'])
        prediction = engine.predict(arrays.rgb, arrays.depth, arrays.K, outputs=wanted,
                                    overlay_alpha=params['overlay_alpha'], cloud=cloud)
        self._publish(wanted, prediction, colour.header, info, arrays.K, engine.num_classes)
        timings = prediction.timings_ms
        node.model_time.add(timings['forward'] / 1e3)
        if 'cloud' in timings:
            node.cloud_time.add(timings['cloud'] / 1e3)
        done = node.get_clock().now()
        latency = (done - Time.from_msg(colour.header.stamp)).nanoseconds / 1e9
        node.latency.add(latency)
        forward = timings['forward'] / 1e3
        # Everything between the camera stamp and the last publish that is not the network
        # (transport, pairing, waiting for the worker, decode, pre/post-processing, publish) ...
        node.overhead.add(latency - forward)
        # ... and the part the node's own work adds once it picks the frame up.
        node.work_overhead.add((done - picked_up).nanoseconds / 1e9 - forward)
        node.rates['out'].tick(time.monotonic())
        self.processed += 1

    def _publish(self, wanted: set[str], pred: Prediction, header, info, K: np.ndarray,
                 num_classes: int) -> None:
        pubs = self._node.pubs
        height, width = pred.labels.shape
        if 'labels' in wanted:
            encoding = 'mono8' if num_classes <= 255 else 'mono16'
            pubs['labels'].publish(conversions.image_msg(pred.labels, encoding, header))
        if 'color' in wanted and pred.color is not None:
            pubs['color'].publish(conversions.image_msg(pred.color, 'rgb8', header))
        if 'overlay' in wanted and pred.overlay is not None:
            pubs['overlay'].publish(conversions.image_msg(pred.overlay, 'rgb8', header))
        if 'confidence' in wanted and pred.confidence is not None:
            pubs['confidence'].publish(conversions.image_msg(pred.confidence, '32FC1', header))
        if 'points' in wanted and pred.points is not None:
            pubs['points'].publish(conversions.cloud_msg(pred.points, header))
        if 'camera_info' in wanted:
            pubs['camera_info'].publish(
                conversions.camera_info_msg(info, K, width, height, header))


def _has_valid_depth(depth: np.ndarray) -> bool:
    if depth.dtype == np.uint16:
        return bool(depth.any())
    return bool(np.any(np.isfinite(depth) & (depth > 0)))
