"""config/train/ann.yaml: the ANN paper's Cityscapes recipe, and a few steps of it on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import train_fixtures as tf

from rgbd_seg_ros.backends.checkpoint import build_from_checkpoint
from rgbd_seg_ros.training.config import load_config
from rgbd_seg_ros.training.trainer import run_training


def test_ann_recipe_says_what_the_paper_says() -> None:
    cfg = load_config('ann')
    assert cfg.model.backend == 'ann'
    assert cfg.model.options == {'encoder': 'resnet101', 'output_stride': 8, 'aux_weight': 0.4}
    o, s, loss, a = cfg.optim, cfg.schedule, cfg.loss, cfg.augment
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.encoder_lr) == (
        'sgd',
        0.01,
        0.9,
        5e-4,
        None,
    )
    assert not o.no_decay_norm_bias  # the reference code decays every parameter
    assert (s.name, s.power, s.warmup_steps) == ('poly', 0.9, 0)
    assert (loss.ohem, loss.ohem_thresh, loss.ohem_min_kept) == (True, 0.7, 100000)
    assert loss.aux and loss.aux_resize == 'logits' and loss.aux_weights is None
    assert [(st.steps, st.batch_size) for st in cfg.stages] == [(60000, 8)]
    assert (a.crop, a.scale, a.hflip, a.brightness, a.rotation_deg) == (
        [769, 769],
        [0.5, 2.0],
        True,
        10.0,
        0.0,
    )


@pytest.mark.slow
def test_ann_recipe_runs(tmp_path: Path) -> None:
    root = tf.write_dataset(tmp_path / 'ds', n_train=8, n_val=2)
    options = {
        'encoder': 'resnet18',
        'context_channels': 32,
        'key_channels': 16,
        'value_channels': 16,
        'aux_channels': 16,
    }
    values: dict[str, Any] = {
        'model.options': options,
        'data.root': str(root),
        'data.num_workers': 0,
        'output_dir': str(tmp_path / 'run'),
        'device': 'cpu',
        'progress_bar': False,
        'log_every': 1,
        'augment.crop': [40, 56],
        'eval.multiscale_at_end': False,
        'stages.0.steps': 3,
        'stages.0.batch_size': 2,
    }
    cfg = load_config('ann', [f'{k}={json.dumps(v)}' for k, v in values.items()])
    events: list[dict[str, Any]] = []
    path = run_training(cfg, progress=events.append)
    rows = [e for e in events if e.get('event') == 'step']
    assert [r['step'] for r in rows] == [1, 2, 3]
    assert all({'loss_main', 'loss_aux0'} <= set(r) for r in rows)
    for r in rows:  # total = OHEM main + 0.4 x Stage4
        assert r['loss'] == pytest.approx(r['loss_main'] + 0.4 * r['loss_aux0'], rel=1e-5)
    model, meta = build_from_checkpoint(path)
    assert meta.backend == 'ann' and not model.uses_depth()
