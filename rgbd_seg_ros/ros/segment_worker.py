"""The single thread that owns the model: newest triple in, published outputs out.

Each output is published the moment the engine has it on the host (labels first, then
camera_info, confidence, cloud, colour, overlay), as serialised bytes built in one copy
(ros/serialized.py), so the labels do not wait for the cloud.

The worker is built from what it uses: where the model comes from, the hand-over it takes
triples from, the metrics it records into, the sink it publishes to, the settings it reads,
how to report a skip and the clock of the camera stamps. The node wires those together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from rclpy.time import Time

from rgbd_seg_ros.core.handover import FrameHandover
from rgbd_seg_ros.core.input_size import InputBound, max_input_pixels
from rgbd_seg_ros.core.node_metrics import FrameTiming, NodeMetrics
from rgbd_seg_ros.core.pairing import Triple
from rgbd_seg_ros.errors import FrameError
from rgbd_seg_ros.inference.engine import CloudOptions
from rgbd_seg_ros.modes import OversizePolicy
from rgbd_seg_ros.ros import conversions, serialized
from rgbd_seg_ros.ros.frame_input import deserialize_triple, frame_arrays
from rgbd_seg_ros.ros.node_params import OUTPUTS
from rgbd_seg_ros.ros.raw_publish import RawPublisher
from rgbd_seg_ros.ros.serialized import SerializedParts
from rgbd_seg_ros.ros.skips import InputReport

if TYPE_CHECKING:
    from rgbd_seg_ros.inference.engine import Engine


class ModelSource(Protocol):
    """Where the worker finds the current engine (ros/model_slot.py's ModelSlot)."""

    @property
    def engine(self) -> Engine | None: ...

    def frame_seen(self, height: int, width: int) -> None: ...


class OutputSink(Protocol):
    """Where the outputs go (``PublisherSink`` in the node): one topic per output name."""

    def listened(self, names: Iterable[str]) -> set[str]:
        """Those of ``names`` somebody subscribes to."""
        ...

    def publish(self, name: str, payload: Any) -> None:
        """Publish a serialised message (SerializedParts) or a message object on ``name``."""
        ...


class PublisherSink:
    """The node's output publishers as an OutputSink; serialised outputs are published with
    the GIL released (ros/raw_publish.py), so the executor keeps taking inputs meanwhile."""

    def __init__(self, publishers: Mapping[str, Any], raw: RawPublisher | None = None) -> None:
        self._publishers = dict(publishers)
        self._raw = raw or RawPublisher()

    def listened(self, names: Iterable[str]) -> set[str]:
        return {
            name
            for name in names
            if name in self._publishers and self._publishers[name].get_subscription_count() > 0
        }

    def publish(self, name: str, payload: Any) -> None:
        if isinstance(payload, SerializedParts):
            self._raw.publish(self._publishers[name], payload)
        else:
            self._publishers[name].publish(payload)


@dataclass(frozen=True)
class WorkerSettings:
    """The node parameters the worker reads, as one value replaced whole on a change."""

    publish: frozenset[str]  # outputs whose publish.<name> is on
    intrinsics_tolerance: float
    overlay_alpha: float
    cloud: CloudOptions
    max_input_pixels: int = 0  # 0: automatic (core/input_size.py)
    oversize_policy: OversizePolicy = 'downscale'

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> WorkerSettings:
        return cls(
            publish=frozenset(name for name in OUTPUTS if params[f'publish.{name}']),
            intrinsics_tolerance=params['intrinsics_tolerance'],
            overlay_alpha=params['overlay_alpha'],
            cloud=CloudOptions(
                params['points.stride'],
                params['points.max_range'],
                params['points.min_confidence'],
                params['points.organized'],
            ),
            max_input_pixels=params['max_input_pixels'],
            oversize_policy=params['oversize_policy'],
        )


class SegmentWorker:
    """The processing loop on its own thread; ``process`` handles one triple."""

    def __init__(
        self,
        models: ModelSource,
        handover: FrameHandover[Triple],
        metrics: NodeMetrics,
        sink: OutputSink,
        settings: WorkerSettings,
        skip: InputReport,
        clock_ns: Callable[[], int],
    ) -> None:
        self._models = models
        self._handover = handover
        self._metrics = metrics
        self._sink = sink
        self._settings = settings
        self._skip = skip
        self._clock_ns = clock_ns
        self._camera_info = serialized.Restamped()
        self._thread = threading.Thread(target=self._loop, name='segment_worker', daemon=True)

    def configure(self, settings: WorkerSettings) -> None:
        """Use ``settings`` from the next frame on (parameter changes)."""
        self._settings = settings

    def start(self) -> None:
        self._thread.start()

    def wants_output(self) -> bool:
        """Whether somebody subscribes to an output that is switched on (the health rules
        expect outputs at the input rate only then)."""
        return bool(self._sink.listened(self._settings.publish))

    def stop(self) -> None:
        """Close the hand-over and wait for the frame in progress to finish."""
        self._handover.close()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    def _loop(self) -> None:
        while (triple := self._handover.take()) is not None:
            try:
                self.process(triple)
            except Exception as err:  # a worker that dies silently stops the node's output
                self._skip('internal_error', f'{type(err).__name__}: {err}')

    def process(self, triple: Triple) -> None:
        """Segment one triple and publish what is wanted, or count why not."""
        picked_up = self._clock_ns()
        settings = self._settings
        engine = self._models.engine
        if engine is None:
            self._metrics.drop('no_model')
            return
        wanted = self._sink.listened(name for name in OUTPUTS if name in settings.publish)
        if not wanted:
            self._metrics.drop('no_subscribers')
            return
        try:
            colour, depth, info = deserialize_triple(triple)
            limit = max_input_pixels(settings.max_input_pixels, engine.fixed_network_size)
            bound = InputBound(limit, settings.oversize_policy)
            arrays = frame_arrays(colour, depth, info, settings.intrinsics_tolerance, bound)
        except FrameError as err:
            self._skip(getattr(err, 'reason', 'bad_frame'), str(err))
            return
        for name, detail in arrays.notes:
            self._skip.note(name, detail)
        if not _has_valid_depth(arrays.depth):
            if not engine.runs_without_depth:
                self._skip('no_valid_depth', 'no valid depth pixel (all 0, NaN or inf, or none)')
                return
            wanted.discard('points')  # the model runs on colour alone; a cloud needs depth
            self._metrics.count('frames_without_depth')
        self._models.frame_seen(*arrays.rgb.shape[:2])
        publisher = OutputPublisher(
            self._sink,
            self._clock_ns,
            wanted,
            colour.header,
            _CameraInfoSource(info, triple.info.payload[1], self._camera_info),
        )
        decoded = self._clock_ns()
        prediction = engine.predict(
            arrays.rgb,
            arrays.depth,
            arrays.K,
            outputs=wanted,
            overlay_alpha=settings.overlay_alpha,
            cloud=settings.cloud,
            emit=publisher.publish,
            cloud_buffer=publisher.cloud_buffer,
        )
        publisher.finish(prediction.labels.shape)
        timings = prediction.timings_ms
        self._metrics.record_frame(
            FrameTiming(
                stamp_ns=Time.from_msg(colour.header.stamp).nanoseconds,
                picked_up_ns=picked_up,
                decoded_ns=decoded,
                done_ns=publisher.last_at or self._clock_ns(),
                labels_ns=publisher.labels_at,
                forward_s=timings['forward'] / 1e3,
                preprocess_s=timings['preprocess'] / 1e3,
                cloud_s=timings['cloud'] / 1e3 if 'cloud' in timings else None,
            )
        )


class OutputPublisher:
    """Publishes one frame's outputs as the engine emits them: images serialised in one copy,
    the cloud written by the engine into the message it is published as (no copy). Public for
    ``tools/publish_cost.py``, which measures this path without the node around it; there
    ``info`` is None (no camera_info output)."""

    def __init__(
        self,
        sink: OutputSink,
        clock_ns: Callable[[], int],
        wanted: set[str],
        header: Any,
        info: _CameraInfoSource | None,
    ) -> None:
        self._sink = sink
        self._clock_ns = clock_ns
        self._wanted = wanted
        self._header = header
        self._info = info
        self._info_sent = False
        self._cloud: serialized.CloudMessage | None = None
        self.labels_at: int | None = None  # clock ns when the labels were published
        # Clock ns when the last publish returned. The engine's side thread publishes the
        # colour images, so the frame's last output may go out while the worker still waits
        # for that thread: the moment the engine returns would count the worker's wake-up.
        self.last_at: int | None = None
        self._last_lock = threading.Lock()

    def cloud_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """The engine's ``cloud_buffer``: the point records of the message to be published."""
        self._cloud = serialized.CloudMessage(shape, self._header)
        return self._cloud.records

    def publish(self, name: str, array: np.ndarray) -> None:
        """The engine's ``emit``: serialise ``array`` as output ``name`` and publish it."""
        if name not in self._wanted:
            return
        if name == 'points':
            cloud, self._cloud = self._cloud, None
            if cloud is not None and array is cloud.records:  # written in place
                self._send(name, cloud.parts())
            else:
                self._send(name, serialized.cloud_parts(array, self._header))
            return
        # The engine gives uint8 labels while every label id fits, uint16 beyond.
        label_encoding = 'mono8' if array.dtype == np.uint8 else 'mono16'
        encoding = {'labels': label_encoding, 'confidence': '32FC1'}.get(name, 'rgb8')
        sent = self._send(name, serialized.image_parts(array, encoding, self._header))
        if name == 'labels':
            self.labels_at = sent
            self._send_info(array.shape)

    def finish(self, shape: tuple[int, ...]) -> None:
        """camera_info when no labels were published (it follows the labels otherwise)."""
        self._send_info(shape)

    def _send_info(self, shape: tuple[int, ...]) -> None:
        if self._info_sent or self._info is None or 'camera_info' not in self._wanted:
            return
        self._send('camera_info', self._info.parts(shape[1], shape[0], self._header))
        self._info_sent = True

    def _send(self, name: str, payload: Any) -> int:
        """Publish ``payload`` as ``name``; the clock ns when the publish returned."""
        self._sink.publish(name, payload)
        now = self._clock_ns()
        with self._last_lock:  # the worker and the engine's side thread both publish
            self.last_at = now if self.last_at is None else max(self.last_at, now)
        return now


@dataclass(frozen=True)
class _CameraInfoSource:
    """The input camera_info (message and bytes) and the worker's serialised output copy."""

    message: Any
    data: bytes
    cache: serialized.Restamped

    def parts(self, width: int, height: int, header: Any) -> SerializedParts:
        """The camera_info output for a ``width`` x ``height`` output in ``header``."""
        # Everything but the input's stamp decides the output (bytes 4-11 are the stamp).
        key = (self.data[12:], width, height, str(header.frame_id))
        return self.cache.parts(
            key,
            conversions.stamp_ns(header),
            lambda: conversions.camera_info_msg(self.message, width, height, header),
        )


def _has_valid_depth(depth: np.ndarray) -> bool:
    if depth.dtype == np.uint16:
        return bool(depth.any())
    return bool(np.any(np.isfinite(depth) & (depth > 0)))
