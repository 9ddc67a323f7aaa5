"""The trainer node's job, without ROS: how it ends is always reported on the queue."""

from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'integration'))

from test_trainer_node import TOPICS, write_recording

from rgbd_seg_ros.data.layout import DatasetReader
from rgbd_seg_ros.training.job import job_entry


def job(tmp_path: Path, recording: Path) -> dict:
    return {
        'recordings': [str(recording)],
        'topics': {
            'rgb': TOPICS['rgb'],
            'depth': TOPICS['depth'],
            'info': TOPICS['info'],
            'label': TOPICS['label'],
        },
        'label_source': 'topic',
        'base_checkpoint': '',
        'recipe': 'tiny_cpu',
        'overrides': ['stages.0.steps=2', 'data.num_workers=0', 'eval.every_steps=0'],
        'output_dir': str(tmp_path / 'run'),
    }


def events_of(spec: dict, stop: threading.Event) -> list[dict]:
    events: queue.Queue = queue.Queue()
    job_entry(spec, events, stop)
    out = []
    while not events.empty():
        out.append(events.get())
    return out


def test_cancel_before_training_reports_cancelled(tmp_path):
    recording = tmp_path / 'rec'
    write_recording(recording, frames=4)
    stop = threading.Event()
    stop.set()
    events = events_of(job(tmp_path, recording), stop)
    assert [e['event'] for e in events][-1] == 'cancelled'
    assert (tmp_path / 'run' / 'dataset' / 'dataset.yaml').is_file()  # conversion kept


def test_failure_is_reported_not_raised(tmp_path):
    events = events_of(job(tmp_path, tmp_path / 'missing'), threading.Event())
    assert events[-1]['event'] == 'failed'
    assert 'missing' in events[-1]['error']


def test_conversion_progress_counts_the_frames_written(tmp_path):
    """The 'converted' event carries the number of frames the conversion wrote (was None)."""
    recording = tmp_path / 'rec'
    write_recording(recording, frames=5)
    stop = threading.Event()
    stop.set()
    events = events_of(job(tmp_path, recording), stop)
    converted = [e for e in events if e['event'] == 'converted']
    dataset = DatasetReader(tmp_path / 'run' / 'dataset')
    assert converted == [{'event': 'converted', 'stage': 'convert', 'frames': 5}]
    assert len(dataset.frames()) == 5


def test_pseudo_labels_come_from_the_base_checkpoint(tmp_path):
    """label_source 'pseudo': the job injects a labeller built from the base checkpoint."""
    from rgbd_seg_ros.backends.checkpoint import read_checkpoint_meta
    from rgbd_seg_ros.paths import default_model

    model = default_model()
    if model is None:
        pytest.skip('no embedded default model')
    recording = tmp_path / 'rec'
    write_recording(recording, frames=3)
    spec = job(tmp_path, recording)
    spec.update(label_source='pseudo', base_checkpoint=str(model), pseudo_confidence=0.0)
    stop = threading.Event()
    stop.set()
    events = events_of(spec, stop)
    assert [e['frames'] for e in events if e['event'] == 'converted'] == [3]
    dataset = DatasetReader(tmp_path / 'run' / 'dataset')
    names = read_checkpoint_meta(model).class_names
    assert dataset.meta.class_names == names
    for record in dataset.frames():
        sample = dataset.load(record.frame_id)
        assert sample.confidence is not None and sample.confidence.shape == (48, 64)
        assert sample.labels.shape == (48, 64) and int(sample.labels.max()) < len(names)


def test_an_empty_label_topic_is_detected(tmp_path):
    """label_source 'topic' with label_topic '' (the node's default): the recording's one
    label topic is found by name and encoding, and its labels are converted."""
    recording = tmp_path / 'rec'
    write_recording(recording, frames=3)
    spec = job(tmp_path, recording)
    spec['topics']['label'] = ''
    stop = threading.Event()
    stop.set()
    events = events_of(spec, stop)
    assert [e['frames'] for e in events if e['event'] == 'converted'] == [3]
    dataset = DatasetReader(tmp_path / 'run' / 'dataset')
    assert all(dataset.has_labels(r.frame_id) for r in dataset.frames())
    report = json.loads((tmp_path / 'run' / 'dataset' / 'conversion_report.json').read_text())
    assert report['recordings'][0]['topics']['label'] == TOPICS['label']
