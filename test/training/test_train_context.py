"""The seams of a training run: its data and context built once, a stage's plan and parts, and
the one error a run without validation is allowed to meet."""

from __future__ import annotations

import json

import pytest
import torch
import train_fixtures as tf

from rgbd_seg_ros.backends.checkpoint import load_checkpoint
from rgbd_seg_ros.errors import ConfigError, DatasetError, EmptySplitError
from rgbd_seg_ros.training import checkpointing as ck
from rgbd_seg_ros.training.config import load_config
from rgbd_seg_ros.training.context import build_run_context, plan_stage
from rgbd_seg_ros.training.distributed import DistContext
from rgbd_seg_ros.training.events import RunEvents
from rgbd_seg_ros.training.run_data import fixed_input_size, load_run_data
from rgbd_seg_ros.training.stage_parts import build_stage_parts
from rgbd_seg_ros.training.trainer import run_training


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tf.write_dataset(tmp_path_factory.mktemp('ctx_data') / 'ds', n_train=8, n_val=4)


@pytest.fixture(scope='module')
def no_val_dataset(tmp_path_factory):
    return tf.write_dataset(tmp_path_factory.mktemp('ctx_noval') / 'ds', n_train=8, n_val=0)


def _config(root, out, **extra):
    return load_config('tiny_cpu', tf.tiny_overrides(root, out, steps=3, **extra))


def test_run_data_holds_both_splits_and_class_weights(dataset, tmp_path):
    notes = []
    data = load_run_data(
        _config(dataset, tmp_path, **{'data.class_weighting': 'median_frequency'}),
        DistContext(),
        notes.append,
    )
    assert len(data.train_set) == 8 and data.val_set is not None and len(data.val_set) == 4
    assert data.num_classes == len(tf.CLASS_NAMES) and data.meta.class_names == tf.CLASS_NAMES
    assert data.ignore_index == 255 and data.fixed_hw is None
    assert data.class_weights.shape == (len(tf.CLASS_NAMES),)
    assert bool((data.class_weights > 0).all())
    assert notes == []
    plain = load_run_data(_config(dataset, tmp_path), DistContext(), notes.append)
    assert plain.class_weights is None
    assert fixed_input_size({'policy': 'fixed', 'height': 24, 'width': 32}) == (24, 32)
    assert fixed_input_size({'policy': 'native'}) is None and fixed_input_size(None) is None


def test_empty_validation_split_is_noted_and_skipped(no_val_dataset, tmp_path):
    notes = []
    data = load_run_data(_config(no_val_dataset, tmp_path), DistContext(), notes.append)
    assert data.val_set is None and len(data.train_set) == 8
    assert len(notes) == 1 and 'no validation' in notes[0] and "'val'" in notes[0]


def test_other_dataset_problems_are_raised(dataset, no_val_dataset, tmp_path):
    # an empty training split is not the validation split: the run cannot go on
    with pytest.raises(EmptySplitError, match="split 'val'"):
        load_run_data(
            _config(no_val_dataset, tmp_path, **{'data.train_split': 'val'}),
            DistContext(),
            print,
        )
    assert issubclass(EmptySplitError, DatasetError)  # callers catching DatasetError still do
    with pytest.raises(DatasetError, match='not a dataset'):
        load_run_data(_config(tmp_path / 'missing', tmp_path), DistContext(), print)
    with pytest.raises(ConfigError, match=r'data\.root'):
        load_run_data(_config('', tmp_path), DistContext(), print)


def test_run_without_validation_keeps_the_last_weights(no_val_dataset, tmp_path, capsys):
    path = run_training(_config(no_val_dataset, tmp_path / 'run'))
    stage_dir = tmp_path / 'run' / 'train'
    assert path == stage_dir / ck.LAST_FILE
    assert not (stage_dir / ck.BEST_FILE).exists()
    assert json.loads((stage_dir / 'done.json').read_text())['steps'] == 3
    summary = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert summary['result'] == str(path) and not any(k.startswith('val_') for k in summary)
    assert 'no validation' in capsys.readouterr().err


