"""A fine-tuning job as the trainer node runs it: recordings -> dataset -> training.

It runs in a child process (``job_entry``) so the ROS node stays responsive. Everything it
needs arrives as a plain dict (picklable, no ROS types) and everything it reports goes back as
dicts on a queue. When a base checkpoint is given, the recipe's backend, its options and the
input spec are taken from that checkpoint, so the fine-tuned model runs exactly like the one it
replaces; only the class list may change (from the recording's labels).

Before the parent may hot-swap the result, the job scores it and the model the segmentation
node is serving on the same held-out frames (``training.gate``); which model is serving it
asks the parent (``serving?`` event, answer on the ``replies`` queue), which asks the node.
"""

from __future__ import annotations

import queue
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rgbd_seg_ros.backends.checkpoint import read_checkpoint_meta
from rgbd_seg_ros.core.parent_death import die_with_parent
from rgbd_seg_ros.data.convert import ConvertOptions, convert
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.inference.labeller import CheckpointLabeller
from rgbd_seg_ros.paths import default_model
from rgbd_seg_ros.training.config import TrainConfig, load_config
from rgbd_seg_ros.training.gate import GateScores, ServingModel
from rgbd_seg_ros.training.gate_scoring import record_scores, score_models
from rgbd_seg_ros.training.trainer import run_training

Progress = Callable[[dict[str, Any]], None]
ServingLookup = Callable[[], ServingModel]
DEFAULT_GATE_FRAMES = 100  # held-out frames scored per model (evenly spread); 0: all


def base_checkpoint(job: dict[str, Any]) -> str | None:
    """The checkpoint to fine-tune: the job's, else the embedded default (if shipped)."""
    if job.get('base_checkpoint'):
        return str(job['base_checkpoint'])
    default = default_model()
    return str(default) if default else None


def make_dataset(job: dict[str, Any], base: str | None, progress: Progress) -> Path:
    """Convert the job's recordings into ``<output_dir>/dataset`` (resumable)."""
    root = Path(job['output_dir']) / 'dataset'
    topics = job.get('topics', {})
    pseudo = job.get('label_source') == 'pseudo'
    if pseudo and not base:
        raise ConfigError('pseudo-labels need a base checkpoint')
    options = ConvertOptions(
        colour_topic=topics.get('rgb') or None,
        depth_topic=topics.get('depth') or None,
        info_topic=topics.get('info') or None,
        label_topic=None if pseudo else (topics.get('label') or None),
        detect_label_topic=not pseudo and not topics.get('label'),
        confidence_threshold=float(job.get('pseudo_confidence', 0.9)),
        progress=False,
        jobs=int(job.get('convert_jobs', 1)),
    )
    if pseudo and base:
        labeller = CheckpointLabeller(base, device='cpu')
        options.labeller = labeller
        options.classes, options.ignore_index = labeller.classes()
    progress({'event': 'convert', 'stage': 'convert', 'dataset': str(root)})
    report = convert(job['recordings'], root, options, log=lambda text: None)
    progress({'event': 'converted', 'stage': 'convert', 'frames': report.totals.written})
    return root


def make_config(job: dict[str, Any], dataset: Path, base: str | None) -> TrainConfig:
    """The recipe with the job's overrides, pointed at the dataset and the base model."""
    config = load_config(job.get('recipe') or 'finetune', list(job.get('overrides', ())))
    config.data.root = str(dataset)
    config.output_dir = str(Path(job['output_dir']) / 'train')
    config.progress_bar = False
    if base:
        meta = read_checkpoint_meta(base)
        config.model.backend = meta.backend
        config.model.options = dict(meta.config)
        config.model.pretrained = base
        config.data.depth_encoding = meta.input_spec.depth_encoding
        config.data.depth_params = dict(meta.input_spec.depth_params)
        config.data.rgb_mean = list(meta.input_spec.rgb_mean)
        config.data.rgb_std = list(meta.input_spec.rgb_std)
        config.data.resolution = dict(meta.input_spec.resolution)
        for stage in config.stages:
            stage.backend = None
    config.validate()
    return config


@dataclass(frozen=True)
class JobResult:
    """The new checkpoint and, unless the job was stopped, the gate's figures for it."""

    checkpoint: Path
    gate: GateScores | None


