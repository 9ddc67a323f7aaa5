"""trainer_node: fine-tune a model from recordings and hot-swap it into the running node.

The ROS side only orchestrates: ``~/start`` launches a separate process running
``training.job.run_job`` (recording -> dataset -> training), so the node keeps answering
services and publishing progress while the CPU/GPU trains. Progress comes back over a
multiprocessing queue and is republished on ``~/progress`` (JSON in std_msgs/String) and
``/diagnostics``. ``~/cancel`` asks the job to stop at the next step; it saves its last
checkpoint (and does not swap it in). When the job finishes, the new checkpoint is set as
the ``checkpoint`` parameter of the target segmentation node, which hot-swaps it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import time
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rcl_interfaces.srv import SetParameters
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.client import Client
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import Trigger

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
    'label_topic': ('', "Label topic for label_source 'topic' (empty: detected)."),
    'pseudo_confidence': (0.9, 'Pseudo-label pixels below this confidence are ignored.'),
    'base_checkpoint': ('', 'Checkpoint to fine-tune (empty: the embedded default model).'),
    'recipe': ('finetune', 'Training recipe: a name under config/train/ or a YAML path.'),
    'overrides': ([''], "Recipe overrides as 'dotted.key=value' strings."),
    'output_dir': ('', 'Where datasets and runs go (empty: $ROS_HOME/rgbd_seg_training).'),
    'target_node': ('/segmentation_node', 'Segmentation node that receives the new model.'),
}


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
        self.state: dict[str, Any] = {'stage': 'idle'}
        group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, '~/start', self._on_start, callback_group=group)
        self.create_service(Trigger, '~/cancel', self._on_cancel, callback_group=group)
        self._progress_pub = self.create_publisher(String, '~/progress', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._set_client: Client | None = None
        self._client_group = ReentrantCallbackGroup()
        self.create_timer(0.2, self._poll, callback_group=group)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=group)

    # ---- services -----------------------------------------------------------------------------
    def _on_start(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
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
        self._process = self._ctx.Process(
            target=job_entry,
            args=(job, self._events, self._stop),
            name='rgbd_seg_training',
            daemon=False,
        )
        self._process.start()
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
        run_dir = Path(output) / time.strftime('%Y%m%d-%H%M%S')
        return {
            'recordings': recordings,
            'topics': {k: get(f'{k}_topic') for k in ('rgb', 'depth', 'info', 'label')},
            'label_source': get('label_source'),
            'pseudo_confidence': float(get('pseudo_confidence')),
            'base_checkpoint': get('base_checkpoint'),
            'recipe': get('recipe'),
            'overrides': [o for o in get('overrides') if o],
            'output_dir': str(run_dir),
        }

    # ---- progress -----------------------------------------------------------------------------
    def _poll(self) -> None:
        if self._events is None:
            return
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self._handle(event)
        if (
            self._process is not None
            and not self._process.is_alive()
            and self.state.get('stage') not in ('finished', 'failed', 'cancelled', 'idle')
        ):
            self._process.join(timeout=1.0)
            self._handle(
                {
                    'event': 'failed',
                    'error': f'training process exited with {self._process.exitcode}',
                }
            )

    def _handle(self, event: dict[str, Any]) -> None:
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
        if kind == 'finished' and event.get('checkpoint'):
            self._hot_swap(str(event['checkpoint']))

    def _hot_swap(self, checkpoint: str) -> None:
        target = self.get_parameter('target_node').value.rstrip('/')
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
        status = DiagnosticStatus(name=f'{self.get_name()}: training', hardware_id='trainer')
        status.level = (
            DiagnosticStatus.ERROR if self.state.get('stage') == 'failed' else DiagnosticStatus.OK
        )
        status.message = str(self.state.get('stage'))
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in self.state.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)

    def close(self) -> None:
        """Stop a running job cleanly when the node shuts down."""
        if self._process is not None and self._process.is_alive():
            self._stop.set()
            self._process.join(timeout=30.0)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5.0)


def _default_output() -> Path:
    import os

    base = os.environ.get('ROS_HOME') or str(Path.home() / '.ros')
    return Path(base) / 'rgbd_seg_training'


def main(args: list[str] | None = None) -> int:
    """Console-script entry point."""
    from rgbd_seg_ros.ros.runtime import run_node

    return run_node(TrainerNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
