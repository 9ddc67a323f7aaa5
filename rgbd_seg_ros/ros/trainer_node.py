"""trainer_node: fine-tune a model from recordings and hot-swap it into the running node.

The ROS side only orchestrates: ``~/start`` launches a separate process running
``training.job.run_job`` (recording -> dataset -> training), so the node keeps answering
services and publishing progress while the CPU/GPU trains. Progress comes back over a
multiprocessing queue and is republished on ``~/progress`` (JSON in std_msgs/String) and
``/diagnostics``. ``~/cancel`` asks the job to stop at the next step; it saves its last
checkpoint (and does not swap it in). When the job finishes, the new checkpoint is set as
the ``checkpoint`` parameter of the target segmentation node, which hot-swaps it, but only
past the quality gate (``training.gate``): the job scores the new model and the one the node
is serving (its ``checkpoint`` parameter, or the embedded default when that is empty) on the
same held-out frames through the node's pipeline, and the swap happens when the new mIoU beats
the old by more than ``gate_margin`` (or ``force_swap`` is set). Otherwise the serving model
stays and ``~/progress`` and ``/diagnostics`` say why.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.client import Client
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import Trigger

from rgbd_seg_ros.paths import default_model
from rgbd_seg_ros.training.gate import GateScores, decide

PARAMS: dict[str, tuple[Any, str]] = {
    'recordings': ([''], 'Recording paths (rosbag2 folders/files, ROS 1 .bag) to train on.'),
    'rgb_topic': ('', 'Colour topic in the recordings (empty: detected).'),
    'depth_topic': ('', 'Depth topic in the recordings (empty: detected).'),
    'info_topic': ('', 'camera_info topic in the recordings (empty: detected).'),
    'label_source': (
        'topic',
        "'topic' (a label topic in the recordings) or 'pseudo' "
        '(labels predicted by base_checkpoint above a confidence threshold).',
    ),
    'label_topic': (
        '',
        "Label topic for label_source 'topic' (empty: detected, the one Image topic named like "
        'labels (label, semantic, segment, class) with a class-id encoding (mono8, 8UC1, '
        'mono16, 16UC1); several or none fails the job, naming the topics found).',
    ),
    'pseudo_confidence': (0.9, 'Pseudo-label pixels below this confidence are ignored.'),
    'base_checkpoint': ('', 'Checkpoint to fine-tune (empty: the embedded default model).'),
    'recipe': ('finetune', 'Training recipe: a name under config/train/ or a YAML path.'),
    'overrides': ([''], "Recipe overrides as 'dotted.key=value' strings."),
    'output_dir': ('', 'Where datasets and runs go (empty: $ROS_HOME/rgbd_seg_training).'),
    'target_node': ('/segmentation_node', 'Segmentation node that receives the new model.'),
    'gate_margin': (
        0.0,
        'mIoU (0..1) by which the candidate must beat the serving model on the held-out frames '
        'before it is swapped in; 0: any improvement.',
    ),
    'gate_max_frames': (100, 'Held-out frames the gate scores per model (0: all).'),
    'force_swap': (False, 'Swap the new model in even when the quality gate would keep the old.'),
}


_ENDED = ('finished', 'failed', 'cancelled')  # stages after which the job process exits


class TrainerNode(Node):
    """Runs one fine-tuning job at a time in a child process."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('trainer_node', **kwargs)
        for name, (default, description) in PARAMS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self._ctx = mp.get_context('spawn')
        self._process: mp.process.BaseProcess | None = None
        self._events: Any = None
        self._stop: Any = None
        self._replies: Any = None  # answers to the job's questions (which model is serving)
        self.state: dict[str, Any] = {'stage': 'idle'}
        group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, '~/start', self._on_start, callback_group=group)
        self.create_service(Trigger, '~/cancel', self._on_cancel, callback_group=group)
        self._progress_pub = self.create_publisher(String, '~/progress', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._set_client: Client | None = None
        self._get_client: Client | None = None
        self._client_group = ReentrantCallbackGroup()
        self.create_timer(0.2, self._poll, callback_group=group)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=group)

    # ---- services -----------------------------------------------------------------------------
    def _on_start(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        if self._process is not None and self.state.get('stage') in _ENDED:
            self._process.join(timeout=10.0)  # it reported its end and is exiting
        if self._process is not None and self._process.is_alive():
            res.success, res.message = False, 'a training job is already running'
            return res
        try:
            job = self._job_spec()
        except ValueError as err:
            res.success, res.message = False, str(err)
            return res
        from rgbd_seg_ros.training.job import job_entry

        self._events = self._ctx.Queue()
        self._stop = self._ctx.Event()
        self._replies = self._ctx.Queue()
        # The job dies with this process (PR_SET_PDEATHSIG, armed in the job). The kernel ties
        # it to the starting thread: an executor thread, which lives as long as the node.
        self._process = self._ctx.Process(
            target=job_entry,
            args=(job, self._events, self._stop, self._replies, os.getpid()),
            name='rgbd_seg_training',
            daemon=False,
        )
        # Blocked while it starts: the job inherits the mask and ignores SIGINT once running
        # (training.job.ignore_interrupts); only this executor thread's mask changes.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self.state = {'stage': 'starting', 'output_dir': job['output_dir']}
        res.success, res.message = True, f'training started, output in {job["output_dir"]}'
        return res

    def _on_cancel(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        if self._process is None or not self._process.is_alive():
            res.success, res.message = False, 'no training job is running'
            return res
        self._stop.set()
        res.success, res.message = True, 'cancel requested; the job saves its last checkpoint'
        return res

    def _job_spec(self) -> dict[str, Any]:
        def get(name: str) -> Any:
            return self.get_parameter(name).value

        recordings = [r for r in get('recordings') if r]
        if not recordings:
            raise ValueError('parameter recordings is empty')
        missing = [r for r in recordings if not Path(r).exists()]
        if missing:
            raise ValueError(f'recordings not found: {missing}')
        if get('label_source') not in ('topic', 'pseudo'):
            raise ValueError("label_source must be 'topic' or 'pseudo'")
        output = get('output_dir') or str(_default_output())
        run_dir = _new_run_dir(Path(output))
        return {
            'recordings': recordings,
            'topics': {k: get(f'{k}_topic') for k in ('rgb', 'depth', 'info', 'label')},
            'label_source': get('label_source'),
            'pseudo_confidence': float(get('pseudo_confidence')),
            'base_checkpoint': get('base_checkpoint'),
            'recipe': get('recipe'),
            'overrides': [o for o in get('overrides') if o],
            'output_dir': str(run_dir),
            'gate_max_frames': int(get('gate_max_frames')),
        }

    # ---- progress -----------------------------------------------------------------------------
    def _poll(self, swap: bool = True) -> None:
        """Republish the job's events; ``swap=False`` (shutting down): no gate, no questions."""
        if self._events is None:
            return
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.get('event') == 'serving?':
                if swap:
                    self._lookup_serving()
                continue
            self._handle(event, swap)
        if (
            self._process is not None
            and not self._process.is_alive()
            and self.state.get('stage') not in (*_ENDED, 'idle')
        ):
            self._process.join(timeout=1.0)
            self._handle(
                {
                    'event': 'failed',
                    'error': f'training process exited with {self._process.exitcode}',
                },
                swap,
            )

    def _handle(self, event: dict[str, Any], swap: bool = True) -> None:
        kind = event.get('event')
        self.state.update({k: v for k, v in event.items() if k != 'event'})
        if kind in ('finished', 'cancelled', 'failed'):
            self.state['stage'] = kind
        elif 'stage' not in event:
            self.state['stage'] = kind or self.state.get('stage', 'training')
        msg = String()
        msg.data = json.dumps({'event': kind, **self.state}, default=str)
        self._progress_pub.publish(msg)
        if kind == 'failed':
            self.get_logger().error(f'training failed: {event.get("error")}')
        if kind == 'finished' and event.get('checkpoint') and swap:
            self._gate(str(event['checkpoint']), event.get('gate'))

    # ---- quality gate -------------------------------------------------------------------------
    def _target(self) -> str:
        return str(self.get_parameter('target_node').value).rstrip('/')

    def _lookup_serving(self) -> None:
        """Ask the target which checkpoint it serves; the answer goes to the job."""
        target = self._target()
        if self._get_client is None or self._get_client.srv_name != f'{target}/get_parameters':
            self._get_client = self.create_client(
                GetParameters, f'{target}/get_parameters', callback_group=self._client_group
            )
        if not self._get_client.wait_for_service(timeout_sec=5.0):
            self._reply_serving(None, f'{target} is not available')
            return
        future = self._get_client.call_async(GetParameters.Request(names=['checkpoint']))
        future.add_done_callback(self._serving_answered)

    def _serving_answered(self, future: Any) -> None:
        try:
            values = future.result().values
        except Exception as err:  # a failed call is an answer too: the gate must go on
            self._reply_serving(None, f'cannot read the target checkpoint: {err}')
            return
        if not values or values[0].type != ParameterType.PARAMETER_STRING:
            self._reply_serving(None, 'the target has no string parameter "checkpoint"')
            return
        # An empty parameter means the node serves its embedded default (if installed).
        default = default_model()
        path = values[0].string_value or (str(default) if default else '')
        self._reply_serving(path, None)

    def _reply_serving(self, checkpoint: str | None, error: str | None) -> None:
        if error:
            self.get_logger().warning(f'quality gate: {error}')
        if self._replies is not None:
            self._replies.put({'checkpoint': checkpoint, 'error': error})

    def _gate(self, checkpoint: str, gate: dict[str, Any] | None) -> None:
        """Swap ``checkpoint`` in when the gate's figures allow it; otherwise say why not."""
        if gate is None:
            decision_swap, reason = False, 'the job reported no gate figures'
        else:
            decision = decide(
                GateScores.from_dict(gate),
                margin=float(self.get_parameter('gate_margin').value),
                force=bool(self.get_parameter('force_swap').value),
            )
            decision_swap, reason = decision.swap, decision.reason
        self.state['gate_decision'] = 'swap' if decision_swap else 'keep'
        self.state['gate_reason'] = reason
        if decision_swap:
            self.get_logger().info(f'quality gate: {reason}')
            self._hot_swap(checkpoint)
            return
        self.get_logger().warning(f'quality gate: {reason}; new model left at {checkpoint}')
        self.state['swap'] = 'kept serving model'
        msg = String()
        msg.data = json.dumps({'event': 'swap_skipped', **self.state}, default=str)
        self._progress_pub.publish(msg)

    # ---- hot-swap -----------------------------------------------------------------------------
    def _hot_swap(self, checkpoint: str) -> None:
        target = self._target()
        if self._set_client is None or self._set_client.srv_name != f'{target}/set_parameters':
            self._set_client = self.create_client(
                SetParameters, f'{target}/set_parameters', callback_group=self._client_group
            )
        if not self._set_client.wait_for_service(timeout_sec=5.0):
            self.get_logger().error(f'{target} is not available; new model at {checkpoint}')
            self.state['swap'] = 'target unavailable'
            return
        request = SetParameters.Request(
            parameters=[Parameter('checkpoint', value=checkpoint).to_parameter_msg()]
        )
        future = self._set_client.call_async(request)
        future.add_done_callback(lambda f: self._swap_done(f, checkpoint))

    def _swap_done(self, future: Any, checkpoint: str) -> None:
        result = future.result().results[0]
        self.state['swap'] = 'ok' if result.successful else f'refused: {result.reason}'
        msg = String()
        msg.data = json.dumps(
            {'event': 'swapped' if result.successful else 'swap_refused', **self.state},
            default=str,
        )
        self._progress_pub.publish(msg)
        log = self.get_logger()
        (log.info if result.successful else log.error)(
            f'hot-swap of {checkpoint}: {self.state["swap"]}'
        )

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(
            name=f'{self.get_fully_qualified_name()}: training', hardware_id='trainer'
        )
        status.level = DiagnosticStatus.OK
        status.message = str(self.state.get('stage'))
        if self.state.get('stage') == 'failed':
            status.level = DiagnosticStatus.ERROR
        elif self.state.get('gate_decision') == 'keep':
            # The job worked but its model was not good enough: worth a look, not an error.
            status.level = DiagnosticStatus.WARN
            status.message = f'{status.message}: {self.state.get("gate_reason")}'
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in self.state.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)

    def close(self) -> None:
        """Stop a running job cleanly when the node shuts down, and say how it ended.

        The job saves its last checkpoint and reports ``cancelled``; that event is published
        on ~/progress (and waited for until subscribers have it, briefly) before the node goes,
        since nothing spins any more to publish it later.
        """
        if self._process is not None and self._process.is_alive():
            self._stop.set()
            deadline = time.monotonic() + 60.0
            while self._process.is_alive() and time.monotonic() < deadline:
                # Drained while waiting: a job whose queue is full cannot exit.
                self._process.join(timeout=0.2)
                self._poll(swap=False)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5.0)
        if self._events is not None:
            self._poll(swap=False)
            self._progress_pub.wait_for_all_acked(Duration(seconds=2))


def _new_run_dir(output: Path) -> Path:
    """A job folder named by its start time that no earlier job used (two jobs may start
    within one second)."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    run_dir, n = output / stamp, 1
    while run_dir.exists():
        n += 1
        run_dir = output / f'{stamp}-{n}'
    return run_dir


def _default_output() -> Path:
    base = os.environ.get('ROS_HOME') or str(Path.home() / '.ros')
    return Path(base) / 'rgbd_seg_training'