def test_run_context_settles_the_run_before_any_stage(dataset, tmp_path):
    cfg = _config(dataset, tmp_path, precision='bf16', channels_last='true')
    events = RunEvents()
    run = build_run_context(cfg, DistContext(), events, resume=False)
    assert run.config is cfg and run.events is events and run.out_dir == tmp_path
    assert run.data.val_set is not None and not run.resume
    # CPU: autocast and channels_last are CUDA-only
    assert run.precision == 'fp32' and run.channels_last is False
    # the checkpoint writer carries the dataset's classes and the stage into the metadata
    model = tf.TinyNet(len(tf.CLASS_NAMES), tf.TinyConfig())
    path = run.checkpoints.save(tmp_path / 'w.safetensors', model, tf.TINY, 'demo', 7, {'x': 1})
    meta, state = load_checkpoint(path, check_backend=False)
    assert meta.backend == tf.TINY and meta.class_names == tf.CLASS_NAMES
    assert meta.provenance['stage'] == 'demo' and meta.provenance['step'] == 7
    assert meta.metrics == {'x': 1} and set(state) == set(model.state_dict())
    # only rank 0 writes
    other = build_run_context(cfg, DistContext(rank=1, world_size=1), events, resume=False)
    other.checkpoints.save(tmp_path / 'rank1.safetensors', model, tf.TINY, 'demo', 7, {})
    assert not (tmp_path / 'rank1.safetensors').exists()


def test_stage_plan_merges_the_run_defaults(dataset, tmp_path):
    stages = (
        '[{name: a, steps: 2, batch_size: 2}, '
        '{name: b, steps: 3, batch_size: 2, optim: {lr: 0.01}, loss: {ohem: true}, '
        'freeze: [encoder_rgb], frozen_bn: [encoder_depth], backend_options: {width: 8}}]'
    )
    cfg = _config(dataset, tmp_path, stages=stages, **{'data.depth_encoding': 'jet'})
    a, b = plan_stage(cfg, 0, tmp_path), plan_stage(cfg, 1, tmp_path)
    assert (a.index, a.name, a.dir, a.steps) == (0, 'a', tmp_path / 'a', 2)
    assert b.dir == tmp_path / 'b' and b.run_dir == tmp_path
    assert a.optim.lr == cfg.optim.lr and b.optim.lr == 0.01
    assert not a.loss.ohem and b.loss.ohem
    assert b.freeze == ['encoder_rgb'] and b.frozen_bn == ['encoder_depth'] and a.freeze == []
    assert a.backend == b.backend == tf.TINY
    assert a.options == {'depth_channels': 3} and b.options == {'width': 8, 'depth_channels': 3}
    bad = _config(
        dataset,
        tmp_path,
        stages='[{name: a, steps: 1, batch_size: 2, backend_options: {depth_channels: 1}}]',
        **{'data.depth_encoding': 'jet'},
    )
    with pytest.raises(ConfigError, match='depth_channels=1'):
        plan_stage(bad, 0, tmp_path)


def test_stage_parts_follow_the_plan(dataset, tmp_path):
    stages = '[{name: a, steps: 2, batch_size: 2, freeze: [encoder_rgb]}]'
    cfg = _config(dataset, tmp_path, stages=stages, **{'data.class_weighting': 'median_frequency'})
    run = build_run_context(cfg, DistContext(), RunEvents(), resume=False)
    parts = build_stage_parts(run, plan_stage(cfg, 0, tmp_path))
    assert parts.model is parts.module  # one process: no DDP wrapper
    frozen = {n for n, p in parts.module.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith('encoder_rgb.') for n in frozen)
    optimised = {id(p) for g in parts.optimizer.param_groups for p in g['params']}
    assert not any(id(p) in optimised for n, p in parts.module.named_parameters() if n in frozen)
    assert torch.equal(parts.criterion.class_weights, run.data.class_weights)
    assert parts.criterion.ignore_index == 255
    # the same plan builds the same initial weights (the run's seed)
    again = build_stage_parts(run, plan_stage(cfg, 0, tmp_path))
    assert tf.state_allclose(parts.module.state_dict(), again.module.state_dict(), atol=0.0)
    nothing = _config(dataset, tmp_path, stages='[{name: a, steps: 1, freeze: [no_such]}]')
    with pytest.raises(ConfigError, match='matched no parameter'):
        build_stage_parts(run, plan_stage(nothing, 0, tmp_path))


def test_events_speak_on_rank_zero_only(capsys):
    seen, polls = [], []

    def stop() -> bool:
        polls.append(1)
        return True

    main = RunEvents(True, seen.append, stop)
    main.emit({'event': 'step'})
    main.note('hello')
    assert seen == [{'event': 'step'}] and '[train] hello' in capsys.readouterr().err
    other = RunEvents(False, seen.append, stop)
    other.emit({'event': 'step'})
    other.note('quiet')
    assert len(seen) == 1 and capsys.readouterr().err == ''
    # every rank polls its caller; the ranks agree through a collective in the loop
    assert main.stop_requested() and other.stop_requested() and len(polls) == 2
    assert RunEvents().stop_requested() is False