def gate_candidate(
    job: dict[str, Any],
    dataset: Path,
    candidate: Path,
    serving: ServingLookup,
    device: str,
    progress: Progress,
) -> GateScores:
    """Score the candidate and the serving model on the held-out frames; the figures go into
    the candidate's metrics."""
    progress({'event': 'gate', 'stage': 'gate', 'candidate': str(candidate)})
    frames = int(job.get('gate_max_frames', DEFAULT_GATE_FRAMES)) or None
    scores = score_models(dataset, candidate, serving(), device=device, max_frames=frames)
    record_scores(candidate, scores)
    progress({'event': 'gated', 'stage': 'gate', 'gate': scores.to_dict()})
    return scores


def run_job(
    job: dict[str, Any],
    progress: Progress,
    should_stop: Callable[[], bool] = lambda: False,
    serving: ServingLookup = lambda: ServingModel(None, 'nobody asked the segmentation node'),
) -> JobResult:
    """Convert, train, then score the candidate against the serving model (``serving`` says
    which one that is, asked only once the candidate exists)."""
    base = base_checkpoint(job)
    dataset = make_dataset(job, base, progress)
    if should_stop():
        raise InterruptedError('cancelled before training')
    config = make_config(job, dataset, base)
    progress({'event': 'train', 'stage': 'train', 'recipe': config.recipe or job.get('recipe')})
    candidate = run_training(config, progress=progress, should_stop=should_stop)
    if should_stop():
        return JobResult(candidate, None)
    scores = gate_candidate(job, dataset, candidate, serving, config.device, progress)
    return JobResult(candidate, scores)


def ask_parent(events: Any, replies: Any, stop: Any, timeout_s: float = 60.0) -> ServingModel:
    """The serving model as the parent process (the trainer node) answers on ``replies``
    after a ``serving?`` event; unknown when it does not answer in time or the job stops."""
    events.put({'event': 'serving?', 'stage': 'gate'})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        try:
            answer = replies.get(timeout=0.2)
        except queue.Empty:
            continue
        return ServingModel(answer.get('checkpoint'), answer.get('error'))
    return ServingModel(None, 'the trainer node did not say which model is serving')


def ignore_interrupts() -> None:
    """SIGINT is for the trainer node, not for its job.

    A terminal's Ctrl-C reaches the whole process group: the job would take it as a
    KeyboardInterrupt in the middle of a step or of a checkpoint write. The node sets the
    job's stop flag instead, so the job ends its step, saves its last checkpoint and reports
    ``cancelled``. The node starts the job with SIGINT blocked (a Ctrl-C while the job is still
    importing stays pending); ignoring it here discards that one, then it is unblocked. Data
    loader workers the job starts inherit the ignored disposition.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def job_entry(
    job: dict[str, Any],
    events: Any,
    stop: Any,
    replies: Any = None,
    parent_pid: int | None = None,
) -> None:
    """Child-process entry point: report progress, the result or the failure on ``events``.

    With ``replies``, the parent is asked which model is serving before the gate. With
    ``parent_pid`` (the node that started it) the job dies with that process, and its
    conversion and data-loader workers with the job: a trainer node killed with SIGKILL
    leaves nothing training.
    """
    if parent_pid is not None:
        die_with_parent(parent_pid)
    ignore_interrupts()

    def serving() -> ServingModel:
        if replies is None:
            return ServingModel(None, 'no trainer node to ask which model is serving')
        return ask_parent(events, replies, stop)

    try:
        result = run_job(job, events.put, stop.is_set, serving)
    except InterruptedError as err:
        events.put({'event': 'cancelled', 'reason': str(err)})
    except Exception as err:  # the parent must always learn how the job ended
        events.put(
            {
                'event': 'failed',
                'error': f'{type(err).__name__}: {err}',
                'traceback': traceback.format_exc(limit=5),
            }
        )
    else:
        if stop.is_set() or result.gate is None:
            events.put({'event': 'cancelled', 'checkpoint': str(result.checkpoint)})
        else:
            events.put(
                {
                    'event': 'finished',
                    'checkpoint': str(result.checkpoint),
                    'gate': result.gate.to_dict(),
                }
            )
