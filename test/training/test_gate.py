"""The quality gate before a hot-swap: the decision, and the scores it decides on."""

from __future__ import annotations

import math

import pytest
import train_fixtures as tf

from rgbd_seg_ros.backends.checkpoint import load_checkpoint
from rgbd_seg_ros.data.layout import DatasetReader
from rgbd_seg_ros.errors import EmptySplitError
from rgbd_seg_ros.inference.engine import Engine
from rgbd_seg_ros.training.config import load_config
from rgbd_seg_ros.training.gate import GateScores, ServingModel, decide
from rgbd_seg_ros.training.gate_scoring import record_scores, score_models
from rgbd_seg_ros.training.pipeline_eval import evaluate_engine, held_out_split, labelled_records
from rgbd_seg_ros.training.trainer import run_training


def scores(candidate: float | None, serving_miou: float | None, **kw) -> GateScores:
    base = {
        'split': 'test',
        'frames': 7,
        'candidate': '/c.safetensors',
        'candidate_miou': candidate,
        'serving': '/s.safetensors',
        'serving_miou': serving_miou,
    }
    return GateScores(**{**base, **kw})


def test_swaps_only_on_an_improvement_beyond_the_margin():
    better = decide(scores(0.62, 0.60))
    assert better.swap and '62.00' in better.reason and '60.00' in better.reason
    assert 'on 7 held-out frame(s) [test]' in better.reason
    equal = decide(scores(0.60, 0.60))
    assert not equal.swap and equal.reason.startswith('kept the serving model')
    worse = decide(scores(0.188, 0.984))
    assert not worse.swap and '-79.60 points' in worse.reason
    assert not decide(scores(0.62, 0.60), margin=0.05).swap
    assert decide(scores(0.70, 0.60), margin=0.05).swap


def test_force_swaps_a_worse_candidate_and_says_so():
    forced = decide(scores(0.188, 0.984), force=True)
    assert forced.swap and 'forced' in forced.reason and '18.80' in forced.reason


def test_unscored_models():
    nothing_held_out = decide(scores(None, 0.5))
    assert not nothing_held_out.swap and 'scored nothing' in nothing_held_out.reason
    no_model = decide(scores(0.3, None, serving=''))
    assert no_model.swap and 'no model was serving' in no_model.reason
    broken = decide(scores(0.3, None, serving_error='CheckpointError: truncated'))
    assert not broken.swap and 'truncated' in broken.reason and 'force_swap' in broken.reason
    unknown = decide(scores(0.3, None, serving=None, serving_error='target not available'))
    assert not unknown.swap and 'target not available' in unknown.reason


def test_scores_travel_as_plain_dicts():
    s = scores(0.5, 0.25, serving_error=None)
    assert GateScores.from_dict(s.to_dict()) == s
    assert s.to_dict()['miou_over'].startswith('classes present in the ground truth')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tf.write_dataset(tmp_path_factory.mktemp('gate') / 'ds', n_train=6, n_val=3)


@pytest.fixture(scope='module')
def two_models(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp('gate_runs')
    trained = run_training(load_config('tiny_cpu', tf.tiny_overrides(dataset, out / 'a', steps=6)))
    untrained = run_training(
        load_config('tiny_cpu', tf.tiny_overrides(dataset, out / 'b', steps=1))
    )
    return trained, untrained


def test_held_out_prefers_test_then_val(dataset):
    reader = DatasetReader(dataset)
    assert held_out_split(reader) == 'val'  # this dataset has no test split
    assert len(labelled_records(reader, 'val')) == 3


def test_held_out_missing_is_an_error(tmp_path):
    root = tf.write_dataset(tmp_path / 'ds', n_train=2, n_val=0)
    with pytest.raises(EmptySplitError, match='nothing held out'):
        held_out_split(DatasetReader(root))


def test_score_models_uses_the_node_pipeline_and_records_both(two_models, dataset, tmp_path):
    candidate, serving = two_models
    result = score_models(dataset, candidate, ServingModel(str(serving)), max_frames=2)
    assert result.split == 'val' and result.frames == 2
    reader = DatasetReader(dataset)
    records = labelled_records(reader, 'val')
    records = [records[0], records[-1]]  # two frames evenly spread: the first and the last
    for path, figure in ((candidate, result.candidate_miou), (serving, result.serving_miou)):
        expected = evaluate_engine(Engine.from_checkpoint(path, device='cpu'), reader, records)
        assert math.isclose(figure, expected.miou)
    record_scores(candidate, result)
    meta, _ = load_checkpoint(candidate)  # still loads: digest rewritten with the metrics
    assert meta.metrics['gate'] == result.to_dict()
    assert 'val_miou' in meta.metrics  # the training figures stay


def test_a_serving_model_that_cannot_load_is_reported(two_models, dataset, tmp_path):
    candidate, _ = two_models
    broken = tmp_path / 'broken.safetensors'
    broken.write_bytes(b'not a checkpoint')
    result = score_models(dataset, candidate, ServingModel(str(broken)))
    assert result.serving_miou is None and 'CheckpointError' in result.serving_error
    assert result.candidate_miou is not None
    assert not decide(result).swap
    unknown = score_models(dataset, candidate, ServingModel(None, 'target not available'))
    assert unknown.serving_error == 'target not available'
