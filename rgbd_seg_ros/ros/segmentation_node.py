"""segmentation_node: synchronised RGB-D in, semantic images and clouds out.

Threading model (doc/design.md §2.2, §2.5, §2.9): subscription callbacks only decode stamps and
hand the newest complete triple to a single worker thread, which owns the model. A triple the
worker has not picked up yet is replaced by a newer one (counted as ``superseded``), so nothing
ever queues behind the GPU. The model reference is swapped atomically between frames, which makes a
hot-swap invisible to any single frame.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import TYPE_CHECKING, Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger

from rgbd_seg_ros.core.handover import FrameHandover
from rgbd_seg_ros.core.node_metrics import NodeMetrics
from rgbd_seg_ros.core.pairing import ApproxTimePairer, Triple
from rgbd_seg_ros.core.stamps import NS_PER_S, stamp_problem
from rgbd_seg_ros.inference.threads import configure_cpu_threads
from rgbd_seg_ros.modes import EXECUTOR_KINDS, ExecutorKind, as_choice
from rgbd_seg_ros.ros import conversions, param_bridge, qos
from rgbd_seg_ros.ros.diagnostics import PipelineDiagnostics, health_limits
from rgbd_seg_ros.ros.model_slot import MODEL_PARAMS, ModelSlot, classes_message
from rgbd_seg_ros.ros.segment_worker import PublisherSink, SegmentWorker, WorkerSettings
from rgbd_seg_ros.ros.skips import SkipReporter
from rgbd_seg_ros.ros.topics import INPUT_TOPICS, OUTPUT_TOPICS, colour_topic

if TYPE_CHECKING:
    from rgbd_seg_ros.inference.engine import Engine

CLASSES_TOPIC = 'segmentation/classes'
STREAM_REASONS = {'rgb': 'bad_colour', 'depth': 'bad_depth', 'info': 'bad_camera_info'}


class SegmentationNode(Node):
    """Pairs inputs, runs the engine on a worker thread, publishes every output."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('segmentation_node', **kwargs)
        self.params = param_bridge.declare_all(self)
        self.metrics = NodeMetrics()
        self.skip = SkipReporter(self.metrics, self.get_logger())
        self._last_depth_s = time.monotonic()  # depth dropout counts from the start
        self.pairer = ApproxTimePairer(int(self.params['slop'] * 1e9), self.params['queue_size'])
        self.handover: FrameHandover[Triple] = FrameHandover(
            self.metrics, self.params['wait_for_fresh_frame']
        )
        self.cpu_threads = configure_cpu_threads(self.params['cpu_threads'])
        self.models = ModelSlot(self.get_logger(), on_loaded=self._announce_classes)
        self.worker = SegmentWorker(
            self.models,
            self.handover,
            self.metrics,
            PublisherSink(self._make_publishers()),
            WorkerSettings.from_params(self.params),
            self.skip,
            self._now_ns,
        )
        self.camera_frame = ''  # frame_id of the latest colour message
        self.diagnostics = PipelineDiagnostics(
            f'{self.get_fully_qualified_name()}: pipeline',
            self.metrics,
            self.pairer.counters,
            lambda: self.models.engine,
            lambda: self.cpu_threads,
            camera_frame=lambda: self.camera_frame,
            outputs_wanted=self.worker.wants_output,
            limits=health_limits(self.params),
        )
        self.models.load_initial(self.params)
        param_bridge.install_validator(self, self._apply_params)
        self._make_subscriptions()
        self.create_service(
            Trigger, '~/reload', self._on_reload, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self._make_diagnostics_timer(self.params['diagnostics_period'])
        self.worker.start()
        self.get_logger().info('segmentation_node ready: ' + self.models.describe())

    # ---- wiring -------------------------------------------------------------------------------
    def _make_publishers(self) -> dict[str, Publisher]:
        """The output publishers by output name; also the latched classes publisher."""
        types = {'points': PointCloud2, 'camera_info': CameraInfo}
        latched = QoSProfile(
            depth=1,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        self._classes_pub = self.create_publisher(String, CLASSES_TOPIC, latched)
        return {
            name: self.create_publisher(
                types.get(name, Image),
                topic,
                qos.output_qos(),
                qos_overriding_options=qos.overridable(),
            )
            for name, topic in OUTPUT_TOPICS.items()
        }

    def _make_diagnostics_timer(self, period_s: float) -> None:
        publisher = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        def publish() -> None:
            publisher.publish(self.diagnostics.array(self.get_clock().now().to_msg()))

        self.create_timer(period_s, publish, callback_group=MutuallyExclusiveCallbackGroup())

    def _configure_parts(self) -> None:
        """Hand changed parameters to the parts that read them while running."""
        self.handover.wait_for_fresh = self.params['wait_for_fresh_frame']
        self.worker.configure(WorkerSettings.from_params(self.params))
        self.diagnostics.configure(health_limits(self.params))

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _announce_classes(self, engine: Engine) -> None:
        self._classes_pub.publish(classes_message(engine))

    def _make_subscriptions(self) -> None:
        transport = self.params['image_transport']
        colour = colour_topic(self.resolve_topic_name(INPUT_TOPICS['rgb']), transport)
        group = ReentrantCallbackGroup()
        # raw=True: callbacks only read the stamp from the CDR bytes; the worker deserialises
        # just the triple it segments, so frames that are dropped anyway cost no conversion
        # (and no GIL time) at camera rate.
        for stream, topic, msg_type in (
            ('rgb', colour, CompressedImage if transport == 'compressed' else Image),
            ('depth', INPUT_TOPICS['depth'], Image),
            ('info', INPUT_TOPICS['info'], CameraInfo),
        ):
            self.create_subscription(
                msg_type,
                topic,
                functools.partial(self._on_input, stream, msg_type),
                qos.input_qos(self.params['queue_size']),
                callback_group=group,
                qos_overriding_options=qos.overridable(),
                raw=True,
            )

    # ---- callbacks ----------------------------------------------------------------------------
    def _on_input(self, stream: str, msg_type: type, data: bytes) -> None:
        now = time.monotonic()
        self.metrics.arrived(stream, now)
        try:
            sec, nanosec = conversions.cdr_stamp(data)
        except ValueError as err:
            self.skip(STREAM_REASONS[stream], str(err))
            return
        problem = stamp_problem(sec, nanosec)
        if problem:  # refused here, so no output ever carries it
            self.skip('invalid_stamp', f'{stream}: {problem}')
            return
        stamp = sec * NS_PER_S + nanosec
        if stream == 'rgb':
            with contextlib.suppress(ValueError):
                self.camera_frame = conversions.cdr_frame_id(data)
        if stamp == 0:
            self.skip('zero_stamp', f'{stream} message without a stamp')
            return
        if stream == 'depth':
            self._last_depth_s = now
        triple: Triple | None = self.pairer.add(stream, stamp, (msg_type, data))
        if triple is None and stream != 'depth' and self._depth_dropped_out(now):
            triple = self.pairer.pair_without_depth()
            if triple is not None:
                self.metrics.count('paired_without_depth')
        if triple is not None:
            self.metrics.arrived('paired', now)
            self.handover.submit(triple)

    def _depth_dropped_out(self, now: float) -> bool:
        """No depth for ``depth_timeout`` s and a model that segments without it (§2.8)."""
        engine = self.models.engine
        return (
            engine is not None
            and engine.runs_without_depth
            and now - self._last_depth_s > self.params['depth_timeout']
        )

    def _apply_params(self, changes: dict[str, Any]) -> str | None:
        if MODEL_PARAMS & set(changes):
            merged = {**self.params, **changes}
            reason = self.models.swap(merged)
            if reason:
                return reason
        if 'cpu_threads' in changes:
            self.cpu_threads = configure_cpu_threads(changes['cpu_threads'])
        if {'slop', 'queue_size'} & set(changes):
            merged = {**self.params, **changes}
            self.pairer.configure(int(merged['slop'] * 1e9), merged['queue_size'])
        self.params.update(changes)
        self._configure_parts()
        return None

    def _on_reload(
        self, _request: Trigger.Request, response: Trigger.Response
    ) -> Trigger.Response:
        reason = self.models.reload()  # what the last successful swap loaded (model_slot)
        response.success = reason is None
        response.message = reason or ('reloaded ' + self.models.describe())
        return response

    # ---- shutdown -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker before the node is destroyed (called by runtime.run_node)."""
        self.models.close()  # an in-flight load is abandoned, never waited for
        self.worker.stop()


# One executor thread: the callbacks only read stamps, and a thread pool's hand-offs cost more
# CPU and GIL time than they save (doc/design.md §2.2).
EXECUTOR_THREADS = 1


def executor_kind(node: Node) -> ExecutorKind:
    """Which one-thread executor the node asked for (its read-only ``executor`` parameter)."""
    params = getattr(node, 'params', {})
    return as_choice(params.get('executor', 'auto'), EXECUTOR_KINDS, 'executor')
