"""A fine-tuning job as the trainer node runs it: recordings -> dataset -> training.

It runs in a child process (``job_entry``) so the ROS node stays responsive. Everything it
needs arrives as a plain dict (picklable, no ROS types) and everything it reports goes back as
dicts on a queue. When a base checkpoint is given, the recipe's backend, its options and the
input spec are taken from that checkpoint, so the fine-tuned model runs exactly like the one it
replaces; only the class list may change (from the recording's labels).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rgbd_seg_ros.backends.checkpoint import read_checkpoint_meta
from rgbd_seg_ros.core.parent_death import die_with_parent
from rgbd_seg_ros.data.convert import ConvertOptions, convert
from rgbd_seg_ros.errors import ConfigError
from rgbd_seg_ros.inference.labeller import CheckpointLabeller
from rgbd_seg_ros.paths import default_model
from rgbd_seg_ros.training.config import TrainConfig, load_config
from rgbd_seg_ros.training.trainer import run_training

Progress = Callable[[dict[str, Any]], None]


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


def run_job(
    job: dict[str, Any], progress: Progress, should_stop: Callable[[], bool] = lambda: False
) -> Path:
    """Convert, then train; returns the new checkpoint."""
    base = base_checkpoint(job)
    dataset = make_dataset(job, base, progress)
    if should_stop():
        raise InterruptedError('cancelled before training')
    config = make_config(job, dataset, base)
    progress({'event': 'train', 'stage': 'train', 'recipe': config.recipe or job.get('recipe')})
    return run_training(config, progress=progress, should_stop=should_stop)


def job_entry(job: dict[str, Any], events: Any, stop: Any, parent_pid: int | None = None) -> None:
    """Child-process entry point: report progress, the result or the failure on ``events``.

    With ``parent_pid`` (the node that started it) the job dies with that process, and its
    conversion and data-loader workers with the job: a trainer node killed with SIGKILL
    leaves nothing training.
    """
    if parent_pid is not None:
        die_with_parent(parent_pid)
    try:
        path = run_job(job, events.put, stop.is_set)
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
        kind = 'cancelled' if stop.is_set() else 'finished'
        events.put({'event': kind, 'checkpoint': str(path)})
