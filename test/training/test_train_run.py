"""End-to-end training on a generated dataset: learning, exact resume, stop, outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import train_fixtures as tf

from rgbd_seg_ros.backends.checkpoint import load_checkpoint
from rgbd_seg_ros.training import checkpointing as ck
from rgbd_seg_ros.training.config import load_config
from rgbd_seg_ros.training.context import plan_stage
from rgbd_seg_ros.training.distributed import DistContext
from rgbd_seg_ros.training.evaluate import evaluate
from rgbd_seg_ros.training.model_init import build_stage_model
from rgbd_seg_ros.training.run_data import load_run_data
from rgbd_seg_ros.training.trainer import run_training


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tf.write_dataset(tmp_path_factory.mktemp('train_data') / 'ds')


def _initial_miou(cfg) -> float:
    """mIoU of the first stage's freshly built model: the seams the trainer itself uses."""
    data = load_run_data(cfg, DistContext(), note=print)
    model = build_stage_model(
        cfg, plan_stage(cfg, 0, Path(cfg.output_dir)), data.num_classes, print
    )
    return evaluate(model, data.val_set, DistContext()).miou


@pytest.mark.slow
def test_training_learns(dataset, tmp_path):
    cfg = load_config(
        'tiny_cpu',
        tf.tiny_overrides(
            dataset,
            tmp_path / 'run',
            steps=60,
            **{
                'eval.every_steps': 30,
                'eval.multiscale_at_end': 'true',
                'eval.scales': '[0.75, 1.0]',
                'log_every': 10,
            },
        ),
    )
    start = _initial_miou(cfg)
    events = []
    path = run_training(cfg, progress=events.append)
    assert path == tmp_path / 'run' / 'train' / 'best.safetensors'
    meta, _ = load_checkpoint(path, check_backend=False)
    final = meta.metrics['val_miou']
    assert final > start + 0.3, (start, final)
    assert final > 0.5
    # checkpoint metadata: backend, classes and palette from dataset.yaml, input spec, provenance
    assert meta.backend == tf.TINY and meta.class_names == tf.CLASS_NAMES
    assert meta.palette[3] == tf.COLOURS[3]
    assert meta.input_spec.depth_encoding == 'metric'
    assert meta.input_spec.depth_params == {'max_depth_m': 5.0}
    assert meta.provenance['stage'] == 'train' and meta.provenance['dataset'].endswith('ds')
    assert 'git_commit' in meta.provenance and meta.provenance['train_config']['seed'] == 0
    assert 'val_msflip_miou' in meta.metrics
    # progress events, CSV log, plot, resolved config, summary
    steps = [e for e in events if e['event'] == 'step']
    assert steps[-1]['step'] == 60 and steps[-1]['total_steps'] == 60
    assert {'stage', 'loss', 'val_miou'} <= set(steps[-1])
    assert events[-1]['event'] == 'done'
    with open(tmp_path / 'run' / 'train' / 'log.csv') as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r['step']) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert float(rows[-1]['loss']) < float(rows[0]['loss'])
    assert (tmp_path / 'run' / 'train' / 'curves.png').stat().st_size > 1000
    assert (tmp_path / 'run' / 'config.yaml').is_file()
    summary = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert summary['val_msflip_miou'] > 0.5
    state_file = ck.load_train_state(tmp_path / 'run' / 'train' / ck.STATE_FILE)
    assert state_file['step'] == 60


@pytest.mark.slow
def test_resume_is_exact(dataset, tmp_path):
    extra = {
        'model.options': '{dropout: 0.2}',
        'augment.rotation_deg': 10.0,
        'augment.brightness': 20.0,
        'data.class_weighting': 'median_frequency',
    }
    full = load_config('tiny_cpu', tf.tiny_overrides(dataset, tmp_path / 'full', steps=8, **extra))
    run_training(full)
    half = load_config('tiny_cpu', tf.tiny_overrides(dataset, tmp_path / 'half', steps=8, **extra))
    calls = []

    def stop_after_four() -> bool:
        calls.append(1)
        return len(calls) >= 4

    stopped = run_training(half, should_stop=stop_after_four)
    assert stopped.name == 'last.safetensors'
    assert ck.load_train_state(tmp_path / 'half' / 'train' / ck.STATE_FILE)['step'] == 4
    assert not (tmp_path / 'half' / 'train' / 'done.json').exists()
    with pytest.raises(Exception, match='resume'):
        run_training(half)  # refuses to overwrite a run without resume
    # What a run killed mid-write leaves (up to a whole checkpoint each): the resume clears it.
    dead = _dead_pid()
    stage_dir = tmp_path / 'half' / 'train'
    left = [
        stage_dir / f'.last.safetensors.{dead}.0123abcd.tmp',
        stage_dir / f'.{ck.STATE_FILE}.{dead}.89abcdef.tmp',
        tmp_path / 'half' / f'.config.yaml.{dead}.00ff00ff.tmp',
    ]
    for path in left:
        path.write_bytes(b'\0' * 1000)
    run_training(half, resume=True)
    assert not [p for p in left if p.exists()]
    _, a = load_checkpoint(tmp_path / 'full' / 'train' / 'last.safetensors', check_backend=False)
    _, b = load_checkpoint(tmp_path / 'half' / 'train' / 'last.safetensors', check_backend=False)
    assert tf.state_allclose(a, b, atol=1e-6)
    # and the resumed run differs from an unrelated seed (the comparison is meaningful)
    other = load_config(
        'tiny_cpu', tf.tiny_overrides(dataset, tmp_path / 'other', steps=8, seed=1, **extra)
    )
    run_training(other)
    _, c = load_checkpoint(tmp_path / 'other' / 'train' / 'last.safetensors', check_backend=False)
    assert not tf.state_allclose(a, c, atol=1e-6)


@pytest.mark.slow
def test_stages_init_from_freeze_and_continue(dataset, tmp_path, capsys):
    stages = (
        '[{name: a, steps: 3, batch_size: 2}, '
        '{name: b, steps: 3, batch_size: 2, freeze: [encoder_rgb], optim: {lr: 0.01}}, '
        '{name: c, steps: 2, batch_size: 2, freeze: [encoder_depth], '
        "init_from: [{stage: b, map: {'encoder_depth.': 'encoder_depth.'}}]}, "
        '{name: d, steps: 1, batch_size: 2, backend_options: {dropout: 0.0}}]'
    )
    cfg = load_config('tiny_cpu', tf.tiny_overrides(dataset, tmp_path / 'st', stages=stages))
    run_training(cfg)
    w = {}
    for name in 'abcd':
        _, w[name] = load_checkpoint(
            tmp_path / 'st' / name / 'last.safetensors', check_backend=False
        )
    rgb = [k for k in w['a'] if k.startswith('encoder_rgb.')]
    depth = [k for k in w['a'] if k.startswith('encoder_depth.')]
    # b continued from a with encoder_rgb frozen: parameters and BN statistics unchanged
    assert all(torch.equal(w['a'][k], w['b'][k]) for k in rgb)
    assert not torch.equal(w['a']['classifier.weight'], w['b']['classifier.weight'])
    # c took only encoder_depth from b (then kept it frozen); encoder_rgb started afresh
    assert all(torch.equal(w['b'][k], w['c'][k]) for k in depth)
    assert not torch.equal(w['c']['encoder_rgb.0.0.weight'], w['b']['encoder_rgb.0.0.weight'])
    # d has other backend options: it does not continue from c
    err = capsys.readouterr().err
    assert 'b: initialised from' in err and 'c: initialised from' in err
    assert 'd: initialised from' not in err


def _dead_pid() -> int:
    """The pid of a process that has exited (as a killed writer's has)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)
